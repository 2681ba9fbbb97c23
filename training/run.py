"""Run bookkeeping shared by the training backends (SB3 and RLlib).

A :class:`Run` keeps the budget, evaluates greedily on fixed cases, keeps the best policy as a
bundle, and :func:`finish` compares it with the rules, draws the pictures, logs the MLflow model
and registers it. The backends add how a model is exported and checkpointed.
"""

from __future__ import annotations

import abc
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from rich.console import Console

from taktline.agents.bundle import PolicyBundle, file_sha256, make_lineage
from taktline.agents.policies import NeuralPolicy, RulePolicy
from taktline.errors import PolicyError, SpecError, TaktlineError
from taktline.training import tracking
from taktline.training.config import TrainConfig
from taktline.training.evaluate import (
    DEFAULT_METRIC,
    Case,
    Evaluation,
    evaluate_cases,
    render_table,
)
from taktline.training.progress import TrainProgress

STATE_FILE = "state.json"
"""A checkpoint's :class:`RunState` file (written last: it commits the checkpoint)."""


def make_env(env_id: str, env_kwargs: dict[str, Any]) -> gym.Env[Any, Any]:
    """One training env (importable, so subprocesses can build it)."""
    import taktline.envs  # noqa: F401  (registers the ids in a fresh subprocess)

    return gym.make(env_id, disable_env_checker=True, **env_kwargs)


def check_env(cfg: TrainConfig) -> None:
    """Build the training and evaluation envs once, here, before any worker process starts.

    A bad ``env.kwargs`` value would otherwise fail in every ``SubprocVecEnv`` or Ray worker,
    each with its own traceback; here it is one :class:`SpecError` naming the field.

    Raises:
        SpecError: ``env.kwargs`` (or ``eval.env_kwargs``) the env cannot be built with.
    """
    checks = [("env.kwargs", dict(cfg.env.kwargs))]
    if cfg.eval.env_kwargs:
        checks.append(("eval.env_kwargs", {**cfg.env.kwargs, **cfg.eval.env_kwargs}))
    for where, kwargs in checks:
        try:
            make_env(cfg.env.id, kwargs).close()
        except TaktlineError as exc:
            raise SpecError(f"{where} of {cfg.env.id}: {exc}") from None
        except (TypeError, ValueError, KeyError, LookupError) as exc:
            text = str(exc).split(" was raised from the environment creator")[0]
            raise SpecError(
                f"{where} {kwargs!r}: {cfg.env.id} cannot be built ({text}); see "
                f"`taktline envs` for its parameters"
            ) from None


# ---- checkpoint integrity ------------------------------------------------------------------------
def _checkpoint_files(folder: Path) -> list[Path]:
    """The files of a checkpoint folder that a resume reads (not the state file, not the
    hidden temporaries of an interrupted write)."""
    files = (p for p in folder.rglob("*") if p.is_file())
    return sorted(
        p
        for p in files
        if p.relative_to(folder).as_posix() != STATE_FILE
        and not p.relative_to(folder).parts[0].startswith(".")
    )


def checkpoint_digests(folder: Path) -> dict[str, str]:
    """The sha256 of every checkpoint file in ``folder``, by path relative to it."""
    return {p.relative_to(folder).as_posix(): file_sha256(p) for p in _checkpoint_files(folder)}


def verify_checkpoint(folder: Path, state: RunState) -> None:
    """Check every checkpoint file against the digest the state file recorded, before any of
    them is unpickled (SB3's ``.zip``, ``VecNormalize``'s pickle and RLlib's state are).

    Raises:
        PolicyError: naming the file and both digests on a mismatch, a recorded file that is
            missing, a file nobody recorded, or a state file without digests.
    """
    if not state.files:
        raise PolicyError(
            f"{folder / STATE_FILE}: records no checkpoint digests, so the checkpoint cannot be "
            "verified before unpickling; resume only checkpoints written by this taktline, or "
            "start a new run"
        )
    found = checkpoint_digests(folder)
    for rel, want in sorted(state.files.items()):
        got = found.get(rel)
        if got is None:
            raise PolicyError(f"checkpoint {folder / rel}: missing (recorded sha256 {want})")
        if got != want:
            raise PolicyError(
                f"checkpoint {folder / rel}: sha256 {got} differs from the recorded {want}; the "
                "file was changed after the checkpoint was written: not loading it"
            )
    extra = sorted(set(found) - set(state.files))
    if extra:
        raise PolicyError(
            f"checkpoint {folder}: files not recorded in {STATE_FILE}: {', '.join(extra)}; "
            "remove them or resume from an untouched checkpoint"
        )


@dataclass
class RunState:
    """What a checkpoint remembers besides the model (``state.json``)."""

    num_timesteps: int = 0
    elapsed_s: float = 0.0
    best_mean: float | None = None
    best_step: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    train_curve: list[tuple[int, float]] = field(default_factory=list)
    baselines: dict[str, float] = field(default_factory=dict)
    """The rules' means on the evaluation cases (logged once per run, kept for a resume)."""
    files: dict[str, str] = field(default_factory=dict)
    """sha256 of every checkpoint file (verified before a resume unpickles any of them)."""
    slot: str = ""
    """The run-artifact folder (``checkpoints/a`` or ``/b``) holding this checkpoint's files:
    uploads alternate, so a kill during one leaves the committed checkpoint's files intact."""

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> RunState:
        data = json.loads(path.read_text())
        data["train_curve"] = [tuple(x) for x in data.get("train_curve", [])]
        return cls(**data)


@dataclass
class TrainResult:
    """The outcome of :func:`train`."""

    run_id: str
    num_timesteps: int
    best_bundle: Path | None
    best_mean: float | None
    metric: str
    model_uri: str | None = None
    model_version: str | None = None
    evaluation: dict[str, Any] | None = None
    verdict: dict[str, Any] | None = None
    """The held-out paired comparison with the best rule (see :func:`verdict_of`)."""


class Run(abc.ABC):
    """State and actions of one training run, whatever the backend.

    A backend subclasses it with :meth:`network_of`, :meth:`checkpoint` and :attr:`backend`;
    the budget, the evaluation on fixed cases, the best bundle and the final report are shared.
    """

    def __init__(self, cfg: TrainConfig, run_id: str, state: RunState, console: Console) -> None:
        self.cfg = cfg
        self.run_id = run_id
        self.state = state
        self.console = console
        self.dir = Path(cfg.output_dir) / run_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metric, self.higher = DEFAULT_METRIC.get(cfg.env.id, ("return", True))
        eval_kwargs = {**cfg.env.kwargs, **cfg.eval.env_kwargs}
        self.cases = [
            Case(f"seed {cfg.eval.seed + i}", eval_kwargs, cfg.eval.seed + i)
            for i in range(cfg.eval.episodes)
        ]
        held_out = cfg.eval.held_out_seeds()
        # seeds never used to pick the best checkpoint: the final verdict is played on them
        self.held_out_cases = [Case(f"seed {s}", eval_kwargs, s) for s in held_out]
        every = cfg.eval.every_steps
        self.next_eval = (state.num_timesteps // every + 1) * every
        ck = cfg.checkpoint.every_steps
        self.next_checkpoint = (state.num_timesteps // ck + 1) * ck
        self.started = time.monotonic()
        self.network_spec: dict[str, Any] = {}
        self.spaces: tuple[gym.spaces.Space[Any], gym.spaces.Discrete] | None = None
        self.spec_hash: str | None = None
        self.progress = TrainProgress(
            cfg.budget.total_timesteps, state.num_timesteps, console, enabled=cfg.progress
        )

    # -- budget ------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.state.elapsed_s + (time.monotonic() - self.started)

    def out_of_time(self) -> bool:
        limit = self.cfg.budget.max_minutes
        return limit is not None and self.elapsed() >= 60.0 * limit

    # -- bundles -----------------------------------------------------------------------------
    backend = "?"
    """The backend's name in a bundle's lineage."""

    @abc.abstractmethod
    def network_of(self, model: Any) -> torch.nn.Module:
        """The policy network of ``model`` as a plain torch module (the backend exports it)."""

    def lineage_of(self, model: Any) -> dict[str, Any]:
        """Backend-specific lineage of a bundle of ``model`` (algorithm, iteration...)."""
        return {}

    def bundle(self, model: Any, step: int) -> PolicyBundle:
        """The policy of ``model`` at ``step`` as a bundle with the run's lineage."""
        assert self.spaces is not None
        return PolicyBundle(
            env_id=self.cfg.env.id,
            env_kwargs=dict(self.cfg.env.kwargs),
            spec_hash=self.spec_hash,
            observation_space=self.spaces[0],
            action_space=self.spaces[1],
            network=self.network_of(model),
            network_spec=self.network_spec,
            lineage=make_lineage(
                name=self.cfg.name,
                config=self.cfg.model_dump(mode="json"),
                seed=self.cfg.seed,
                mlflow_run_id=self.run_id,
                backend=self.backend,
                num_timesteps=step,
                **self.lineage_of(model),
            ),
        )

    # -- evaluation --------------------------------------------------------------------------
    def evaluate(self, model: Any, step: int) -> float:
        """Greedy evaluation on the fixed cases; keeps the best *trained* bundle.

        The step-0 evaluation (the initial random network) is logged as the learning curve's
        start but never becomes the best: only a network that trained can be registered.
        """
        bundle = self.bundle(model, step)
        ev = evaluate_cases(
            [NeuralPolicy(bundle, name="policy")],
            self.cfg.env.id,
            self.cases,
            self.metric,
            self.higher,
            log=False,
        )
        mean = float(np.mean(ev.values["policy"]))
        kp = ev.kpis["policy"]
        metrics = {
            f"eval.{self.metric}": mean,
            "eval.return": float(np.mean([k["return"] for k in kp])),
        }
        gaps = ev.gaps("policy")
        if gaps is not None:
            metrics["eval.gap"] = float(np.mean(gaps))
        tracking.log_metrics(metrics, step)
        self.state.history.append({"step": step, "mean": mean})
        sign = 1.0 if self.higher else -1.0
        best = self.state.best_mean
        if step > 0 and (best is None or sign * mean > sign * best):
            self.state.best_mean, self.state.best_step = mean, step
            target = self.dir / "best_bundle"
            if target.exists():
                shutil.rmtree(target)
            bundle.save(target)
        shown = "—" if self.state.best_mean is None else f"{self.state.best_mean:.1f}"
        self.progress.kpi(f"{self.metric} {mean:.1f} (best {shown})")
        return mean

    # -- checkpoints -------------------------------------------------------------------------
    @abc.abstractmethod
    def checkpoint(self, model: Any, step: int) -> None:
        """Save the model and :attr:`state` so that ``resume`` continues from ``step``."""

    def _stamp(self, step: int) -> None:
        """Bring :attr:`state` to ``step`` and restart the elapsed-time clock (checkpoints)."""
        self.state.num_timesteps = step
        self.state.elapsed_s = self.elapsed()
        self.started = time.monotonic()

    def seal(self, folder: Path) -> None:
        """Record the digests of the checkpoint files in ``folder`` and the artifact slot they
        go to, and write the state file (last: it commits the checkpoint)."""
        self.state.files = checkpoint_digests(folder)
        self.state.slot = "b" if self.state.slot == "a" else "a"
        self.state.save(folder / STATE_FILE)


CHECKPOINT_DIR = "checkpoints"
"""A run's checkpoint: ``<output_dir>/<run id>/checkpoints`` and the run artifacts of that name."""


def swap_in(tmp: Path, final: Path) -> None:
    """Replace the checkpoint folder ``final`` by the complete folder ``tmp``.

    A kill in the middle leaves ``final`` or its ``.checkpoints.old`` predecessor whole
    (:func:`fetch_checkpoint` looks at both), never a mix of two checkpoints.
    """
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def fresh_checkpoint_folder(final: Path) -> Path:
    """An empty ``.checkpoints.tmp`` beside ``final`` to write the next checkpoint into."""
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def fetch_checkpoint(run_id: str, local: Path) -> tuple[Path, RunState]:
    """The run's last committed checkpoint folder and its state, verified.

    Local (``<local>/checkpoints``, or the predecessor a kill mid-swap left) if present, else
    downloaded from the run's artifacts: the state file first, then exactly the files it
    records, from the slot it names. Every file is checked against its digest before a caller
    unpickles anything.

    Raises:
        PolicyError: no checkpoint anywhere, or one that fails :func:`verify_checkpoint`.
    """
    for name in (CHECKPOINT_DIR, f".{CHECKPOINT_DIR}.old"):
        if (local / name / STATE_FILE).is_file():
            folder = local / name
            state = RunState.load(folder / STATE_FILE)
            verify_checkpoint(folder, state)
            return folder, state
    import mlflow

    try:
        data = mlflow.artifacts.load_dict(f"runs:/{run_id}/{CHECKPOINT_DIR}/{STATE_FILE}")
    except Exception as exc:
        raise PolicyError(
            f"--resume {run_id}: no checkpoint locally ({local / CHECKPOINT_DIR}) or in the "
            "run's artifacts; the run stopped before its first checkpoint (lower "
            "checkpoint.every_steps)"
        ) from exc
    folder = local / CHECKPOINT_DIR
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    state = RunState(**{**data, "train_curve": [tuple(x) for x in data.get("train_curve", [])]})
    state.save(folder / STATE_FILE)
    source = f"{CHECKPOINT_DIR}/{state.slot}" if state.slot else CHECKPOINT_DIR
    for rel in state.files:
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        got = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=f"{source}/{rel}", dst_path=str(folder / ".download")
        )
        Path(got).replace(target)
    shutil.rmtree(folder / ".download", ignore_errors=True)
    verify_checkpoint(folder, state)
    return folder, state


def publish_checkpoint(
    folder: Path, artifact_path: str, metrics: dict[str, float], step: int
) -> None:
    """Upload a checkpoint folder to the run's artifacts, its state file last.

    A resume from the tracking store reads the state file first (the step to resume at and
    the digests of its files). The files go to the state's slot (``<artifact_path>/a`` or
    ``/b``, alternating), the state file to ``<artifact_path>``, after the files and the
    ``checkpoint.*`` metrics: it never names a step whose files or metrics a kill kept from
    the store, and a kill before it leaves the previous checkpoint's files untouched.
    """
    import mlflow

    slot = str(json.loads((folder / STATE_FILE).read_text()).get("slot") or "")
    target = f"{artifact_path}/{slot}" if slot else artifact_path
    for path in sorted(folder.iterdir()):
        if path.name == STATE_FILE or path.name.startswith("."):
            continue
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=f"{target}/{path.name}")
        else:
            mlflow.log_artifact(str(path), artifact_path=target)
    tracking.log_metrics(metrics, step)
    mlflow.log_artifact(str(folder / STATE_FILE), artifact_path=artifact_path)


def log_baselines(run: Run) -> None:
    """The rules' mean on the evaluation cases (horizontal lines of the learning curve).

    Once per run: a resumed run has them in its state and logs nothing again.
    """
    names = run.cfg.eval.baselines
    if not names or run.state.baselines:
        return
    ev = evaluate_cases(
        [RulePolicy(n) for n in names], run.cfg.env.id, run.cases, run.metric, run.higher, log=False
    )
    run.state.baselines = {row["policy"]: row["mean"] for row in ev.summary()}
    tracking.log_metrics(
        {f"baseline.{k}.{run.metric}": v for k, v in run.state.baselines.items()}, 0
    )


def verdict_of(ev: Evaluation, policy: str, rules: list[str]) -> dict[str, Any] | None:
    """The paired comparison of ``policy`` with the best of ``rules`` on the cases of ``ev``.

    ``won`` only when the paired 95% CI of ``policy - rule`` excludes zero in the policy's
    favour. ``None`` without rules (nothing to beat, so nothing is ever promoted).
    """
    if not rules:
        return None
    sign = 1.0 if ev.higher_is_better else -1.0
    rule = max(rules, key=lambda r: sign * float(np.mean(ev.values[r])))
    row = next(r for r in ev.paired(reference=rule) if r["policy"] == policy)
    return {
        "won": row["verdict"] == "better",
        "verdict": row["verdict"],
        "policy": policy,
        "baseline": rule,
        "metric": ev.metric,
        "higher_is_better": ev.higher_is_better,
        "policy_mean": float(np.mean(ev.values[policy])),
        "baseline_mean": float(np.mean(ev.values[rule])),
        "delta": row["diff_mean"],
        "ci95": [row["diff_ci_low"], row["diff_ci_high"]],
        "p": row["p_ttest"],
        "n": row["n"],
        "seeds": [c.seed for c in ev.cases],
    }


def verdict_line(verdict: dict[str, Any]) -> str:
    """One line: who won on how many held-out seeds, with the numbers."""
    lo, hi = verdict["ci95"]
    numbers = (
        f"{verdict['metric']} {verdict['policy_mean']:,.1f} vs {verdict['baseline_mean']:,.1f}, "
        f"Δ {verdict['delta']:+,.1f} (95% CI {lo:+,.1f} .. {hi:+,.1f}), p {verdict['p']:.3g}, "
        f"n {verdict['n']} held-out seeds"
    )
    if verdict["won"]:
        return f"{verdict['policy']} beats the best rule {verdict['baseline']}: {numbers}"
    return f"{verdict['policy']} does not beat the best rule {verdict['baseline']}: {numbers}"


def verdict_tags(verdict: dict[str, Any] | None) -> dict[str, str]:
    """The verdict as model-version (and run) tags."""
    if verdict is None:
        return {"verdict": "none: no eval.baselines to compare with"}
    lo, hi = verdict["ci95"]
    return {
        "verdict": "won" if verdict["won"] else "lost",
        "baseline": verdict["baseline"],
        "metric": verdict["metric"],
        "delta": f"{verdict['delta']:.6g}",
        "ci95": f"[{lo:.6g}, {hi:.6g}]",
        "p": f"{verdict['p']:.4g}",
        "n": str(verdict["n"]),
        "seeds": f"{min(verdict['seeds'])}..{max(verdict['seeds'])}",
    }


def _record_verdict(best_dir: Path, verdict: dict[str, Any] | None, out: Path) -> Path:
    """A copy of the best bundle whose lineage carries the verdict (``bundle.json`` shows it)."""
    bundle = PolicyBundle.load(best_dir)
    bundle.lineage["verdict"] = verdict_tags(verdict) if verdict is None else dict(verdict)
    if out.exists():
        shutil.rmtree(out)
    return bundle.save(out)


def finish(cfg: TrainConfig, run: Run, steps: int) -> TrainResult:
    """The held-out verdict, pictures, the MLflow model and its registration.

    The best trained checkpoint plays the best rule on held-out seeds (never the ones that
    picked it). A version is registered with the verdict as tags either way, but the alias
    (``candidate``) moves only to a network that won; a loss is said in one line.
    """
    import mlflow

    best_dir = run.dir / "best_bundle"
    result = TrainResult(
        run.run_id, steps, best_dir if best_dir.exists() else None, run.state.best_mean, run.metric
    )
    if result.best_bundle is None:
        run.console.print("no trained checkpoint was evaluated: nothing to register")
        return result
    best = NeuralPolicy(PolicyBundle.load(best_dir), name=f"{cfg.name}[greedy]")
    rules = list(cfg.eval.baselines)
    policies = [best, *(RulePolicy(n) for n in rules)]
    ev = evaluate_cases(policies, cfg.env.id, run.held_out_cases, run.metric, run.higher, log=True)
    run.console.print(render_table(ev, reference=best.name))
    result.evaluation = ev.as_dict(reference=best.name)
    result.verdict = verdict_of(ev, best.name, rules)
    tags = verdict_tags(result.verdict)
    mlflow.set_tags({f"taktline.{k}": v for k, v in tags.items()})
    if result.verdict is None:
        run.console.print(
            f"{best.name}: no eval.baselines to compare with on held-out seeds; it is not "
            "promoted (add eval.baselines, e.g. [FIFO, SPT])",
            markup=False,
        )
    else:
        run.console.print(
            verdict_line(result.verdict), markup=False, highlight=False, soft_wrap=True
        )
    fig = tracking.learning_curve_figure(
        run.state.history, run.metric, run.state.baselines, run.state.train_curve
    )
    tracking.log_figure_png(fig, "learning_curve.png")
    tracking.log_picture(cfg.env.id, run.cases[0].env_kwargs, best, run.cases[0].seed)
    probe = make_env(cfg.env.id, dict(cfg.env.kwargs))
    probe.reset(seed=run.cases[0].seed)
    base: Any = probe.unwrapped
    obs, mask = base.codec.encode(base.snapshot())
    probe.close()
    recorded = _record_verdict(best_dir, result.verdict, run.dir / "registered_bundle")
    result.model_uri = tracking.log_policy_model(recorded, obs, mask)
    if cfg.tracking.register_model:
        won = bool(result.verdict and result.verdict["won"])
        result.model_version = tracking.register(
            result.model_uri,
            cfg.name,
            cfg.tracking.alias if won else None,
            tags={
                "run_id": run.run_id,
                f"best_{run.metric}": f"{run.state.best_mean:.4g}",
                "best_step": str(run.state.best_step),
                **tags,
            },
        )
        where = f"as @{cfg.tracking.alias}" if won else "without an alias (it did not win)"
        run.console.print(f"registered {cfg.name} version {result.model_version} {where}")
    return result
