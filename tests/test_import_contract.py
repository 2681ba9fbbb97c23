"""The import contract of DESIGN.md and issue 14, checked on every module of the package.

Dependencies flow one way, ``serving → training → agents → envs``: a lower layer never imports
a higher one, neither at module level nor inside a function nor under ``TYPE_CHECKING``.
``core/`` (the ``taktline`` package itself) is split in two: ``taktline``,
``taktline.errors`` and ``taktline.raycluster`` sit at the bottom (every layer raises the
errors; training, the lookahead and Serve attach to Ray one way), the CLI modules and
``taktline.jsonout`` at the top (they wire every layer together, lazily). ``taktline.envs``
imports none of torch, SB3, Ray, MLflow or the FastAPI stack, anywhere; ``taktline.agents``
imports MLflow only inside functions; ``taktline.serving`` never imports SB3 or RLlib (a bundle
is served without its trainer).

The static half parses every module with :mod:`ast` (``import``, ``from ... import``, relative
imports and ``importlib.import_module("...")`` with a literal name); the runtime half imports
modules in fresh interpreters and reads ``sys.modules``, which also catches a heavy package
pulled in through a third-party one. An import-linter config would say the same; it is not a
dependency of the project, and this test also covers dynamic imports and function bodies.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

LAYERS: tuple[tuple[str, ...], ...] = (
    ("taktline", "taktline.errors", "taktline.raycluster"),
    ("taktline.envs", "taktline.envs.*"),
    ("taktline.agents", "taktline.agents.*"),
    ("taktline.training", "taktline.training.*"),
    ("taktline.serving", "taktline.serving.*"),
    ("taktline.cli", "taktline.cli_*", "taktline.jsonout", "taktline.tables"),
)
"""Module-name patterns of each layer, bottom first; a module may import its own layer and
those below it. A new module of ``core/`` must be placed here (the test says so)."""

ENVS_FORBIDDEN = (
    "torch",
    "stable_baselines3",
    "sb3_contrib",
    "ray",
    "mlflow",
    "fastapi",
    "starlette",
    "uvicorn",
)
"""What ``taktline.envs`` never imports (starlette and uvicorn are the FastAPI stack)."""

SERVING_FORBIDDEN = ("stable_baselines3", "sb3_contrib", "ray.rllib")
"""What ``taktline.serving`` never imports: a bundle runs without its trainer."""

AGENTS_NOT_AT_IMPORT = ("mlflow",)
"""What ``taktline.agents`` imports only inside the function that uses it."""

CLI_NOT_AT_IMPORT = (
    "taktline.envs",
    "taktline.agents",
    "taktline.training",
    "taktline.serving",
    *ENVS_FORBIDDEN,
)
"""What the CLI modules import only inside their commands (``taktline --help`` loads none)."""


@dataclass(frozen=True)
class Import:
    """One import statement of a scanned module.

    Attributes:
        module: the importing module (``taktline.envs.twin``).
        target: the imported module, resolved to an absolute name.
        where: ``path:line`` of the statement.
        when: ``"import"`` (runs when the module is imported), ``"call"`` (inside a function)
            or ``"typing"`` (under ``if TYPE_CHECKING:``).
    """

    module: str
    target: str
    where: str
    when: str


def package_roots(repo: Path = REPO) -> dict[str, Path]:
    """The package-name → folder mapping of ``pyproject.toml`` (``taktline.envs`` → ``envs``)."""
    config = tomllib.loads((repo / "pyproject.toml").read_text())
    dirs = config["tool"]["setuptools"]["package-dir"]
    return {name: repo / folder for name, folder in dirs.items()}


def module_files(roots: dict[str, Path]) -> dict[str, Path]:
    """Every module under ``roots`` (package name → folder, none inside another), by name."""
    found: dict[str, Path] = {}
    for name, root in roots.items():
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([name, *parts])] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    """Collects the imports of one module with the context each runs in."""

    def __init__(self, module: str, is_package: bool, where: str, known: set[str]) -> None:
        self.module, self.where, self.known = module, where, known
        self.package = module if is_package else module.rpartition(".")[0]
        self.when = "import"
        self.found: list[Import] = []

    def _add(self, target: str, node: ast.stmt | ast.expr) -> None:
        self.found.append(Import(self.module, target, f"{self.where}:{node.lineno}", self.when))

    def _within(self, when: str, nodes: Sequence[ast.AST]) -> None:
        """Visit ``nodes`` as running ``when`` (a function body inside ``TYPE_CHECKING`` stays
        ``typing``, an import inside a function stays ``call``)."""
        before = self.when
        if before == "import":
            self.when = when
        for node in nodes:
            self.visit(node)
        self.when = before

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for part in (*node.decorator_list, *node.args.defaults):  # these run at definition
            self.visit(part)
        self._within("call", node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._within("call", [node.body])

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self._within("typing", node.body)
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            head = self.package.split(".")
            head = head[: len(head) - (node.level - 1)]
            base = ".".join([*head, base] if base else head)
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            self._add(sub if sub in self.known else base, node)  # `from taktline import envs`

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        first = node.args[0] if node.args else None
        if (
            name in ("import_module", "__import__")
            and isinstance(first, ast.Constant)
            and isinstance(first.value, str)
        ):
            self._add(first.value, node)
        self.generic_visit(node)


def scan(roots: dict[str, Path]) -> list[Import]:
    """Every import of every module under ``roots``."""
    files = module_files(roots)
    known = set(files)
    base = Path(os.path.commonpath(list(roots.values())))
    found: list[Import] = []
    for module, path in files.items():
        where = path.relative_to(base).as_posix()
        collector = _Collector(module, path.name == "__init__.py", where, known)
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        found.extend(collector.found)
    return found


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of a ``taktline`` module, ``None`` for any other module."""
    if module != "taktline" and not module.startswith("taktline."):
        return None
    for rank, patterns in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(module, pattern) for pattern in patterns):
            return rank
    return -1


def _under(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def violations(imports: list[Import]) -> list[str]:
    """The broken rules, one line each: ``where: module imports target (rule)``."""
    out: list[str] = []
    for imp in imports:
        src, dst = layer_of(imp.module), layer_of(imp.target)
        line = f"{imp.where}: {imp.module} imports {imp.target}"
        if src is not None and dst is not None and dst > src >= 0:  # -1: unplaced, tested apart
            out.append(f"{line} ({imp.when}; a lower layer imports a higher one)")
        if _under(imp.module, ("taktline.envs",)) and _under(imp.target, ENVS_FORBIDDEN):
            out.append(f"{line} ({imp.when}; envs imports no heavy dependency)")
        if _under(imp.module, ("taktline.serving",)) and _under(imp.target, SERVING_FORBIDDEN):
            out.append(f"{line} ({imp.when}; serving needs no trainer)")
        if (
            _under(imp.module, ("taktline.agents",))
            and _under(imp.target, AGENTS_NOT_AT_IMPORT)
            and imp.when == "import"
        ):
            out.append(f"{line} (at import; import it inside the function that uses it)")
        if (
            layer_of(imp.module) == len(LAYERS) - 1
            and _under(imp.target, CLI_NOT_AT_IMPORT)
            and imp.when == "import"
        ):
            out.append(f"{line} (at import; the CLI imports it inside the command)")
    return sorted(set(out))


# ---- the static check on the package ------------------------------------------------------------


def test_every_module_of_the_package_is_scanned_and_placed_in_a_layer() -> None:
    files = module_files(package_roots())
    for package in ("taktline", "taktline.envs", "taktline.envs.jobshop", "taktline.serving"):
        assert package in files, f"{package}: not found under {package_roots()}"
    assert len(files) > 60, f"only {len(files)} modules found: {sorted(files)}"
    unplaced = sorted(m for m in files if layer_of(m) == -1)
    assert not unplaced, f"modules without a layer (add them to LAYERS): {unplaced}"


def test_no_module_breaks_the_import_contract() -> None:
    imports = scan(package_roots())
    assert len(imports) > 300, f"only {len(imports)} imports found"  # the scan reads the tree
    broken = violations(imports)
    assert not broken, f"{len(broken)} imports break the contract:\n" + "\n".join(broken)


# ---- the scanner catches what it should (a synthetic package) -----------------------------------

SYNTHETIC = {
    "core/__init__.py": "from taktline.errors import TaktlineError\n",
    "core/errors.py": "class TaktlineError(Exception): ...\n",
    "core/cli.py": "import taktline.serving.app\ndef serve():\n    import torch\n",
    "core/helpers.py": "X = 1\n",
    "envs/__init__.py": "",
    "envs/twin.py": """
        from __future__ import annotations
        from typing import TYPE_CHECKING
        from taktline import envs
        from taktline.errors import TaktlineError
        from . import sub
        if TYPE_CHECKING:
            from taktline.agents.policies import Policy
        else:
            import gymnasium
        def render():
            import torch.nn
            from ..training import run
        """,
    "envs/sub/__init__.py": """
        import importlib
        try:
            from starlette.requests import Request
        except ImportError:
            Request = None
        loader = lambda: importlib.import_module("taktline.serving.app")
        """,
    "agents/__init__.py": "",
    "agents/policies.py": """
        import torch
        from typing import TYPE_CHECKING
        import taktline.envs.twin
        if TYPE_CHECKING:
            import mlflow
        def load():
            import mlflow.tracking
        class Loader:
            from mlflow import MlflowClient
        """,
    "training/__init__.py": "import mlflow, ray.tune\nfrom taktline.agents import policies\n",
    "serving/__init__.py": "",
    "serving/app.py": """
        import ray.serve
        import taktline.training
        def slow():
            from ray.rllib.algorithms import ppo
        """,
}
"""A tiny package with one import of each kind, allowed and forbidden."""

EXPECTED = [
    "core/cli.py:1: taktline.cli imports taktline.serving.app (at import; the CLI imports it"
    " inside the command)",
    "envs/sub/__init__.py:3: taktline.envs.sub imports starlette.requests (import; envs imports"
    " no heavy dependency)",
    "envs/sub/__init__.py:6: taktline.envs.sub imports taktline.serving.app (call; a lower layer"
    " imports a higher one)",
    "envs/twin.py:11: taktline.envs.twin imports torch.nn (call; envs imports no heavy dependency)",
    "envs/twin.py:12: taktline.envs.twin imports taktline.training (call; a lower layer"
    " imports a higher one)",
    "envs/twin.py:7: taktline.envs.twin imports taktline.agents.policies (typing; a lower layer"
    " imports a higher one)",
    "agents/policies.py:9: taktline.agents.policies imports mlflow (at import; import it inside"
    " the function that uses it)",
    "serving/app.py:4: taktline.serving.app imports ray.rllib.algorithms (call; serving needs no"
    " trainer)",
]


def test_the_scanner_flags_each_kind_of_violation_in_a_synthetic_package(tmp_path: Path) -> None:
    for rel, text in SYNTHETIC.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools.package-dir]\ntaktline = "core"\n"taktline.envs" = "envs"\n'
        '"taktline.agents" = "agents"\n"taktline.training" = "training"\n'
        '"taktline.serving" = "serving"\n'
    )
    roots = package_roots(tmp_path)
    unplaced = [m for m in module_files(roots) if layer_of(m) == -1]
    assert unplaced == ["taktline.helpers"]
    got = violations(scan(roots))
    assert got == sorted(EXPECTED), "\n".join(got)


# ---- the runtime check: what importing and deciding actually loads ------------------------------


def _run(*parts: str) -> str:
    """Run the code ``parts`` in a fresh interpreter; its stdout (fails with its stderr)."""
    code = "\n".join(textwrap.dedent(part) for part in parts)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout


IMPORT_ALL = """
    import importlib, pkgutil, sys
    import {package}
    for info in pkgutil.walk_packages({package}.__path__, "{package}."):
        importlib.import_module(info.name)
"""
LOADED = f"""
    loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({ENVS_FORBIDDEN!r}))
    print("LOADED", loaded)
"""


def test_importing_every_envs_module_loads_no_heavy_dependency() -> None:
    out = _run(IMPORT_ALL.format(package="taktline.envs"), LOADED)
    assert "LOADED []" in out, out


def test_importing_the_cli_loads_none_of_the_four_parts_nor_a_heavy_dependency() -> None:
    out = _run(
        """
        import sys
        import taktline.cli
        parts = sorted(m for m in sys.modules if m.split(".")[:2] in (
            ["taktline", "envs"], ["taktline", "agents"], ["taktline", "training"],
            ["taktline", "serving"]))
        print("PARTS", parts, "CLI", "taktline.cli_train" in sys.modules)
        """,
        LOADED,
    )
    assert "PARTS [] CLI True" in out and "LOADED []" in out, out


def test_importing_every_agents_module_loads_no_mlflow_ray_or_sb3() -> None:
    out = _run(IMPORT_ALL.format(package="taktline.agents"), LOADED)
    loaded = out.partition("LOADED ")[2]
    assert "torch" in loaded, out  # the networks need it: the check sees what was imported
    assert not any(name in loaded for name in ("mlflow", "ray", "sb3", "stable")), out


RULES_ON_SNAPSHOTS = """
    import itertools, sys
    import taktline.envs.snapshot
    from taktline.agents.policies import RulePolicy
    from taktline.envs.spec import bundled_lines, load_spec
    from taktline.envs.twin import Twin

    def plain(x):
        return x.model_dump(mode="json") if hasattr(x, "model_dump") else dict(x)

    kinds = []
    for line, release in itertools.product(sorted(bundled_lines()), (False, True)):
        # release=True: the twin stops at release reviews instead of at dispatch points
        twin = Twin(load_spec(line), seed=3, external_release=release, review_period=5.0)
        assert twin.run_until_decision() is not None, line
        snap = twin.snapshot()
        point = plain(snap)["decision"]
        rules = ["SPT", "MWKR", "EDD"] if point["kind"] == "dispatch" else ["CONWIP(4)"]
        for rule in rules:
            d = plain(RulePolicy(rule).decide(snap))
            assert d["kind"] == point["kind"], (line, rule, d)
            if d["kind"] == "dispatch":
                station = next(s for s in plain(snap)["stations"] if s["name"] == d["station"])
                assert d["job"] in [j["id"] for j in station["queue"]], (line, rule, d)
            kinds.append(d["kind"])
    from taktline.agents.policies import CpSatPolicy
    from taktline.envs.encoding_jobshop import jobshop_snapshot
    from taktline.envs.jobshop import JobShopState, load_bundled

    shop = jobshop_snapshot(JobShopState(load_bundled("ft06")))
    allowed = [c["job"] for c in plain(shop)["decision"]["candidates"]]
    for policy in (RulePolicy("SPT"), RulePolicy("MWKR"), CpSatPolicy(time_limit_s=10)):
        d = plain(policy.decide(shop))
        assert d["kind"] == "dispatch" and d["job"] in allowed, (policy, d, allowed)
        kinds.append("jobshop")
    print("KINDS", sorted(set(kinds)), len(kinds), "TORCH", "torch" in sys.modules)
"""


@pytest.fixture(scope="module")
def rules_run() -> str:
    """The output of :data:`RULES_ON_SNAPSHOTS` in a fresh interpreter (run once)."""
    return _run(RULES_ON_SNAPSHOTS)


def test_rules_answer_every_bundled_line_and_rules_and_cpsat_a_job_shop(rules_run: str) -> None:
    from taktline.envs.spec import bundled_lines

    # per line: three dispatching rules and one release rule; three policies on the job shop
    count = 4 * len(bundled_lines()) + 3
    assert f"KINDS ['dispatch', 'jobshop', 'release'] {count} " in rules_run, rules_run


def test_rules_and_cpsat_decide_on_snapshots_without_importing_torch(rules_run: str) -> None:
    assert "TORCH False" in rules_run, rules_run
