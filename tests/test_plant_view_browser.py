"""The plant view in a real headless Chromium (Selenium), served by ``taktline view`` on a real
uvicorn: the diagram at a paused time is the twin's snapshot at that time, the replay advances,
the live mode shows a decision posted during the test, and the console stays clean.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make test`` installs them when it runs as
root); where they are missing the test skips and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving_support import API_KEY, AUTH, free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
LINE, SEED, POLICIES = "bodyshop", 3, ("FIFO", "SAME")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None or DRIVER is None,
        reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium "
        "chromium-driver; `make test` does it when run as root)",
    ),
]


@pytest.fixture(scope="module")
def view_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``taktline view bodyshop -p FIFO -p SAME --seed 3 --serve line=rule:SAME`` with auth on."""
    pytest.importorskip("selenium")
    tmp = tmp_path_factory.mktemp("view")
    port = free_port()
    cmd = [sys.executable, "-m", "taktline.cli", "view", LINE, "--seed", str(SEED)]
    cmd += [x for p in POLICIES for x in ("-p", p)]
    cmd += ["--serve", "line=rule:SAME", "--port", str(port)]
    env = {
        **os.environ,
        "TAKTLINE_ENV": "production",
        "TAKTLINE_API_KEYS": f'["{API_KEY}"]',
        "TAKTLINE_CACHE_DIR": str(tmp / "cache"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
    }
    log = tmp / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"taktline view did not start:\n{log.read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium with its console log readable."""
    import tempfile

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="taktline-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(DRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _until(what: Callable[[], Any], timeout_s: float = 30.0, message: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s: {message}")


def _panel_state(driver: Any, policy: str) -> tuple[float, dict[str, str]]:
    """The clock and the machine states one replay panel shows."""
    return tuple(  # type: ignore[return-value]
        driver.execute_script(
            """const p = document.querySelector(`.panel[data-policy="${arguments[0]}"]`);
            const states = {};
            for (const r of p.querySelectorAll("rect.machine"))
                states[r.dataset.machine] = r.dataset.state;
            return [Number(p.querySelector(".clock").dataset.time), states];""",
            policy,
        )
    )


def _severe(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _twin_states(policy: str, time_: float) -> dict[str, str]:
    from taktline.agents.rules import get_rule
    from taktline.envs.spec import load_spec
    from taktline.envs.twin import Twin

    twin = Twin(load_spec(LINE), SEED, get_rule(policy))
    twin.run_until_decision(time_)
    snap = twin.snapshot()
    assert snap.time == time_
    return {m.id: str(m.state) for s in snap.stations for m in s.machines}


def test_plant_view_replays_shows_the_twin_and_live_decisions(
    view_server: str, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(f"{view_server}/ui")
    # nothing without the key: the page asks for it, and the data routes refuse
    _until(lambda: driver.find_element(By.ID, "login").is_displayed(), 20, "key form")
    assert httpx.get(f"{view_server}/ui/api/info").status_code == 401
    driver.find_element(By.ID, "key").send_keys(API_KEY)
    driver.find_element(By.ID, "key-submit").click()
    _until(lambda: driver.find_elements(By.CSS_SELECTOR, ".panel[data-policy]"), 30, "panels")
    assert driver.execute_script("return sessionStorage.getItem('taktline.key')") == API_KEY

    # replay advances
    driver.execute_script("document.getElementById('speed').value = '1000'")
    driver.find_element(By.ID, "play").click()
    t1 = _until(lambda: _panel_state(driver, "FIFO")[0] > 0 and _panel_state(driver, "FIFO")[0])
    t2 = _until(lambda: _panel_state(driver, "FIFO")[0] > t1 and _panel_state(driver, "FIFO")[0])
    assert t2 > t1 > 0

    # paused, the diagram is the twin's snapshot at the time its clock shows
    driver.find_element(By.ID, "play").click()
    time.sleep(1.0)  # let a frame in flight land
    paused_at, shown = _panel_state(driver, "FIFO")
    time.sleep(1.0)
    assert _panel_state(driver, "FIFO")[0] == paused_at  # it stays paused
    for policy in POLICIES:
        at, states = _panel_state(driver, policy)
        assert at == paused_at  # side by side: the same moment
        assert states == _twin_states(policy, at), policy
    assert len(shown) == 10 and set(shown.values()) <= {"idle", "setup", "busy", "blocked", "down"}
    driver.save_screenshot(str(tmp_path / "replay.png"))

    # live: a decision posted now shows up with who served it
    driver.find_element(By.ID, "tab-live").click()
    _until(lambda: driver.find_element(By.ID, "live").is_displayed(), 10, "live tab")
    time.sleep(0.5)  # the live stream connects
    from taktline.envs.spec import load_spec
    from taktline.envs.twin import Twin

    twin = Twin(load_spec(LINE), SEED)
    twin.run_until_decision()
    body = json.loads(twin.snapshot().model_dump_json())
    answer = httpx.post(f"{view_server}/v1/policies/line/decide", json=body, headers=AUTH)
    assert answer.status_code == 200, answer.text
    job = answer.json()["decision"]["job"]
    row = _until(
        lambda: [
            r.text
            for r in driver.find_elements(By.CSS_SELECTOR, "#decisions tbody tr")
            if job in r.text
        ],
        20,
        "the posted decision in the live table",
    )[0]
    assert "line" in row and answer.json()["served_by"] in row
    _until(lambda: driver.find_elements(By.CSS_SELECTOR, "#live-svg rect.machine"), 10, "diagram")
    driver.save_screenshot(str(tmp_path / "live.png"))

    # compare: no evaluation run in this MLflow store, and the page says so
    driver.find_element(By.ID, "tab-compare").click()
    note = _until(lambda: driver.find_elements(By.ID, "compare-none"), 30, "compare note")[0]
    assert "no evaluate or compare run" in note.text
    shots = os.environ.get("TAKTLINE_VIEW_SCREENSHOTS")  # the README's pictures, on request
    if shots:
        for name in ("replay", "live"):
            shutil.copy(tmp_path / f"{name}.png", Path(shots) / f"plant_view_{name}.png")
    assert (tmp_path / "replay.png").stat().st_size > 10_000
    assert _severe(driver) == []
