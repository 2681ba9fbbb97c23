"""``taktline demo``: the main job of ``make demo``.

It runs the whole journey on embedded defaults, step by step, each step visible:

1. simulate the body-shop line under the classic rules and print the KPI comparison;
2. train a dispatch policy on the twin (SB3, a short budget), tracked in the embedded MLflow;
3. the verdict: the best trained checkpoint against the best rule on held-out seeds (common
   random numbers, paired 95% CI); then the lookahead on twin forks against the same rules on
   other held-out seeds (``taktline compare``: table, ``out/portfolio.png``, an MLflow run);
   then the suite's showcase, ``cut_weld``: the policy shipped for it (learned from the
   lookahead) against the lookahead and the rules on fresh seeds, registered only if it won;
4. what to serve: the network, promoted to ``production``, only if it won; else the lookahead
   (``rule:LOOKAHEAD(...)``) only if it won; otherwise the best rule itself (``rule:NAME``),
   and the summary says why with the numbers;
5. start the inference server (uvicorn), post a plant snapshot, print the decision, stop it;
6. a closing summary (also ``out/summary.json``): what is served and why, KPIs of rules vs
   policy, where the store and pictures are, how to open the MLflow UI and call the API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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


HELD_OUT_SEED = 50_000
"""First seed of the demo's verdict episodes (the checkpoints are picked on seeds 20000..)."""


def train_policy(line: str, timesteps: int, minutes: float, episodes: int) -> tuple[Any, Any]:
    """Step 2: a short SB3 training run from the bundled body-shop config; its end is the
    verdict against the demo's rules on ``episodes`` held-out seeds."""
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
            f"eval.baselines=[{','.join(DEMO_RULES)}]",
            f"eval.held_out_seed={HELD_OUT_SEED}",
            f"eval.held_out_episodes={episodes}",
            f"checkpoint.every_steps={max(timesteps // 4, 1024)}",
            "tracking.experiment=taktline-demo",
        ],
    )
    return cfg, train(cfg, console=console)


PORTFOLIO_SEED = 60_000
"""First seed of the portfolio's verdict (apart from the network's checkpoint and verdict seeds)."""


def _judged(chart: Path, line: str, **kwargs: Any) -> tuple[Any, str | None]:
    """``compare`` on ``line`` against the demo's rules, its chart, its MLflow run, its table;
    returns the comparison and the run id."""
    from taktline.cli_compare import _print
    from taktline.training.compare import bar_chart, compare, log_comparison

    result = compare(line, rules=list(DEMO_RULES), **kwargs)
    path = bar_chart(result, chart)
    run_id = log_comparison(result, path)
    _print(result, path, run_id)
    return result, run_id


def portfolio_verdict(line: str, episodes: int, minutes: float, out: Path) -> Any:
    """Step 3, second half: the lookahead on twin forks (base = the best rule on pilot seeds)
    against the demo's rules on held-out seeds, paired: the table, a chart, an MLflow run."""
    kwargs = {"lookahead": "auto", "episodes": episodes, "minutes": minutes}
    return _judged(out / "portfolio.png", line, seed=PORTFOLIO_SEED, **kwargs)[0]


SHOWCASE_LINE = "cut_weld"
SHOWCASE_SEED = 70_000
SHOWCASE_LOOKAHEAD = "LOOKAHEAD(base=SAME,horizon=30,k=8,line=cut_weld)"
SHOWCASE_MODEL = "showcase-cut_weld"


def showcase_verdict(episodes: int, out: Path) -> tuple[Any, dict[str, Any], str | None]:
    """Step 3, the suite's showcase: the policy shipped for ``cut_weld`` (a DAgger imitation of
    the lookahead, trained 28 minutes on two cores), the lookahead it learned from and the
    rules on held-out seeds nobody chose, paired. The policy is registered (``@candidate``)
    only if it beat the best rule; returns the comparison, the policy's row and the version."""
    import mlflow

    from taktline.agents.bundle import shipped_bundle
    from taktline.training import tracking
    from taktline.training.imitation import log_line_policy

    bundle = shipped_bundle(SHOWCASE_LINE)
    result, run_id = _judged(
        out / "showcase.png",
        SHOWCASE_LINE,
        policies=[str(bundle)],
        lookahead=SHOWCASE_LOOKAHEAD,
        episodes=episodes,
        seed=SHOWCASE_SEED,
    )
    row = next(r for r in result.rows() if r["kind"] not in ("rule", "lookahead"))
    if row["verdict"] != "better":
        console.print(
            f"not registered: the shipped {SHOWCASE_LINE} policy did not beat the best rule "
            f"{result.reference} on these seeds",
            highlight=False,
        )
        return result, row, None
    with mlflow.start_run(run_id=run_id):
        uri = log_line_policy(bundle, SHOWCASE_LINE, SHOWCASE_SEED)
    version = tracking.register(
        uri, SHOWCASE_MODEL, "candidate", tags={"compare_run": run_id or "", "line": SHOWCASE_LINE}
    )
    console.print(
        f"registered models:/{SHOWCASE_MODEL}@candidate -> version {version}", highlight=False
    )
    return result, row, version


def choose_served(cfg: Any, result: Any, portfolio: Any = None) -> tuple[str, str]:
    """Step 4: the reference to serve and why. The network (promoted to ``production``) only
    when its held-out verdict is a win over the best rule; else the lookahead only when it beat
    the best rule in the portfolio's verdict; otherwise that rule itself."""
    from taktline.training import tracking
    from taktline.training.run import verdict_line

    verdict = result.verdict
    winner = portfolio.winner() if portfolio is not None else None
    if (
        winner is not None
        and winner.upper().startswith("LOOKAHEAD")
        and not (verdict is not None and verdict["won"])
    ):
        row = next(r for r in portfolio.rows() if r["policy"] == winner)
        lo, hi = row["diff_ci_low"], row["diff_ci_high"]
        why = (
            f"the lookahead {winner} beats the best rule {portfolio.reference}: Δ "
            f"{row['diff_mean']:+,.1f} (95% CI {lo:+,.1f} .. {hi:+,.1f}), p {row['p_ttest']:.3g}, "
            f"n {row['n']} held-out seeds; the network "
            + (verdict_line(verdict) if verdict is not None else "reached no verdict")
        )
        ref = f"rule:{winner}"
        console.print(f"nothing promoted to production: serving {ref}", highlight=False)
        console.print(why, markup=False, highlight=False, soft_wrap=True)
        return ref, why
    if verdict is not None and verdict["won"] and result.model_version:
        tracking.promote(cfg.name, result.model_version, "production")
        ref = f"models:/{cfg.name}@production"
        why = (
            f"network {cfg.name} version {result.model_version} "
            f"({result.num_timesteps:,} steps): {verdict_line(verdict)}"
        )
        console.print(f"{ref} -> version {result.model_version}", highlight=False)
    else:
        rule = verdict["baseline"] if verdict is not None else DEMO_RULES[-1]
        ref = f"rule:{rule}"
        reason = verdict_line(verdict) if verdict is not None else "no verdict was reached"
        why = f"the best rule {rule}, not the network: {reason}"
        console.print(f"nothing promoted to production: serving {ref} instead", highlight=False)
    console.print(why, markup=False, highlight=False, soft_wrap=True)
    return ref, why


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
            snapshot = twin.snapshot().model_dump(mode="json")
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
    showcase_episodes: Annotated[
        int, typer.Option(help="held-out seeds of the cut_weld showcase (0: skip it)")
    ] = 30,
    simulate_only: Annotated[bool, typer.Option(help="stop after step 1")] = False,
    out: Annotated[Path, typer.Option(help="folder for pictures and reports")] = Path("out"),
) -> None:
    """Run the main job: simulate, train, judge on held-out seeds, serve what won."""
    from taktline.errors import check_number

    # every number is checked before the first step, so a typo never costs a simulation
    check_number("--seed", seed, minimum=0, hint="e.g. --seed 0")
    check_number("--timesteps", timesteps, above=0, hint="e.g. --timesteps 30000")
    check_number("--minutes", minutes, above=0, hint="e.g. --minutes 6")
    check_number("--episodes", episodes, minimum=2, hint="a paired test needs 2 or more")
    if showcase_episodes != 0:
        check_number(
            "--showcase-episodes", showcase_episodes, minimum=2, hint="0 skips it, else 2 or more"
        )
    out.mkdir(parents=True, exist_ok=True)
    console.print(Panel.fit("taktline demo — 1/5: simulate the line under classic rules"))
    rules = simulate_rules(line, replications, seed, out)
    if simulate_only:
        console.print(f"pictures in {out.resolve()}")
        return
    from taktline.training import tracking

    console.print(Panel.fit("2/5: train a dispatch policy on the twin (SB3 MaskablePPO)"))
    cfg, result = train_policy(line, timesteps, minutes, episodes)
    console.print(
        Panel.fit(f"3/5: the verdict — policy vs the best rule on {episodes} held-out seeds")
    )
    if result.verdict is not None:
        from taktline.training.run import verdict_line

        console.print(verdict_line(result.verdict), markup=False, highlight=False, soft_wrap=True)
    console.print(
        Panel.fit(f"3/5 (cont.): the lookahead on twin forks vs the rules, {episodes} seeds")
    )
    portfolio = portfolio_verdict(line, episodes, minutes, out)
    showcase = None
    if showcase_episodes:
        console.print(
            Panel.fit(
                f"3/5 (showcase): a policy learned from search on {SHOWCASE_LINE} vs the rules, "
                f"{showcase_episodes} seeds"
            )
        )
        showcase = showcase_verdict(showcase_episodes, out)
    console.print(Panel.fit("4/5: what to serve — the network or the lookahead only if it won"))
    served_ref, why = choose_served(cfg, result, portfolio)
    console.print(Panel.fit(f"5/5: serve {served_ref} and ask for a decision"))
    answer = serve_and_decide(served_ref, tracking.tracking_uri(), line, out)
    summary = Table(title="summary", show_header=False)
    summary.add_column(justify="left")
    summary.add_column(justify="left", overflow="fold")
    summary.add_row("served", served_ref)
    summary.add_row("why", why)
    best_rule = max(rules, key=lambda r: rules[r]["profit"])
    summary.add_row(
        "best rule by profit (step 1)", f"{best_rule}: {rules[best_rule]['profit']:,.0f} per run"
    )
    for row in (result.evaluation or {}).get("summary", []):
        summary.add_row(
            f"held-out: {row['policy']}",
            f"{result.evaluation['metric']} {row['mean']:,.1f} (95% CI {row['ci_low']:,.1f} .."
            f" {row['ci_high']:,.1f})",
        )
    look = next((r for r in portfolio.rows() if r["kind"] == "lookahead"), None)
    if look is not None:
        summary.add_row(
            "lookahead vs best rule",
            f"{look['policy']}: Δ {look['diff_mean']:+,.1f} (95% CI {look['diff_ci_low']:+,.1f}"
            f" .. {look['diff_ci_high']:+,.1f}) vs {portfolio.reference}, {look['verdict']}; "
            f"p50 {look['latency_p50_ms']:.1f} ms per decision",
        )
    if showcase is not None:
        _, srow, sversion = showcase
        summary.add_row(
            f"showcase {SHOWCASE_LINE}: learned vs best rule",
            f"Δ {srow['diff_mean']:+,.1f} (95% CI {srow['diff_ci_low']:+,.1f} .. "
            f"{srow['diff_ci_high']:+,.1f}) vs {showcase[0].reference}, {srow['verdict']}; "
            f"p50 {srow['latency_p50_ms']:.2f} ms; "
            + (
                f"registered {SHOWCASE_MODEL}@candidate v{sversion}"
                if sversion
                else "not registered"
            ),
        )
    summary.add_row("decision served", f"{answer.get('decision')} by {answer.get('served_by')}")
    summary.add_row("MLflow store", tracking.tracking_uri())
    summary.add_row("MLflow UI", f"mlflow ui --backend-store-uri {tracking.tracking_uri()}")
    summary.add_row("pictures", str(out.resolve()))
    summary.add_row(
        "call the API",
        f"TAKTLINE_API_KEYS='[\"KEY\"]' taktline serve --policy bodyshop={served_ref}\n"
        f"curl -H 'Authorization: Bearer KEY' -H 'Content-Type: application/json'"
        f" -d @{(out / 'snapshot.json').resolve()}"
        " http://127.0.0.1:8000/v1/policies/bodyshop/decide",
    )
    console.print(summary)
    from taktline.jsonout import to_json

    (out / "summary.json").write_text(
        to_json(
            {
                "served": served_ref,
                "why": why,
                "served_by": answer.get("served_by"),
                "fallback": answer.get("fallback"),
                "model_version": result.model_version,
                "num_timesteps": result.num_timesteps,
                "verdict": result.verdict,
                "portfolio": {
                    "reference": portfolio.reference,
                    "winner": portfolio.winner(),
                    "rows": portfolio.rows(),
                },
                "showcase": None
                if showcase is None
                else {
                    "line": SHOWCASE_LINE,
                    "reference": showcase[0].reference,
                    "rows": showcase[0].rows(),
                    "registered_version": showcase[2],
                },
            }
        )
        + "\n"
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
