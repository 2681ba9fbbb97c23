"""``taktline demo``: the main job of ``make demo``.

It runs the whole journey on embedded defaults, step by step, each step visible:

1. simulate the body-shop line under the classic rules and print the KPI comparison;
2. train a dispatch policy on the twin (SB3, a short budget), tracked in the embedded MLflow;
3. evaluate it against the rules on common random numbers (paired tests);
4. register it and move the ``production`` alias to it;
5. start the inference server (uvicorn), post a plant snapshot, print the decision, stop it;
6. a closing summary: KPIs of rules vs policy, where the store and pictures are, how to open
   the MLflow UI and how to call the API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

console = Console()

DEMO_RULES = ("FIFO", "SPT", "EDD", "ATC", "SAME")


def simulate_rules(
    line: str, replications: int, seed: int, out: Path
) -> dict[str, dict[str, float]]:
    """Step 1: the line under each classic rule, on common random numbers."""
    from rich.progress import Progress

    from taktline.agents.rules import get_rule
    from taktline.envs.eventlog import gantt_bars
    from taktline.envs.jobshop.gantt import plot_gantt
    from taktline.envs.kpis import summarize
    from taktline.envs.spec import load_spec
    from taktline.envs.twin import Twin

    spec = load_spec(line)
    results: dict[str, dict[str, float]] = {}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"simulating {line}", total=len(DEMO_RULES) * replications)
        for name in DEMO_RULES:
            runs = []
            for i in range(replications):
                twin = Twin(spec, seed + i, get_rule(name), log_events=(i == 0))
                twin.run()
                if i == 0 and name == "SAME":
                    bars = [b for b in gantt_bars(twin) if b["start"] < 240.0]
                    plot_gantt(bars, out / f"{line}_gantt.png", title=f"{line} under SAME")
                runs.append(twin.kpis())
                progress.advance(task)
            results[name] = {k: e.mean for k, e in summarize(runs).items()}
    table = Table(title=f"{line}: classic rules, {replications} replications (means)")
    for col in ("rule", "throughput/min", "WIP", "flow time", "late share", "setups", "profit"):
        table.add_column(col, justify="right")
    for name, k in results.items():
        table.add_row(
            name,
            f"{k['throughput']:.3f}",
            f"{k['wip']:.1f}",
            f"{k['flow_time']:.1f}",
            f"{k['share_late']:.0%}",
            f"{k['setups']:.0f}",
            f"{k['profit']:,.0f}",
        )
    console.print(table)
    return results


def train_policy(line: str, timesteps: int, minutes: float) -> object:
    """Step 2: a short SB3 training run from the bundled body-shop config."""
    from taktline.training.config import load_config
    from taktline.training.sb3_backend import train

    cfg = load_config(
        "bodyshop_dispatch",
        [
            "name=demo-bodyshop",
            f"env.kwargs.line={line}",
            f"budget.total_timesteps={timesteps}",
            f"budget.max_minutes={minutes}",
            f"eval.every_steps={max(timesteps // 4, 1024)}",
            "eval.episodes=4",
            "eval.baselines=[SPT,SAME]",
            f"checkpoint.every_steps={max(timesteps // 4, 1024)}",
            "tracking.experiment=taktline-demo",
        ],
    )
    return cfg, train(cfg, console=console)


def evaluate_policy(model_uri: str, env_kwargs: dict[str, object], episodes: int) -> object:
    """Step 3: policy vs rules on the same seeds (common random numbers)."""
    from taktline.agents.policies import load_policy
    from taktline.training.evaluate import evaluate, render_table

    refs = [model_uri, "SAME", "SPT", "FIFO"]
    ev = evaluate(
        [load_policy(r) for r in refs],
        "taktline/LineDispatch-v0",
        env_kwargs,
        episodes,
        seed=50_000,
    )
    console.print(render_table(ev, model_uri if model_uri in ev.policies else None))
    return ev


def serve_and_decide(model_uri: str, tracking_uri: str, line: str, out: Path) -> dict[str, object]:
    """Step 5: start ``taktline serve``, post a snapshot of the twin, return the answer."""
    import json
    import os
    import secrets
    import socket
    import subprocess
    import sys
    import time

    import httpx

    from taktline.agents.rules import get_rule
    from taktline.envs.spec import load_spec
    from taktline.envs.twin import Twin

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    key = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_REGISTRY_URI": tracking_uri,  # not one inherited from an earlier configure()
        "TAKTLINE_ENV": "production",
        "TAKTLINE_API_KEYS": json.dumps([key]),
        "TAKTLINE_CACHE_DIR": str((out / "model-cache").resolve()),
        "TAKTLINE_POLL_INTERVAL_S": "0",
    }
    cmd = [
        sys.executable,
        "-m",
        "taktline.cli",
        "serve",
        "--policy",
        f"bodyshop={model_uri}",
        "--port",
        str(port),
    ]
    log_path = out / "server.log"
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"server stopped:\n{log_path.read_text()[-2000:]}")
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"server not ready:\n{log_path.read_text()[-2000:]}")
                time.sleep(0.25)
            # the twin plays the plant: run it to a dispatch decision an hour into the shift
            twin = Twin(load_spec(line), seed=7)
            spt = get_rule("SPT")
            while True:
                req = twin.run_until_decision()
                if req is None:
                    raise RuntimeError("the twin ended before a dispatch decision")
                if req.kind == "release":
                    twin.release(req.pool_size)
                    continue
                if twin.now >= 60.0:
                    break
                last = twin.machines[req.machine].last_family
                twin.dispatch(spt.dispatch(req.candidates, twin.now, last))
            snapshot = twin.snapshot()
            (out / "snapshot.json").write_text(json.dumps(snapshot, indent=2))
            r = httpx.post(
                f"{url}/v1/policies/bodyshop/decide",
                json=snapshot,
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
            r.raise_for_status()
            answer: dict[str, object] = r.json()
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
    console.print(f"server on {url} answered (and is stopped again):")
    console.print_json(data=answer)
    return answer


def demo(
    line: Annotated[str, typer.Option(help="the line to run")] = "bodyshop",
    replications: Annotated[int, typer.Option(min=2)] = 5,
    seed: Annotated[int, typer.Option()] = 0,
    timesteps: Annotated[int, typer.Option(help="training budget in env steps")] = 30_000,
    minutes: Annotated[float, typer.Option(help="training wall-clock cap")] = 6.0,
    episodes: Annotated[int, typer.Option(help="paired evaluation episodes")] = 10,
    simulate_only: Annotated[bool, typer.Option(help="stop after step 1")] = False,
    out: Annotated[Path, typer.Option(help="folder for pictures and reports")] = Path("out"),
) -> None:
    """Run the main job: simulate, train, evaluate, register and serve a body-shop policy."""
    out.mkdir(parents=True, exist_ok=True)
    console.print(Panel.fit("taktline demo — 1/5: simulate the line under classic rules"))
    rules = simulate_rules(line, replications, seed, out)
    if simulate_only:
        console.print(f"pictures in {out.resolve()}")
        return
    from taktline.training import tracking

    console.print(Panel.fit("2/5: train a dispatch policy on the twin (SB3 MaskablePPO)"))
    cfg, result = train_policy(line, timesteps, minutes)
    model_uri = f"models:/{cfg.name}/{result.model_version}"  # type: ignore[attr-defined]
    console.print(Panel.fit("3/5: evaluate policy vs rules on common random numbers"))
    env_kwargs = dict(cfg.env.kwargs)  # type: ignore[attr-defined]
    ev = evaluate_policy(model_uri, env_kwargs, episodes)
    console.print(Panel.fit("4/5: register — move the production alias to the new version"))
    tracking.promote(cfg.name, result.model_version, "production")  # type: ignore[attr-defined]
    prod_uri = f"models:/{cfg.name}@production"  # type: ignore[attr-defined]
    console.print(f"{prod_uri} -> version {result.model_version}")  # type: ignore[attr-defined]
    console.print(Panel.fit("5/5: serve it and ask for a decision"))
    answer = serve_and_decide(prod_uri, tracking.tracking_uri(), line, out)
    summary = Table(title="summary", show_header=False)
    summary.add_column(justify="left")
    summary.add_column(justify="left")
    best_rule = max(rules, key=lambda r: rules[r]["profit"])
    summary.add_row(
        "best rule by profit (step 1)", f"{best_rule}: {rules[best_rule]['profit']:,.0f} per run"
    )
    for row in ev.summary():  # type: ignore[attr-defined]
        summary.add_row(
            f"evaluation: {row['policy']}",
            f"{ev.metric} {row['mean']:,.1f} (95% CI {row['ci_low']:,.1f} .."  # type: ignore[attr-defined]
            f" {row['ci_high']:,.1f})",
        )
    summary.add_row("decision served", f"{answer.get('decision')} by {answer.get('served_by')}")
    summary.add_row("MLflow store", tracking.tracking_uri())
    summary.add_row("MLflow UI", f"mlflow ui --backend-store-uri {tracking.tracking_uri()}")
    summary.add_row("pictures", str(out.resolve()))
    summary.add_row(
        "call the API",
        f"TAKTLINE_API_KEYS='[\"KEY\"]' taktline serve --policy bodyshop={prod_uri}\n"
        f"curl -H 'Authorization: Bearer KEY' -H 'Content-Type: application/json'"
        f" -d @{(out / 'snapshot.json').resolve()}"
        " http://127.0.0.1:8000/v1/policies/bodyshop/decide",
    )
    console.print(summary)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
