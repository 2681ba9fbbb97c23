"""``taktline imitate LINE``: a network that imitates the lookahead (DAgger), judged honestly.

``taktline imitate LINE --expert 'LOOKAHEAD(...)' [--minutes 30] [--iterations N]
[--episodes-per-iter E] [--out DIR] [--register NAME] [--eval-episodes N] [--json]``
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from taktline.errors import PolicyError

err_console = Console(stderr=True)


def imitate(
    line: Annotated[str, typer.Argument(help="a bundled line name or a spec file")],
    expert: Annotated[
        str, typer.Option(help="the policy imitated, e.g. 'LOOKAHEAD(base=SAME,horizon=60,k=8)'")
    ] = "LOOKAHEAD(base=SAME,horizon=60,k=8)",
    minutes: Annotated[
        float, typer.Option(help="wall-time budget of collection and training")
    ] = 30.0,
    iterations: Annotated[
        int, typer.Option(help="DAgger iterations (0: as many as the budget allows)")
    ] = 0,
    episodes_per_iter: Annotated[int, typer.Option(help="episodes rolled out per iteration")] = 2,
    beta: Annotated[
        float, typer.Option(help="iteration i takes the expert's action with prob. beta**i")
    ] = 0.5,
    out: Annotated[Path, typer.Option(help="where the policy bundle is saved")] = Path(
        "imitation_bundle"
    ),
    register: Annotated[
        str | None,
        typer.Option(help="registered model name; used only if it beats the best rule"),
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of training episodes and the network")] = 0,
    rules: Annotated[
        str | None,
        typer.Option(help="baseline rules, comma-separated (default: every built-in rule)"),
    ] = None,
    eval_episodes: Annotated[int, typer.Option(help="held-out seeds of the verdict")] = 10,
    eval_seed: Annotated[int, typer.Option(help="the first held-out seed")] = 0,
    eval_minutes: Annotated[
        float | None, typer.Option(help="wall-time budget of the verdict (>= 2 rounds run)")
    ] = None,
    expert_eval: Annotated[
        bool, typer.Option("--expert-eval/--no-expert-eval", help="play the expert in the verdict")
    ] = True,
    workers: Annotated[
        int, typer.Option(help="episodes labelled in parallel as Ray tasks (RAY_ADDRESS or local)")
    ] = 1,
    network: Annotated[
        str, typer.Option(help="mlp (whole observation) or slots (one scorer over queue slots)")
    ] = "mlp",
    departure_weight: Annotated[
        float,
        typer.Option(help="loss weight of states where the expert departs from its base rule"),
    ] = 1.0,
    weight_by_gain: Annotated[
        bool,
        typer.Option(
            "--weight-by-gain/--no-weight-by-gain",
            help="scale each departure's weight by the expert's estimated gain",
        ),
    ] = False,
    save_states: Annotated[
        Path | None, typer.Option(help="write the labelled states here (.npz) to reuse them")
    ] = None,
    states: Annotated[
        Path | None,
        typer.Option(help="start from states a run saved (--save-states; same line and expert)"),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Imitate a slow expert (the lookahead) with a fast network: DAgger over the learner's own
    states, then the held-out paired verdict against the best rule; registered only if it won."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from taktline.training.imitation import ImitationConfig
    from taktline.training.imitation import imitate as run_imitation

    names = None
    if rules is not None:
        names = tuple(r.strip().upper() for r in rules.split(",") if r.strip())
        if not names:
            raise PolicyError(f"--rules: no rule named in {rules!r}; e.g. --rules FIFO,SPT,SAME")
    if save_states is not None:
        from taktline.envs.files import check_output_file

        check_output_file(save_states, "--save-states", (".npz",))
    if states is not None and not states.is_file():
        raise PolicyError(f"--states: no file at {states}; pass a .npz written by --save-states")
    if out.exists() and not out.is_dir():
        raise PolicyError(f"--out: {out} is a file; give a directory for the bundle")
    cfg = ImitationConfig(
        line=line,
        expert=expert,
        minutes=minutes,
        iterations=iterations,
        episodes_per_iter=episodes_per_iter,
        beta=beta,
        seed=seed,
        eval_episodes=eval_episodes,
        eval_seed=eval_seed,
        eval_minutes=eval_minutes,
        eval_expert=expert_eval,
        rules=names,
        register=register,
        out=str(out),
        departure_weight=departure_weight,
        weight_by_gain=weight_by_gain,
        network=network,
        workers=workers,
        save_states=None if save_states is None else str(save_states),
        states=None if states is None else str(states),
    )
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[kpi]}"),
        console=err_console,
        transient=True,
        disable=json_out,
    ) as progress:
        train = progress.add_task("imitate (budget)", total=1.0, kpi="")
        verdict = progress.add_task("verdict (rounds)", total=eval_episodes, kpi="", visible=False)

        def on_progress(used: float, m: dict[str, float]) -> None:
            kpi = (
                f"iteration {int(m['iteration'])}: {int(m['dataset_size'])} states, held-out "
                f"accuracy {m['heldout_accuracy']:.3f} (majority {m['majority_accuracy']:.3f})"
            )
            progress.update(train, completed=used, kpi=kpi)

        def on_round(done: int, total: int) -> None:
            progress.update(train, completed=1.0)
            progress.update(verdict, completed=done, visible=True)

        result = run_imitation(cfg, on_progress, on_round)
    if json_out:
        from taktline.jsonout import to_json

        typer.echo(to_json(result.as_dict()))
        return
    _print(result)


def _print(result: object) -> None:
    from taktline.cli_compare import _print as print_comparison
    from taktline.tables import terminal_console
    from taktline.training.imitation import ImitationResult
    from taktline.training.run import verdict_line

    assert isinstance(result, ImitationResult)
    console = terminal_console()
    last = result.history[-1]
    tp = result.throughput
    console.print(
        f"{len(result.history)} iterations, {result.dataset_size} labelled states; held-out "
        f"accuracy {last['heldout_accuracy']:.3f} (majority class {last['majority_accuracy']:.3f}"
        f", expert's base rule {last['base_rule_accuracy']:.3f})",
        highlight=False,
    )
    console.print(
        f"throughput: {tp['env_steps_per_s']:.1f} env steps/s, {tp['labels_per_s']:.1f} expert "
        f"labels/s; wall {tp['wall_s']:.0f} s: expert {tp['share_expert']:.0%}, env "
        f"{tp['share_env']:.0%}, network {tp['share_network']:.0%}",
        highlight=False,
    )
    print_comparison(result.comparison, None, result.run_id)
    if result.verdict is not None:
        console.print(verdict_line(result.verdict), highlight=False, soft_wrap=True)
    if result.model_version is not None:
        console.print(f"registered version {result.model_version} as @candidate", highlight=False)
    elif result.verdict is not None and result.verdict["won"]:
        console.print("it won, but no --register NAME was given: not registered", highlight=False)
    else:
        console.print("not registered: it did not beat the best rule", highlight=False)
    console.print(f"bundle: {result.bundle_dir}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``imitate`` to the ``taktline`` app."""
    app.command("imitate")(imitate)
