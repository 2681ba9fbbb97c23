"""The Jupyter notebooks: each runs top to bottom on a real kernel, and git holds them clean.

Execution uses nbclient with the current interpreter's ``python3`` kernel and the notebooks'
own small default budgets; the cell after the one tagged ``parameters`` is overridden (as
papermill does) only to point ``OUT_DIR`` at a temporary folder, so a test run writes nothing
into the repository. The kernel gets an environment without ``MLFLOW_TRACKING_URI``,
``RAY_ADDRESS`` or ``TAKTLINE_*``: notebooks run on the embedded defaults.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300
IDS = [p.stem for p in NOTEBOOKS]


def _parameters_index(nb: nbformat.NotebookNode) -> int | None:
    for i, cell in enumerate(nb.cells):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return i
    return None


def test_there_are_notebooks() -> None:
    assert len(NOTEBOOKS) >= 5, f"expected the five notebooks in {NOTEBOOK_DIR}, got {IDS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_notebook_has_no_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} keep outputs or execution counts; strip them"
    assert "widgets" not in nb.metadata, f"{path.name}: strip the widget state from the metadata"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_has_a_parameters_cell_with_out_dir(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    index = _parameters_index(nb)
    assert index is not None, f"{path.name}: no cell tagged 'parameters'"
    assert "OUT_DIR =" in nb.cells[index].source, f"{path.name}: parameters set no OUT_DIR"


def test_every_notebook_is_listed_in_the_readme() -> None:
    readme = (NOTEBOOK_DIR / "README.md").read_text()
    missing = [p.name for p in NOTEBOOKS if p.name not in readme]
    assert not missing, f"notebooks/README.md does not list {missing}"


def _kernel_env() -> dict[str, str]:
    drop = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "RAY_ADDRESS")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("TAKTLINE_")}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path) -> None:
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    index = _parameters_index(nb)
    assert index is not None
    injected = nbformat.v4.new_code_cell(f"OUT_DIR = {str(tmp_path / 'out')!r}")
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, injected)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    started = time.monotonic()
    try:
        client.execute(env=_kernel_env())
    except CellExecutionError as exc:
        pytest.fail(f"{path.name} failed:\n{str(exc)[-4000:]}")
    finally:
        nbformat.write(nb, tmp_path / path.name)  # the executed copy, for a look after a failure
    print(f"{path.name}: {time.monotonic() - started:.0f} s")
    out = tmp_path / "out"
    assert out.is_dir() and any(out.iterdir()), f"{path.name}: wrote nothing under OUT_DIR"
