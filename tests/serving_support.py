"""Helpers of the serving tests: real uvicorn servers in subprocesses, bundles, snapshots."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

API_KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running ``taktline serve`` subprocess."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, **kwargs)


@contextmanager
def run_server(
    policies: dict[str, str],
    tmp: Path,
    env: dict[str, str] | None = None,
    shadow: tuple[str, ...] = (),
    ready: bool = True,
) -> Iterator[Server]:
    """Start ``python -m taktline.cli_serve serve`` on a free 127.0.0.1 port; stop it after."""
    port = free_port()
    cmd = [sys.executable, "-m", "taktline.cli_serve", "serve", "--port", str(port)]
    for name, ref in policies.items():
        cmd += ["--policy", f"{name}={ref}"]
    for name in shadow:
        cmd += ["--shadow", name]
    full_env = {
        **os.environ,
        "TAKTLINE_ENV": "production",
        "TAKTLINE_API_KEYS": f'["{API_KEY}"]',
        "TAKTLINE_CACHE_DIR": str(tmp / "cache"),
        "TAKTLINE_POLL_INTERVAL_S": "0",
        # generous: a loaded CI machine must not turn a policy answer into a timeout fallback
        # (the production default is 0.25 s); tests of the timeout set their own
        "TAKTLINE_DECISION_TIMEOUT_S": "10",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    log = tmp / f"server-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        wait_until_up(server, ready=ready)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until_up(server: Server, ready: bool = True, timeout_s: float = 90.0) -> None:
    """Wait for ``/healthz`` (and ``/readyz`` when ``ready``); fail with the server's log."""
    deadline = time.monotonic() + timeout_s
    path = "/readyz" if ready else "/healthz"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited: {server.log.read_text()[-3000:]}")
        try:
            if httpx.get(server.url + path, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not up in {timeout_s} s: {server.log.read_text()[-3000:]}")


def dispatch_snapshots(line: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` snapshots of ``line`` at successive dispatch decisions (SPT drives the twin), as
    the JSON a client posts (``model_dump(mode="json")``)."""
    from taktline.agents.rules import get_rule
    from taktline.envs.spec import load_spec
    from taktline.envs.twin import Twin

    twin = Twin(load_spec(line), seed=seed)
    rule = get_rule("SPT")
    out: list[dict[str, Any]] = []
    while len(out) < n:
        req = twin.run_until_decision()
        if req is None:
            break
        if req.kind == "dispatch":
            out.append(twin.snapshot().model_dump(mode="json"))
            last = twin.machines[req.machine].last_family
            twin.dispatch(rule.dispatch(req.candidates, twin.now, last))
        else:
            twin.release(req.pool_size)
    return out


def crowded_snapshot(snapshot: dict[str, Any], n_jobs: int) -> dict[str, Any]:
    """``snapshot`` with ``n_jobs`` waiting at the deciding station (copies of its first job)."""
    import copy

    snap = copy.deepcopy(snapshot)
    station = next(s for s in snap["stations"] if s["name"] == snap["decision"]["station"])
    first = station["queue"][0]
    station["queue"] = [
        {**first, "id": f"J-{9000 + k}", "processing_time": 1.0 + k} for k in range(n_jobs)
    ]
    return snap


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of sample ``name{labels...}`` in a Prometheus exposition (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def make_bundle(
    path: Path,
    line: str = "bodyshop",
    max_queue: int = 6,
    seed: int = 0,
    version: str | None = None,
) -> Path:
    """Save a small untrained ``LineDispatch-v0`` MLP bundle for ``line`` into ``path``."""
    import torch

    from taktline.agents.bundle import PolicyBundle
    from taktline.agents.networks import MaskedMLP
    from taktline.envs.encoding import LINE_DISPATCH_ID, make_codec
    from taktline.envs.spec import load_spec

    kwargs = {"line": line, "max_queue": max_queue}
    codec = make_codec(LINE_DISPATCH_ID, kwargs)
    obs_dim = int(codec.observation_space.shape[0])
    n = int(codec.action_space.n)
    torch.manual_seed(seed)
    net_kwargs = {"obs_dim": obs_dim, "n_actions": n, "hidden": [32, 32]}
    bundle = PolicyBundle(
        env_id=LINE_DISPATCH_ID,
        env_kwargs=kwargs,
        spec_hash=load_spec(line).spec_hash(),
        observation_space=codec.observation_space,
        action_space=codec.action_space,
        network=MaskedMLP(**net_kwargs),  # type: ignore[arg-type]
        network_spec={"class": "mlp", "kwargs": net_kwargs},
        lineage={"seed": seed, "backend": "test"},
        version=version,
    )
    return bundle.save(path)


def log_bundle_model(bundle_dir: Path, model_name: str, experiment_id: str) -> str:
    """Log ``bundle_dir`` the way training does (a pyfunc model whose artifacts hold the bundle),
    register it as a new version of ``model_name`` and return that version."""
    import mlflow
    import numpy as np

    from taktline.agents.bundle import PolicyBundle
    from taktline.training.tracking import log_policy_model, register

    bundle = PolicyBundle.load(bundle_dir)
    obs = np.zeros(bundle.observation_space.shape, dtype=np.float32)
    mask = np.ones(int(bundle.action_space.n), dtype=bool)
    with mlflow.start_run(experiment_id=experiment_id):
        uri = log_policy_model(bundle_dir, obs, mask)
    return register(uri, model_name, alias=None)
