"""notebooks/analysis.ipynb is stored without outputs and runs top to bottom on sweeps made by the tests."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from energybench.analysis import FIGURES

from .conftest import REPO

NOTEBOOK = REPO / "notebooks" / "analysis.ipynb"


def test_notebook_is_stored_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_notebook_executes_on_two_sweeps(energy_sweep: Path, cpu_sweep: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENERGYBENCH_RESULTS", f"{energy_sweep}:{cpu_sweep}")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("MPLBACKEND", "agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    drawn = {spec.draw.__name__: [c for c in nb.cells if c.cell_type == "code" and
                                  f"analysis.{spec.draw.__name__}(" in c.source.splitlines()[-1]] for spec in FIGURES}
    assert all(drawn.values()), [name for name, cells in drawn.items() if not cells]  # every figure has a cell
    figure_cells = {id(c): c for cells in drawn.values() for c in cells}
    assert len(images) == len(figure_cells)  # each drew or said why
    text = "".join(o.get("data", {}).get("text/plain", "") + o.get("text", "") for o in outputs)
    assert "failed" in text and "interrupted" in text  # both sweeps' partial points were listed
    assert (tmp_path / "tokens_per_s.png").is_file()
