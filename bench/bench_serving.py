"""Serving benchmark: taktline's API against ``mlflow models serve`` of the same model, same run.

Measures on localhost, for one small dispatching policy (bodyshop, MLP 64x64):

* the bare policy forward pass in-process (``bundle.act``, in torch and on the frozen numpy
  kernel that serving uses), single and batch of 64, and the full in-process
  ``encode -> act -> decode`` of one snapshot;
* ``POST /decide`` (one snapshot) and ``POST /act`` (batch of 64) of ``taktline serve``
  (uvicorn, auth on): p50/p99 latency with one client, requests/s with concurrent clients;
  and the same through the FastAPI routes alone (``TAKTLINE_FAST_PATH=false``), which is what
  the fast path in front of them buys;
* ``mlflow models serve --env-manager local`` of the same bundle logged as training logs it
  (``training.tracking.log_policy_model``): one row and 64 rows per request, same clients;
* the same for the network logged with MLflow's own torch flavour (``mlflow.pytorch``), the
  usual way to serve a torch model with MLflow (logits out: no masks, no decisions).

An empty ASGI app on the same uvicorn is measured too: the most any Python server can do here.

Targets: p50 < 2 ms for a single ``/decide``; >= 5x the throughput of ``mlflow models serve``.

    python bench/bench_serving.py [--seconds 5] [--clients 4] [--policy-execution inline]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import mlflow
import numpy as np

from taktline.envs.snapshot import LineSnapshot, pending_dispatch

LINE = "bodyshop"
FLOOR_APP = """
import sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    body = b'{"ok":true}'
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""
"""An ASGI app that reads the body and answers a constant: what any Python server here costs."""
KEY = "bench-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_bundle(path: Path) -> Path:
    import torch

    from taktline.agents.bundle import PolicyBundle, make_lineage
    from taktline.agents.networks import MaskedMLP
    from taktline.envs.encoding import LINE_DISPATCH_ID, make_codec
    from taktline.envs.spec import load_spec

    kwargs = {"line": LINE, "max_queue": 10}
    codec = make_codec(LINE_DISPATCH_ID, kwargs)
    net = {"obs_dim": int(codec.observation_space.shape[0]), "n_actions": 10, "hidden": [64, 64]}
    torch.manual_seed(0)
    return PolicyBundle(
        env_id=LINE_DISPATCH_ID,
        env_kwargs=kwargs,
        spec_hash=load_spec(LINE).spec_hash(),
        observation_space=codec.observation_space,
        action_space=codec.action_space,
        network=MaskedMLP(**net),  # type: ignore[arg-type]
        network_spec={"class": "mlp", "kwargs": net},
        lineage=make_lineage(backend="bench"),
        version="1",
    ).save(path)


def snapshots(n: int) -> list[LineSnapshot]:
    from taktline.agents.rules import get_rule
    from taktline.envs.spec import load_spec
    from taktline.envs.twin import Twin

    twin, rule = Twin(load_spec(LINE), seed=0), get_rule("SPT")
    out: list[LineSnapshot] = []
    while len(out) < n:
        req = twin.run_until_decision()
        if req is None:
            break
        if req.kind == "dispatch":
            out.append(twin.snapshot())
            twin.dispatch(rule.dispatch(req.candidates, twin.now, None))
        else:
            twin.release(req.pool_size)
    return [s for s in out if len(pending_dispatch(s)[0].queue) <= 10]


def start(cmd: list[str], env: dict[str, str], url: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=out, stderr=out)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{cmd[:3]} exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    sys.exit(f"{cmd[:3]} did not start:\n{log.read_text()[-2000:]}")


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


class Client:
    """A keep-alive HTTP/1.1 client on a bare socket: the request bytes are built once and the
    answer is read by its ``content-length``.

    The client shares the 2 cores with the server it measures, so its own cost caps what it
    can measure: ``http.client`` spends about 0.3 ms a request here, which held the empty ASGI
    app to ~3,000 requests/s with 2 client processes; this client lets it reach ~8,500.
    """

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        lines = [f"POST {parts.path or '/'} HTTP/1.1", f"host: {host}:{port}"]
        lines += [f"{k}: {v}" for k, v in {**headers, "content-type": "application/json"}.items()]
        self.head = ("\r\n".join(lines) + "\r\ncontent-length: ").encode()
        self.requests: dict[int, bytes] = {}

    def post(self, body: bytes) -> int:
        """Send one request and read its whole answer; returns the status code."""
        request = self.requests.get(id(body))
        if request is None:
            request = self.requests[id(body)] = self.head + b"%d\r\n\r\n" % len(body) + body
        self.sock.sendall(request)
        buf = self.sock.recv(65536)
        while (end := buf.find(b"\r\n\r\n")) < 0:
            buf += self._more()
        head = buf[:end].lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            raise RuntimeError(f"an answer without content-length: {head[:200]!r}")
        stop = head.find(b"\r\n", at + 2)
        size = int(head[at + 17 : stop if stop >= 0 else None])
        while len(buf) < end + 4 + size:
            buf += self._more()
        return int(buf[9:12])

    def _more(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        return chunk


def latency(url: str, bodies: list[bytes], headers: dict[str, str], n: int) -> list[float]:
    """Sequential requests from one keep-alive client (seconds each)."""
    client = Client(url, headers)
    for b in bodies[:50]:
        assert client.post(b) == 200, url
    times = []
    for i in range(n):
        t = time.perf_counter()
        status = client.post(bodies[i % len(bodies)])
        times.append(time.perf_counter() - t)
        if status != 200:
            sys.exit(f"{url}: HTTP {status}")
    return times


def _client_loop(args: tuple[str, list[bytes], dict[str, str], float, float, int]) -> int:
    url, bodies, headers, start, stop, k = args
    client = Client(url, headers)
    time.sleep(max(0.0, start - time.time()))
    count, i = 0, k
    while time.time() < stop:
        if client.post(bodies[i % len(bodies)]) != 200:
            return -1
        count += 1
        i += 7
    return count


def throughput(
    url: str, bodies: list[bytes], headers: dict[str, str], clients: int, seconds: float
) -> float:
    """Requests/s of ``clients`` concurrent keep-alive clients (one process each)."""
    with multiprocessing.get_context("spawn").Pool(clients) as pool:
        pool.map(_client_loop, [(url, bodies[:4], headers, 0.0, 0.0, k) for k in range(clients)])
        start = time.time() + 0.5
        stop = start + seconds
        jobs = [(url, bodies, headers, start, stop, k) for k in range(clients)]
        counts = pool.map(_client_loop, jobs)
    if min(counts) < 0:
        sys.exit(f"{url}: a request failed")
    return sum(counts) / seconds


def ms(xs: list[float], q: float) -> float:
    return float(np.quantile(xs, q)) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="per throughput run")
    ap.add_argument(
        "--clients", type=int, default=4,
        help="concurrent client processes (4 keep a one-worker server busy between answers)",
    )  # fmt: skip
    ap.add_argument("--requests", type=int, default=1000, help="per latency run")
    ap.add_argument(
        "--policy-execution", choices=("auto", "thread", "inline"), default="auto",
        help="TAKTLINE_POLICY_EXECUTION of the taktline server",
    )  # fmt: skip
    args = ap.parse_args()

    import torch
    from threadpoolctl import threadpool_limits

    from taktline.agents.bundle import PolicyBundle
    from taktline.envs.encoding import make_codec

    torch.set_num_threads(1)
    threadpool_limits(1, user_api="blas")  # as the server does (TAKTLINE_TORCH_THREADS=1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    bundle_dir = make_bundle(tmp / "bundle")
    torch_bundle = PolicyBundle.load(bundle_dir)
    bundle = PolicyBundle.load(bundle_dir).freeze()  # as serving (and the pyfunc) load it
    codec = make_codec(bundle.env_id, bundle.env_kwargs)
    snaps = snapshots(200)
    encoded = [codec.encode(s) for s in snaps]
    obs64 = np.stack([o for o, _ in encoded[:64]])
    mask64 = np.stack([m for _, m in encoded[:64]])

    # ---- bare policy ----------------------------------------------------------------------
    o1, m1 = encoded[0]
    bare1 = timed(lambda: bundle.act(o1[None], m1[None]), 2000)
    bare64 = timed(lambda: bundle.act(obs64, mask64), 500)
    torch1 = timed(lambda: torch_bundle.act(o1[None], m1[None]), 2000)
    torch64 = timed(lambda: torch_bundle.act(obs64, mask64), 500)

    def full() -> object:
        o, m = codec.encode(snaps[0])
        return codec.decode(snaps[0], int(bundle.act(o[None], m[None])[0]))

    bare_full = timed(full, 2000)

    # ---- servers --------------------------------------------------------------------------
    tk_port, fw_port, ml_port, mt_port, fl_port = (free_port() for _ in range(5))
    env = {
        "TAKTLINE_ENV": "production",
        "TAKTLINE_API_KEYS": json.dumps([KEY]),
        "TAKTLINE_CACHE_DIR": str(tmp / "cache"),
        "TAKTLINE_POLL_INTERVAL_S": "0",
        "TAKTLINE_POLICY_EXECUTION": args.policy_execution,
    }
    tk = start(
        [sys.executable, "-m", "taktline.cli_serve", "serve", "--policy", f"p={bundle_dir}",
         "--port", str(tk_port)],
        env, f"http://127.0.0.1:{tk_port}/readyz", tmp / "taktline.log",
    )  # fmt: skip
    # the same model as training logs it (pyfunc from code, the bundle among its artifacts)
    from taktline.training.tracking import log_policy_model

    store = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.set_tracking_uri(store)
    exp = mlflow.create_experiment("bench", artifact_location=(tmp / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=exp):
        model_uri = log_policy_model(bundle_dir, o1, m1)
    # and the network as MLflow's own torch flavour logs it (logits out; no masks, no decode)
    with mlflow.start_run(experiment_id=exp):
        torch_uri = mlflow.pytorch.log_model(
            # a 2-row example: torch.export would specialise the batch size to a 1-row one
            torch_bundle.network,
            name="network",
            input_example=np.stack([o1, o1]),
        ).model_uri
    servers = [tk]
    try:
        # the same server with its routes alone: what the fast path in front of them buys
        servers.append(
            start(
                [sys.executable, "-m", "taktline.cli_serve", "serve", "--policy",
                 f"p={bundle_dir}", "--port", str(fw_port)],
                {**env, "TAKTLINE_FAST_PATH": "false"},
                f"http://127.0.0.1:{fw_port}/readyz", tmp / "taktline-routes.log",
            )
        )  # fmt: skip
        # the ceiling: an ASGI app that does nothing, on the same uvicorn (uvloop, httptools)
        servers.append(
            start(
                [sys.executable, "-c", FLOOR_APP, str(fl_port)], {},
                f"http://127.0.0.1:{fl_port}/", tmp / "floor.log",
            )
        )  # fmt: skip
        for port, uri, log_name in ((ml_port, model_uri, "mlflow.log"),
                                    (mt_port, torch_uri, "mlflow-torch.log")):  # fmt: skip
            servers.append(
                start(
                    [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri,
                     "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
                    {
                        "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
                        f"{os.environ.get('PATH', '')}",
                        "MLFLOW_TRACKING_URI": store,
                    },
                    f"http://127.0.0.1:{port}/ping", tmp / log_name,
                )
            )  # fmt: skip
    except BaseException:
        for proc in servers:
            proc.terminate()
        raise
    auth = {"Authorization": f"Bearer {KEY}"}
    try:
        decide_url = f"http://127.0.0.1:{tk_port}/v1/policies/p/decide"
        act_url = f"http://127.0.0.1:{tk_port}/v1/policies/p/act"
        fw_decide_url = f"http://127.0.0.1:{fw_port}/v1/policies/p/decide"
        fw_act_url = f"http://127.0.0.1:{fw_port}/v1/policies/p/act"
        ml_url = f"http://127.0.0.1:{ml_port}/invocations"
        mt_url = f"http://127.0.0.1:{mt_port}/invocations"
        mt1_bodies = [json.dumps({"inputs": [o.tolist()]}).encode() for o, _ in encoded]
        mt64_bodies = [
            json.dumps({"inputs": np.roll(obs64, k, 0).tolist()}).encode() for k in range(8)
        ]
        decide_bodies = [s.model_dump_json().encode() for s in snaps]
        act_bodies = [
            json.dumps(
                {"observations": np.roll(obs64, k, 0).tolist(),
                 "masks": np.roll(mask64, k, 0).tolist()}
            ).encode()
            for k in range(8)
        ]  # fmt: skip
        ml1_bodies = [
            json.dumps({"inputs": {"obs": [o.tolist()], "mask": [m.tolist()]}}).encode()
            for o, m in encoded
        ]
        ml64_bodies = [
            json.dumps(
                {"inputs": {"obs": np.roll(obs64, k, 0).tolist(),
                            "mask": np.roll(mask64, k, 0).tolist()}}
            ).encode()
            for k in range(8)
        ]  # fmt: skip
        floor_url = f"http://127.0.0.1:{fl_port}/"
        rows = [
            ("empty ASGI app (the ceiling)", floor_url, decide_bodies, {}),
            ("taktline /decide (1 snapshot)", decide_url, decide_bodies, auth),
            ("taktline /act (batch 64)", act_url, act_bodies, auth),
            ("routes alone /decide (1 snapshot)", fw_decide_url, decide_bodies, auth),
            ("routes alone /act (batch 64)", fw_act_url, act_bodies, auth),
            ("mlflow serve (1 row)", ml_url, ml1_bodies, {}),
            ("mlflow serve (64 rows)", ml_url, ml64_bodies, {}),
            ("mlflow serve, torch flavour (1)", mt_url, mt1_bodies, {}),
            ("mlflow serve, torch flavour (64)", mt_url, mt64_bodies, {}),
        ]
        results: dict[str, tuple[float, float, float]] = {}
        for name, url, bodies, headers in rows:
            lat = latency(url, bodies, headers, args.requests)
            rps = throughput(url, bodies, headers, args.clients, args.seconds)
            results[name] = (ms(lat, 0.5), ms(lat, 0.99), rps)
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(timeout=30)

    print(
        f"\nserving benchmark — {LINE}, MLP 64x64, {args.clients} client processes, torch 1 "
        f"thread, policy execution {args.policy_execution}, load average "
        + " ".join(f"{x:.1f}" for x in os.getloadavg())
    )
    print(f"{'':34}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>10}")
    bare_rows = [
        ("bare act, torch (1 obs)", torch1),
        ("bare act, numpy kernel (1 obs)", bare1),
        ("bare encode+act+decode (1 snap)", bare_full),
        ("bare act, torch (batch 64)", torch64),
        ("bare act, numpy kernel (batch 64)", bare64),
    ]
    for name, xs in bare_rows:
        print(f"{name:34}{ms(xs, 0.5):9.3f}{ms(xs, 0.99):9.3f}{1 / statistics.mean(xs):10.0f}")
    for name, (p50, p99, rps) in results.items():
        print(f"{name:34}{p50:9.3f}{p99:9.3f}{rps:10.0f}")
    d, a = results["taktline /decide (1 snapshot)"], results["taktline /act (batch 64)"]
    m1r, m64 = results["mlflow serve (1 row)"], results["mlflow serve (64 rows)"]
    t1, t64 = (
        results["mlflow serve, torch flavour (1)"],
        results["mlflow serve, torch flavour (64)"],
    )
    print("\nratios (taktline / mlflow models serve of the pyfunc training logs):")
    print(f"  /decide vs 1 row : throughput x{d[2] / m1r[2]:.1f}, p50 x{m1r[0] / d[0]:.1f} lower")
    print(f"  /act 64 vs 64 rows: throughput x{a[2] / m64[2]:.1f}, p50 x{m64[0] / a[0]:.1f} lower")
    print("ratios (taktline / mlflow models serve of the torch flavour: logits only):")
    print(f"  /decide vs 1 row : throughput x{d[2] / t1[2]:.1f}, p50 x{t1[0] / d[0]:.1f} lower")
    print(f"  /act 64 vs 64 rows: throughput x{a[2] / t64[2]:.1f}, p50 x{t64[0] / a[0]:.1f} lower")
    print(f"  /decide p50 over bare encode+act+decode: +{d[0] - ms(bare_full, 0.5):.3f} ms")
    fd, fa = results["routes alone /decide (1 snapshot)"], results["routes alone /act (batch 64)"]
    print("ratios (taktline with its fast path / its FastAPI routes alone):")
    print(f"  /decide: throughput x{d[2] / fd[2]:.2f}, p50 x{fd[0] / d[0]:.2f} lower")
    print(f"  /act 64: throughput x{a[2] / fa[2]:.2f}, p50 x{fa[0] / a[0]:.2f} lower")
    fl = results["empty ASGI app (the ceiling)"]
    print(
        f"  ceiling (empty app) vs mlflow pyfunc 1 row: throughput x{fl[2] / m1r[2]:.1f}; "
        f"/decide reaches {d[2] / fl[2]:.0%} of the empty app's throughput"
    )
    ok_p50 = d[0] < 2.0
    print(f"targets: p50 /decide < 2 ms: {'met' if ok_p50 else 'MISSED'}; >= 5x mlflow "
          f"throughput: pyfunc {'met' if d[2] / m1r[2] >= 5 else 'MISSED'}, torch flavour "
          f"{'met' if d[2] / t1[2] >= 5 else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
