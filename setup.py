"""Build hook: with ``TAKTLINE_COMPILE=1``, compile the twin's event engine with mypyc.

``envs/twin.py`` is the hot path of every simulation and environment step; compiled, it runs
about twice as fast (``bench/bench_twin.py`` prints both). The pure-Python file always ships
too and is what runs wherever the extension is absent: plain builds, editable installs,
machines without a C compiler. Compiling is opt-in (``make`` turns it on) because an extension
built in place would shadow later edits of ``envs/twin.py``.

Everything else about the package is in ``pyproject.toml``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from setuptools import setup

# the modules of taktline.envs compiled: the event engine (kernel and state)
COMPILED = ("twin", "twin_state")
ext_modules = []
# metadata-only invocations (pip asks for them first) need no extension: skip the mypyc pass
metadata_only = any(a in sys.argv for a in ("egg_info", "dist_info", "sdist"))
if os.environ.get("TAKTLINE_COMPILE") == "1" and not metadata_only:
    from mypyc.build import mypycify

    # mypyc names a module after its path, and this repository maps taktline.envs to envs/:
    # stage the installed layout so that envs/twin.py compiles as taktline.envs.twin.
    stage = Path("build", "mypyc_stage")
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "taktline" / "envs").mkdir(parents=True)
    for src, dst in (("core", "taktline"), ("envs", "taktline/envs")):
        for f in Path(src).glob("*.py"):
            shutil.copy2(f, stage / dst / f.name)
    # mypyc needs the compiled modules type-correct; the modules they import are only read for
    # their types (``make test`` runs mypy on all of them), so their errors do not stop the build
    (stage / "mypy.ini").write_text(
        "[mypy]\nplugins = pydantic.mypy\nignore_missing_imports = True\n"
        "[mypy-taktline.*]\nignore_errors = True\n"
        + "".join(f"[mypy-taktline.envs.{m}]\nignore_errors = False\n" for m in COMPILED)
    )
    ext_modules = mypycify(
        ["--config-file", str(stage / "mypy.ini")]
        + [str(stage / "taktline" / "envs" / f"{m}.py") for m in COMPILED],
        opt_level="3",
    )

setup(ext_modules=ext_modules)
