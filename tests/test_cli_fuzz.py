"""CLI fuzz: bad files, bad numbers and bad configs, across every command.

Each case runs the real ``taktline`` app in-process (``CliRunner`` on ``taktline.cli.app``, whose
command group is what turns taktline errors into one ``error:`` line and exit 2 for the console
entry point too) and asserts a non-zero exit, a message naming the offending option, field or
file problem, and no traceback — neither printed nor escaping the command. Every case fails on
validation, so nothing trains, tunes or serves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from taktline.cli import app

BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)
GOOD_SPEC = """\
name: t
stations: [{name: a}]
products: [{name: p, routing: [{station: a, processing_time: 1.0}]}]
arrivals: {kind: poisson, rate: 0.5}
horizon: 100
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder of bad inputs, shared by every case."""
    d = tmp_path_factory.mktemp("cli-fuzz")
    binary = bytes(range(256)) * 8
    for name in ("bin.yaml", "bin.txt", "bin.json"):
        (d / name).write_bytes(binary)
    (d / "latin1.yaml").write_bytes("name: Fräsen\n".encode("latin-1"))
    (d / "latin1.txt").write_bytes("2 2\n0 3 1 2 # Maß\n1 2 0 4\n".encode("latin-1"))
    (d / "empty.yaml").write_text("")
    (d / "empty.txt").write_text("")
    (d / "bomb.yaml").write_text(BOMB)
    (d / "self.yaml").write_text("a: &a [*a]\n")
    (d / "truncated.yaml").write_text(GOOD_SPEC[:60])
    (d / "list.json").write_text("[1, 2, 3]")
    (d / "deep.json").write_text("[" * 100_000)
    (d / "csv.yaml").write_text("time,event,job\n0.0,arrive,1\n")
    (d / "colour.yaml").write_text(GOOD_SPEC.replace("{name: a}", "{name: a, colour: red}"))
    (d / "warmup.yaml").write_text(GOOD_SPEC + "warmup: 100\n")
    (d / "nanrate.yaml").write_text(GOOD_SPEC.replace("rate: 0.5", "rate: .nan"))
    (d / "good.yaml").write_text(GOOD_SPEC)
    with (d / "huge.yaml").open("wb") as fh:  # sparse: 20 MB on paper, nothing on disk
        fh.truncate(20 * 1024 * 1024)
    (d / "short.txt").write_text("3 2\n0 3 1 2\n1 2 0 4\n")
    (d / "words.txt").write_text("2 2\n0 three 1 2\n1 2 0 4\n")
    (d / "machines.txt").write_text("1 1000000000\n0 5\n")
    (d / "times.txt").write_text("2 2\n0 3 1 2\n1 2 0 99999999999999999999\n")
    (d / "bad.fjs").write_text("1 2 1\n2 1 3 5\n")
    (d / "sweep_bad.yaml").write_text("name: s\nbase: bodyshop_dispatch\nbogus_field: 1\n")
    (d / "config_typo.yaml").write_text("name: x\nenvv: {id: taktline/LineDispatch-v0}\n")
    (d / "subdir").mkdir()
    return d


def invoke(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    """Exit code and everything the user would see, including any escaped exception."""
    result = CliRunner().invoke(app, args, env=env)
    text = result.output
    if result.exc_info is not None and not isinstance(result.exception, SystemExit):
        text += "".join(traceback.format_exception(*result.exc_info))
    return result.exit_code, text


# (command line with {d} for the folder of bad files, text the error must contain)
CASES: list[Any] = [
    # ---- lines, instances, envs: no input but their options
    ("lines --bogus", "--bogus"),
    ("instances --bogus", "--bogus"),
    ("envs --bogus", "--bogus"),
    # ---- validate: bad files
    ("validate {d}/bin.yaml", "binary"),
    ("validate {d}/subdir", "directory"),
    ("validate {d}/latin1.yaml", "UTF-8"),
    ("validate {d}/empty.yaml", "empty"),
    ("validate {d}/bomb.yaml", "aliases"),
    ("validate {d}/self.yaml", "refers to itself"),
    ("validate {d}/truncated.yaml", "cannot parse"),
    ("validate {d}/list.json", "(top level)"),
    ("validate {d}/deep.json", "nested too deeply"),
    ("validate {d}/csv.yaml", "(top level)"),
    ("validate {d}/huge.yaml", "limit"),
    ("validate {d}/colour.yaml", "stations[0].colour"),
    ("validate {d}/warmup.yaml", "warmup"),
    ("validate {d}/nanrate.yaml", "arrivals.rate"),
    ("validate {d}/missing.yaml", "no line called"),
    ("validate --json {d}/bin.json", "binary"),
    # ---- simulate: bad numbers, rules and paths
    ("simulate serial5 --horizon -5", "--horizon"),
    ("simulate serial5 --horizon 0", "--horizon"),
    ("simulate serial5 --horizon nan", "--horizon"),
    ("simulate serial5 --horizon inf", "--horizon"),
    ("simulate serial5 --warmup -1", "--warmup"),
    ("simulate serial5 --warmup nan", "--warmup"),
    ("simulate serial5 --warmup 600 --horizon 500", "--warmup"),
    ("simulate {d}/good.yaml --warmup 100", "--warmup"),
    ("simulate serial5 --seed -1", "--seed"),
    ("simulate serial5 -n 0", "--replications"),
    ("simulate serial5 -n -3", "--replications"),
    ("simulate serial5 -n many", "--replications"),
    ("simulate serial5 -p NOPE", "--policy"),
    ("simulate serial5 --release CONWIP(x)", "--release"),
    ("simulate serial5 --release CONWIP(0)", "--release"),
    ("simulate serial5 --release LIFO", "--release"),
    ("simulate serial5 --events /proc/taktline-fuzz.csv", "--events"),
    ("simulate serial5 --events {d}/events.txt", "--events"),
    ("simulate serial5 --events {d}/subdir", "--events"),
    ("simulate serial5 --gantt {d}/chart.bmp", "--gantt"),
    ("simulate serial5 --gantt /proc/taktline-fuzz.png", "--gantt"),
    ("simulate {d}/bin.yaml", "binary"),
    ("simulate no-such-line", "no line called"),
    # ---- solve and schedule: bad instances, numbers, rules, paths
    ("solve ft06 --time-limit -1", "--time-limit"),
    ("solve ft06 --time-limit nan", "--time-limit"),
    ("solve ft06 --time-limit 0", "--time-limit"),
    ("solve ft06 --workers 0", "--workers"),
    ("solve ft06 --gantt /proc/taktline-fuzz.png", "--gantt"),
    ("solve {d}/bin.txt", "binary"),
    ("solve {d}/machines.txt", "n_machines"),
    ("solve {d}/times.txt", "processing time"),
    ("solve ta999", "neither a bundled instance"),
    ("schedule {d}/bin.txt --rule SPT", "binary"),
    ("schedule {d}/latin1.txt --rule SPT", "UTF-8"),
    ("schedule {d}/subdir --rule SPT", "directory"),
    ("schedule {d}/empty.txt --rule SPT", "empty"),
    ("schedule {d}/short.txt --rule SPT", "header announces 3 jobs"),
    ("schedule {d}/words.txt --rule SPT", "line 2"),
    ("schedule {d}/bad.fjs --rule SPT", "line 2"),
    ("schedule {d}/machines.txt --rule SPT", "n_machines"),
    ("schedule ft06 --rule NOPE", "--rule"),
    ("schedule ft06 --rule SPT --scheme semi-active", "--scheme"),
    ("schedule ft06 --rule SPT --gantt {d}/chart.txt", "--gantt"),
    ("schedule ft06 --rule SPT --gantt /proc/taktline-fuzz.png", "--gantt"),
    ("schedule ft06", "--rule"),
    # ---- train (B): configs and options, all rejected before training starts
    ("train {d}/missing.yaml", "no such file"),
    ("train", "CONFIG"),
    ("train {d}/bin.yaml", "binary"),
    ("train {d}/subdir", "directory"),
    ("train {d}/config_typo.yaml", "envv"),
    ("train {d}/bomb.yaml", "aliases"),
    ("tune {d}/bomb.yaml", "aliases"),
    ("train bodyshop_dispatch --set noequals", "--set"),
    ("train bodyshop_dispatch --backend nope", "--backend"),
    ("train bodyshop_dispatch --address 127.0.0.1:1", "--address"),
    # ---- evaluate (B)
    ("evaluate --policy SPT --env taktline/LineDispatch-v0 --env-kwargs notjson", "--env-kwargs"),
    ("evaluate --policy SPT --env taktline/LineDispatch-v0 --env-kwargs [1]", "--env-kwargs"),
    ("evaluate --policy SPT --env taktline/LineDispatch-v0 --episodes 0", "--episodes"),
    ("evaluate --env taktline/LineDispatch-v0", "--policy"),
    ("evaluate --policy SPT --env taktline/LineDispatch-v0 --episodes 1 --seed -1", "--seed"),
    ("evaluate --policy cpsat:abc --env taktline/JobShop-v0 --episodes 1", "cpsat"),
    ("evaluate --policy {d}/subdir --env taktline/LineDispatch-v0 --episodes 1", "--policy"),
    # ---- tune (B)
    ("tune {d}/missing.yaml", "missing.yaml"),
    ("tune {d}/sweep_bad.yaml", "bogus_field"),
    ("tune {d}/bin.yaml", "binary"),
    ("tune sweep_bodyshop --set noequals", "--set"),
    # ---- demo (B): rejected before any simulation
    ("demo --replications 1", "--replications"),
    ("demo --line no-such-line --out {d}/demo-out", "no line called"),
    ("demo --seed -1 --simulate-only --replications 2 --out {d}/demo-out", "--seed"),
    ("demo --timesteps -5 --line no-such-line --out {d}/demo-out", "--timesteps"),
]


@pytest.mark.parametrize(("line", "expected"), CASES)
def test_bad_input_gives_one_clear_error_and_no_traceback(
    files: Path, line: str, expected: str
) -> None:
    args = [a.replace("{d}", str(files)) for a in line.split()]
    code, text = invoke(args)
    assert code != 0, text
    assert "Traceback" not in text, text
    assert expected in text, text


# ---- commands that need MLflow or a server process: a real store, a subprocess with a timeout
@pytest.fixture(scope="module")
def mlflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cli-fuzz-mlflow")
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("promote no-such-model 1 --alias production", "no-such-model"),
        ("promote bodyshop abc --alias production", "version abc"),
        ("train --resume 0123456789abcdef", "--resume"),
    ],
)
def test_registry_commands_reject_bad_names_with_one_error(
    mlflow_env: dict[str, str], line: str, expected: str
) -> None:
    code, text = invoke(line.split(), env=mlflow_env)
    assert code != 0, text
    assert "Traceback" not in text, text
    assert expected in text, text


def _run_subprocess(args: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    """``taktline ARGS`` through the console entry point ``main()`` in a fresh interpreter."""
    code = "import sys; from taktline.cli import main; sys.argv[0] = 'taktline'; main()"
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )
    return proc.returncode, proc.stdout + proc.stderr


KEYS = {"TAKTLINE_API_KEYS": '["k"]'}


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["serve", "--policy", "noequals"], KEYS, "--policy"),
        (["serve", "--policy", "a=b", "--shadow", "zzz"], KEYS, "--shadow"),
        (["serve", "--policy", "a=b"], {"TAKTLINE_API_KEYS": "k"}, "TAKTLINE_API_KEYS"),
        (["serve", "--policy", "a=b", "--replicas", "0"], KEYS, "--replicas"),
    ],
)
def test_serve_rejects_bad_options_before_starting(
    args: list[str], env: dict[str, str], expected: str
) -> None:
    code, text = _run_subprocess(args, env, timeout=60)
    assert code != 0, text
    assert "Traceback" not in text, text
    assert expected in text, text


# ---- the defects of issue 13, item 7, each checked for what it is
def test_alias_bomb_is_refused_within_a_memory_limit(files: Path) -> None:
    """``validate`` on a billion-laughs YAML, in a subprocess capped at 2 GiB of address space
    (so a regressed guard fails with MemoryError instead of eating the machine)."""
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "from taktline.cli import main\n"
        "sys.argv = ['taktline', 'validate', sys.argv[1]]\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(files / "bomb.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "Traceback" not in text and "MemoryError" not in text, text
    assert "expands to more than" in text, text


def test_simulate_json_is_strict_json_with_null_for_an_infinite_ci() -> None:
    result = CliRunner().invoke(
        app, ["simulate", "serial5", "-n", "1", "--horizon", "400", "--json"]
    )
    assert result.exit_code == 0, result.output

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant} in the output")

    data = json.loads(result.stdout, parse_constant=refuse)
    throughput = data["results"]["FIFO"]["throughput"]
    assert throughput["ci95"] is None  # one replication: no confidence interval
    assert throughput["mean"] > 0


def test_simulate_checks_output_paths_before_simulating(files: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.csv"
    args = ["simulate", "serial5", "-n", "1", "--horizon", "400", "--events", str(events)]
    code, text = invoke([*args, "--gantt", "/proc/taktline-fuzz.png"])
    assert code == 2, text
    assert "--gantt" in text
    assert not events.exists(), "the simulation ran (and wrote its event log) before the check"


def test_simulate_with_warmup_inside_the_horizon_still_runs(tmp_path: Path) -> None:
    events = tmp_path / "events.csv"
    args = ["simulate", "serial5", "-n", "2", "--horizon", "400", "--warmup", "50"]
    result = CliRunner().invoke(app, [*args, "--events", str(events), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["results"]["FIFO"]["window"]["mean"] == pytest.approx(350.0)
    assert events.read_text().startswith("time,event,job,station,machine")
