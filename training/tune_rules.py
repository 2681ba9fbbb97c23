"""Tune a rule family's parameters on the twin: Ray Tune with Optuna's TPE and ASHA.

Every trial simulates the same seeds (common random numbers); one replication is one training
iteration, so ASHA stops a poor parameter set after a few replications. The search starts from
the family's defaults (the plain rule), and the final choice is made on **held-out seeds**: the
best tuned rule plays the best untuned rule paired; if it is not better on their mean, the
untuned rule is kept. So a tuned rule is never worse than the best untuned one on the seeds it
is judged on. MLflow: one parent run with the trials, the best parameters and the verdict;
a model version (its ``rule`` tag is what ``serve --policy NAME=rule:...`` serves) is
registered only when the tuned rule wins (paired 95% CI above zero).

Families: ``ATC``, ``SAME``, ``SLACKHYB`` (dispatching, :mod:`taktline.agents.tuned`) and
``CONWIP`` (the release WIP cap, dispatching with a fixed rule).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from taktline.agents.rules import get_release_rule, get_rule
from taktline.agents.tuned import FAMILIES, tuned_rule
from taktline.envs.priorities import DISPATCH_RULES
from taktline.errors import PolicyError, SpecError

TUNABLE = (*FAMILIES, "CONWIP")
HOLDOUT_SEED = 100_000  # held-out seeds start here; search seeds start at ``seed``
_NEVER = 0  # SAME's threshold 0 / slack None in a trial config: "never switch for this reason"


def search_space(family: str, spec: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Tune's parameter space for ``family`` and the point of its defaults (searched first)."""
    from ray import tune

    if family == "CONWIP":
        top = max(4, 4 * sum(s.machines for s in spec.stations))
        return {"wip": tune.randint(1, top + 1)}, {"wip": max(1, top // 2)}
    space: dict[str, Any] = {}
    start: dict[str, Any] = {}
    for p in FAMILIES[family]:
        if p.kind == "choice":
            space[p.name] = tune.choice(list(p.choices))
            start[p.name] = p.default
        elif family == "SAME" and p.name == "threshold":
            space[p.name] = tune.choice([_NEVER, 2, 3, 4, 6, 8, 12, 16, 24, 32])
            start[p.name] = _NEVER
        elif family == "SAME" and p.name == "slack":
            space[p.name] = tune.choice([-1e9, -60.0, -30.0, -10.0, 0.0, 10.0, 30.0, 60.0])
            start[p.name] = -1e9
        elif p.log:
            space[p.name] = tune.loguniform(p.low, p.high)
            start[p.name] = p.default
        else:
            space[p.name] = tune.uniform(p.low, p.high)
            start[p.name] = p.default
    return space, start


def candidate(family: str, config: dict[str, Any], dispatch: str) -> tuple[str, str]:
    """``(dispatching rule, release rule)`` names of one trial's parameters."""
    if family == "CONWIP":
        return get_rule(dispatch).name, f"CONWIP({int(config['wip'])})"
    params = dict(config)
    if family == "SAME":
        if params.get("threshold") == _NEVER:
            params["threshold"] = math.inf
        if float(params.get("slack", -math.inf)) <= -1e9:
            params["slack"] = -math.inf
    return tuned_rule(family, **params).name, "IMMEDIATE"


def profit(line: str, rule: str, release: str, seed: int) -> float:
    """The twin's profit (``kpis().profit``) of one replication over the spec's horizon."""
    from taktline.envs.spec import load_spec
    from taktline.envs.twin import Twin

    spec = load_spec(line)
    twin = Twin(spec, seed, get_rule(rule), get_release_rule(release))
    twin.run()
    return float(twin.kpis().profit)


def _trial(config: dict[str, Any], line: str, family: str, dispatch: str, seeds: list[int]) -> Any:
    """A Tune trainable: one replication per iteration, reporting the running mean profit."""
    from ray import tune

    rule, release = candidate(family, config, dispatch)
    total = 0.0
    for i, s in enumerate(seeds):
        total += profit(line, rule, release, s)
        tune.report({"profit": total / (i + 1), "replications": i + 1, "rule": rule})


def _paired(tuned: list[float], base: list[float]) -> dict[str, Any]:
    from taktline.training.evaluate import paired_test

    d = np.asarray(tuned) - np.asarray(base)
    return paired_test(d, higher_is_better=True)


def optimize(
    line: str,
    family: str,
    trials: int = 20,
    replications: int = 8,
    holdout: int = 20,
    minutes: float | None = None,
    seed: int = 0,
    dispatch: str = "FIFO",
    model_name: str | None = None,
    experiment: str = "taktline-optimize",
    console: Console | None = None,
) -> dict[str, Any]:
    """Search ``family``'s parameters on ``line``; returns the result (see the module doc).

    Args:
        line: A bundled line name or a spec file.
        family: ``ATC``, ``SAME``, ``SLACKHYB`` or ``CONWIP``.
        trials: Parameter sets to try (the defaults are the first).
        replications: Seeds per trial (ASHA's iterations), from ``seed`` on.
        holdout: Held-out seeds for the final paired comparison.
        minutes: Wall-clock limit of the search (``None``: none).
        seed: First search seed.
        dispatch: The dispatching rule used with the ``CONWIP`` family.
        model_name: Registered model name (default ``<line>-<family>``).
        experiment: MLflow experiment.
        console: Where to print.
    """
    import mlflow
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from taktline.envs.spec import bundled_lines, load_spec
    from taktline.training import tracking
    from taktline.training.rllib_backend import connect
    from taktline.training.run import verdict_line, verdict_tags

    console = console or Console(stderr=True)
    fam = family.strip().upper()
    if fam not in TUNABLE:
        raise PolicyError(f"--family: must be one of {', '.join(TUNABLE)}, got {family!r}")
    for name, value, low in (
        ("--trials", trials, 1),
        ("--replications", replications, 1),
        ("--holdout", holdout, 2),
    ):
        if value < low:
            raise PolicyError(f"{name}: must be >= {low}, got {value}")
    if minutes is not None and not minutes > 0:
        raise PolicyError(f"--minutes: must be > 0, got {minutes}")
    spec = load_spec(line)
    if spec.horizon is None:
        raise SpecError(f"line {spec.name!r}: optimize needs a spec with a horizon")
    ref = line if line in bundled_lines() else str(Path(line).resolve())
    dispatch = get_rule(dispatch).name
    search_seeds = list(range(seed, seed + replications))
    held_out = list(range(HOLDOUT_SEED + seed, HOLDOUT_SEED + seed + holdout))
    space, start = search_space(fam, spec)
    uri = tracking.configure()
    console.print(tracking.describe_store(uri))
    connect(None, console)
    t0 = time.perf_counter()
    exp_id = tracking.ensure_experiment(experiment)
    name = model_name or f"{spec.name}-{fam.lower()}"
    with mlflow.start_run(experiment_id=exp_id, run_name=f"optimize {spec.name} {fam}") as run:
        mlflow.set_tags({"taktline.optimize": fam, "taktline.line": spec.name})
        mlflow.log_params(
            {
                "line": spec.name,
                "family": fam,
                "trials": trials,
                "replications": replications,
                "holdout": holdout,
                "seed": seed,
                "dispatch": dispatch if fam == "CONWIP" else "",
                "minutes": minutes or "",
            }
        )
        tuner = tune.Tuner(
            tune.with_parameters(
                _trial, line=ref, family=fam, dispatch=dispatch, seeds=search_seeds
            ),
            param_space=space,
            tune_config=tune.TuneConfig(
                metric="profit",
                mode="max",
                num_samples=trials,
                search_alg=OptunaSearch(points_to_evaluate=[start], seed=seed),
                scheduler=ASHAScheduler(
                    time_attr="replications",
                    max_t=replications,
                    grace_period=max(1, replications // 4),
                    reduction_factor=2,
                ),
                time_budget_s=None if minutes is None else 60.0 * minutes,
            ),
            run_config=tune.RunConfig(name=f"optimize-{spec.name}-{fam}", verbose=0),
        )
        grid = tuner.fit()
        rows = []
        for res in grid:
            m = res.metrics or {}
            if m.get("profit") is None:
                continue
            rows.append(
                {
                    "rule": m["rule"],
                    "profit": float(m["profit"]),
                    "replications": int(m["replications"]),
                    "config": dict(res.config or {}),
                }
            )
        full = [r for r in rows if r["replications"] == replications]
        if not full:
            raise SpecError(f"optimize {spec.name} {fam}: no trial ran all {replications} seeds")
        best = max(full, key=lambda r: r["profit"])
        tuned_rule_name, tuned_release = candidate(fam, best["config"], dispatch)
        mlflow.log_dict({"trials": rows}, "trials.json")
        mlflow.log_params({f"best.{k}": v for k, v in best["config"].items()})
        mlflow.set_tag("best_rule", f"{tuned_rule_name}|{tuned_release}")
        tracking.log_metrics({"search.best_profit": best["profit"]}, 0)
        # the untuned peers: every plain rule (release: IMMEDIATE), on the search seeds first
        if fam == "CONWIP":
            peers = [(dispatch, "IMMEDIATE")]
        else:
            peers = [(r, "IMMEDIATE") for r in DISPATCH_RULES]
        peer_means = {p: float(np.mean([profit(ref, *p, s) for s in search_seeds])) for p in peers}
        untuned = max(peer_means, key=lambda p: peer_means[p])
        tuned_values = [profit(ref, tuned_rule_name, tuned_release, s) for s in held_out]
        base_values = [profit(ref, *untuned, s) for s in held_out]
        test = _paired(tuned_values, base_values)
        label = tuned_rule_name if fam != "CONWIP" else f"{tuned_rule_name}+{tuned_release}"
        base_label = untuned[0] if fam != "CONWIP" else f"{untuned[0]}+{untuned[1]}"
        lo, hi = test["diff_ci_low"], test["diff_ci_high"]
        verdict = {
            "won": lo > 0,
            "verdict": "better" if lo > 0 else ("worse" if hi < 0 else "no difference"),
            "policy": label,
            "baseline": base_label,
            "metric": "profit",
            "higher_is_better": True,
            "policy_mean": float(np.mean(tuned_values)),
            "baseline_mean": float(np.mean(base_values)),
            "delta": test["diff_mean"],
            "ci95": [lo, hi],
            "p": test["p_ttest"],
            "n": holdout,
            "seeds": held_out,
        }
        keep_tuned = test["diff_mean"] > 0
        chosen = (tuned_rule_name, tuned_release) if keep_tuned else untuned
        chosen_label = label if keep_tuned else base_label
        mlflow.set_tags({**verdict_tags(verdict), "chosen": chosen_label})
        tracking.log_metrics(
            {
                "holdout.tuned_profit": verdict["policy_mean"],
                "holdout.untuned_profit": verdict["baseline_mean"],
                "holdout.delta": verdict["delta"],
                "holdout.delta_ci_low": lo,
                "holdout.delta_ci_high": hi,
            },
            0,
        )
        mlflow.log_dict(
            {"verdict": verdict, "chosen": {"rule": chosen[0], "release": chosen[1]}},
            "verdict.json",
        )
        version = None
        if verdict["won"]:
            version = _register_rule(name, chosen, run.info.run_id, verdict)
        line_text = verdict_line(verdict)
        console.print(line_text, markup=False, highlight=False)
    return {
        "line": spec.name,
        "family": fam,
        "run_id": run.info.run_id,
        "best": best,
        "trials_run": len(rows),
        "tuned": {"rule": tuned_rule_name, "release": tuned_release},
        "untuned": {"rule": untuned[0], "release": untuned[1]},
        "chosen": {"rule": chosen[0], "release": chosen[1]},
        "serve_ref": f"rule:{chosen[0]}",
        "verdict": verdict,
        "model_name": name if version else None,
        "model_version": version,
        "wall_s": time.perf_counter() - t0,
    }


def _register_rule(name: str, chosen: tuple[str, str], run_id: str, verdict: dict[str, Any]) -> str:
    """A model version that *is* a rule reference: its source is the run's ``verdict.json``
    folder and its ``rule`` tag the ``rule:NAME`` reference serving takes."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from taktline.training.run import verdict_tags

    client = mlflow.MlflowClient()
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = mlflow.get_run(run_id).info.artifact_uri
    tags = {
        **verdict_tags(verdict),
        "rule": f"rule:{chosen[0]}",
        "release": chosen[1],
        "run_id": run_id,
        "kind": "rule",
    }
    version = client.create_model_version(name, source, run_id=run_id, tags=tags)
    client.set_registered_model_alias(name, "candidate", str(version.version))
    return str(version.version)
