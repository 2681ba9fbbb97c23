"""``taktline train-jobshop``: train the learned job-shop scheduler by self-labeling."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from taktline.errors import SpecError, check_number
from taktline.jsonout import echo_json

console = Console(stderr=True)


def _sizes(text: str) -> tuple[tuple[int, int], ...]:
    """``10x10,15x15`` -> ((10, 10), (15, 15))."""
    out = []
    for part in text.split(","):
        jobs, _, machines = part.strip().lower().partition("x")
        if not (jobs.isdigit() and machines.isdigit()):
            raise SpecError(f"--sizes: expected JOBSxMACHINES[,...] like 10x10,15x15, got {text!r}")
        out.append((int(jobs), int(machines)))
    return tuple(out)


def train_jobshop(
    out: Annotated[Path, typer.Option("--out", help="where the weights go (.npz)")] = Path(
        "jobshop_policy.npz"
    ),
    minutes: Annotated[float, typer.Option("--minutes", help="training budget")] = 80.0,
    beta: Annotated[int, typer.Option("--beta", help="schedules sampled per instance")] = 128,
    sizes: Annotated[
        str, typer.Option("--sizes", help="instance sizes trained on, JOBSxMACHINES,...")
    ] = "10x10,15x10,15x15,20x10,20x15",
    scheme: Annotated[
        str, typer.Option("--scheme", help="generation scheme: active or non-delay")
    ] = "active",
    device: Annotated[str, typer.Option("--device", help="cpu, or cuda where a GPU is")] = "cpu",
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="seed of instances and weights")] = 0,
    dim: Annotated[int, typer.Option("--dim", help="embedding width of the network")] = 64,
    rounds: Annotated[int, typer.Option("--rounds", help="set-summary rounds")] = 1,
    heads: Annotated[
        int, typer.Option("--heads", help="heads of self-attention among the jobs (0: none)")
    ] = 0,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate (cosine-decayed)")] = 1e-3,
    init: Annotated[
        Path | None,
        typer.Option("--init", help="start from these weights (same --dim, <= --rounds)"),
    ] = None,
    eval_every: Annotated[
        float, typer.Option("--eval-every", help="seconds between validations")
    ] = 120.0,
    mirror: Annotated[
        bool,
        typer.Option(
            "--mirror/--no-mirror", help="sample half of --beta on the time-reversed instance"
        ),
    ] = False,
    replay: Annotated[
        int, typer.Option("--replay", help="labelled instances kept for re-use (0: none)")
    ] = 0,
    updates: Annotated[
        int, typer.Option("--updates", help="gradient steps per group of new labels")
    ] = 1,
    ema: Annotated[
        float, typer.Option("--ema", help="decay of a moving average of the weights (0: none)")
    ] = 0.0,
    validation_per_size: Annotated[
        int, typer.Option("--validation-per-size", help="validation instances per size (>= 8)")
    ] = 8,
    workers: Annotated[
        int,
        typer.Option(
            "--workers", help="instances labelled in parallel as Ray tasks (same weights, sooner)"
        ),
    ] = 1,
    instances: Annotated[
        int, typer.Option("--instances", help="stop after this many instances (0: --minutes)")
    ] = 0,
    eval_every_instances: Annotated[
        int,
        typer.Option(
            "--eval-every-instances",
            help="validate every N instances, not every --eval-every seconds (0: by time)",
        ),
    ] = 0,
    improve: Annotated[
        int,
        typer.Option(
            "--improve", help="tabu-search moves on each instance's best sample (0: plain label)"
        ),
    ] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Train the job-shop scheduler network by self-labeling on random instances.

    Each instance: sample --beta schedules with the network, learn the best one's choices.
    The best greedy validation checkpoint is written to --out; the run is logged to MLflow.
    With --instances and --eval-every-instances the same command writes the same weights on
    any machine, with any --workers.
    """
    from taktline.envs.files import check_output_file
    from taktline.envs.jobshop.schedule import SCHEMES
    from taktline.training.jobshop_selflabel import SelfLabelConfig, check_config, train_selflabel
    from taktline.training.progress import TrainProgress

    check_number("--minutes", minutes, above=0, hint="e.g. --minutes 80")
    check_number("--threads", threads, minimum=1, hint="e.g. --threads 2")
    if scheme not in SCHEMES:
        raise SpecError(f"--scheme: expected one of {', '.join(SCHEMES)}, got {scheme!r}")
    check_output_file(out, "--out", (".npz",))
    cfg = SelfLabelConfig(
        minutes=minutes,
        beta=beta,
        sizes=_sizes(sizes),
        eval_every_s=eval_every,
        seed=seed,
        device=device,
        threads=threads,
        scheme=scheme,
        dim=dim,
        rounds=rounds,
        heads=heads,
        lr=lr,
        init=None if init is None else str(init),
        mirror=mirror,
        replay=replay,
        updates=updates,
        ema=ema,
        validation_per_size=validation_per_size,
        workers=workers,
        max_instances=instances,
        eval_every_instances=eval_every_instances,
        improve=improve,
    )
    check_config(cfg)
    bar = TrainProgress(1000, 0, console, enabled=not json_out)
    try:

        def progress(share: float, point: dict[str, float]) -> None:
            bar.update(int(1000 * share))
            bar.kpi(
                f"{int(point['instances'])} instances, greedy/LB "
                f"{point['validation_greedy_ratio']:.3f}"
            )

        result = train_selflabel(cfg, out, on_progress=progress)
    finally:
        bar.close()
    data = {
        "weights": str(out),
        "best_validation_greedy_ratio": round(result.best_validation, 4),
        "instances": result.instances,
        "wall_time_s": round(result.wall_time_s, 1),
        "mlflow_run_id": result.run_id,
    }
    if json_out:
        echo_json(data)
        return
    console.print(
        f"weights written to {out}: greedy makespan / lower bound {result.best_validation:.3f}"
        f" on the validation set, {result.instances} instances in "
        f"{result.wall_time_s / 60:.1f} min (MLflow run {result.run_id})",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``train-jobshop`` to the ``taktline`` app."""
    app.command("train-jobshop")(train_jobshop)
