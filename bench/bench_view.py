"""Does the plant view keep up? A body-shop replay at 100x real time in headless Chromium.

Starts ``taktline view bodyshop -p FIFO -p SAME --seed 3`` (a real uvicorn, auth off as in
``TAKTLINE_ENV=local``), opens ``/ui`` in Chromium (Selenium), plays at ``--speed`` for
``--seconds`` and samples once a second: the simulated time the page shows against the time
it should show (wall time x speed), the frames drawn and received per second, and the server
process's CPU. The named peer, measured in the same run, is the bare cost of the frames: the
same replay's frames computed in this process without a server, browser or pacing.

``--screenshots DIR`` also saves the README's pictures: replay, live (decisions posted by a
twin in the loop during the run) and compare (a small ``taktline compare`` run first).

    .venv/bin/python bench/bench_view.py --seconds 60
    .venv/bin/python bench/bench_view.py --seconds 90 --screenshots docs/img
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

LINE, SEED, POLICIES = "bodyshop", 3, ("FIFO", "SAME")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "taktline.cli", "view", LINE, "--seed", str(SEED)]
    cmd += [x for p in POLICIES for x in ("-p", p)]
    cmd += ["--serve", "line=rule:SAME", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("taktline view did not start")


def browser(profile: str) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
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
    driver = shutil.which("chromedriver") or "chromedriver"
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def page_state(driver: Any) -> dict[str, float]:
    return dict(
        driver.execute_script(
            """const r = window.taktlineView.replay;
            return {shown: Number(document.querySelector('.clock').dataset.time),
                    paints: r.paints || 0, received: r.received, lag: r.lag};"""
        )
    )


def bare_frames_cpu_s(n_frames: int, frame_step: float) -> float:
    """The peer: CPU seconds to compute ``n_frames`` of the same replay in-process."""
    from taktline.envs.spec import load_spec
    from taktline.serving.ui_replay import Replay

    replay = Replay(load_spec(LINE), SEED, list(POLICIES), frame_step)
    start = time.process_time()
    for i in range(n_frames):
        json.dumps(replay.frames(i))  # the server serializes each frame it sends
    return time.process_time() - start


def post_decisions(url: str, n: int) -> int:
    """A twin in the loop of the served policy: ``n`` decisions asked of /decide and applied."""
    from taktline.envs.spec import load_spec
    from taktline.envs.twin import Twin

    twin = Twin(load_spec(LINE), SEED)
    done = 0
    with httpx.Client(base_url=url, timeout=30) as http:
        while done < n and twin.run_until_decision(480.0) is not None:
            if twin.pending is not None and twin.pending.kind == "release":
                twin.release(len(twin.pool))
                continue
            body = json.loads(twin.snapshot().model_dump_json())
            answer = http.post("/v1/policies/line/decide", json=body).json()
            twin.apply(answer["decision"])
            done += 1
            time.sleep(0.05)
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="wall time played")
    parser.add_argument("--speed", type=float, default=100.0, help="x real time")
    parser.add_argument("--screenshots", type=Path, help="save the README's pictures here")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="taktline-bench-view-"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TAKTLINE_")},
        "TAKTLINE_ENV": "local",
        "TAKTLINE_CACHE_DIR": str(tmp / "cache"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
    }
    if args.screenshots:  # a compare run for the compare mode's picture
        compare = ["compare", LINE, "--rules", "FIFO,SPT,SAME", "--lookahead", "none"]
        subprocess.run(
            [sys.executable, "-m", "taktline.cli", *compare, "--episodes", "3"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(port, env)
    proc = psutil.Process(server.pid)
    driver = browser(str(tmp / "profile"))
    try:
        driver.get(f"{url}/ui")
        time.sleep(2.0)  # the page loads and draws frame 0
        info = httpx.get(f"{url}/ui/api/info").json()["replay"]
        units_per_s = args.speed / info["unit_seconds"]
        driver.execute_script(f"document.getElementById('speed').value = '{args.speed:g}'")
        cpu0 = sum(proc.cpu_times()[:2])
        t0 = time.monotonic()
        driver.execute_script("document.getElementById('play').click()")
        samples = []
        while (elapsed := time.monotonic() - t0) < args.seconds:
            time.sleep(1.0)
            state = page_state(driver)
            elapsed = time.monotonic() - t0
            samples.append((elapsed, state))
        cpu = sum(proc.cpu_times()[:2]) - cpu0
        wall = time.monotonic() - t0
        driver.execute_script("window.taktlineView.pause()")
        last = samples[-1][1]
        behind = [e * units_per_s - s["shown"] for e, s in samples[2:]]
        frames_sent = last["received"]
        frame_step = info["frame_step"]
        peer = bare_frames_cpu_s(int(last["shown"] / frame_step) + 1, frame_step)
        print(f"line {LINE}, policies {', '.join(POLICIES)}, seed {SEED}, speed {args.speed:g}x")
        print(f"played {wall:.1f} s wall -> {last['shown']:.1f} {info['time_unit']} simulated")
        print(f"frames drawn: {last['paints'] / wall:.1f}/s; received: {frames_sent / wall:.1f}/s")
        print(
            f"behind schedule (sim {info['time_unit']}): max {max(behind):.3f},"
            f" last {behind[-1]:.3f} (one frame = {frame_step:.4f}; one second of wall time"
            f" = {units_per_s:.3f}); server-reported lag max {last['lag']:.3f} s"
        )
        print(f"server CPU: {cpu:.2f} s over {wall:.1f} s = {100 * cpu / wall:.1f}% of one core")
        print(
            f"peer (the same frames computed bare, in-process): {peer:.2f} s CPU;"
            f" the server spends {cpu / max(peer, 1e-9):.1f}x that"
        )
        if args.screenshots:
            out = args.screenshots
            out.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(out / "plant_view_replay.png"))
            driver.execute_script("document.getElementById('tab-live').click()")
            time.sleep(1.0)
            posted = post_decisions(url, 40)
            time.sleep(2.5)  # a metrics poll or two
            driver.save_screenshot(str(out / "plant_view_live.png"))
            driver.execute_script("document.getElementById('tab-compare').click()")
            deadline = time.monotonic() + 120  # the server imports MLflow on the first ask
            while time.monotonic() < deadline and not driver.execute_script(
                "return document.getElementById('compare-table')"
            ):
                time.sleep(0.5)
            driver.save_screenshot(str(out / "plant_view_compare.png"))
            print(f"screenshots in {out} ({posted} decisions posted for the live view)")
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        print(f"browser console errors: {len(severe)}")
    finally:
        driver.quit()
        server.terminate()
        server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
