"""The lesson's notebooks run top to bottom on a fresh kernel, in their quick preset
(``TRANSFERLAB_QUICK=1``: fewer photos and steps, the same code); each one ends with a cell that
asserts its headline number, so a regression fails here."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# what a notebook needs beyond the package and its dev extra (the tensorflow extra: `make test` installs it)
NEEDS = {"05-tensorflow-keras": ("tensorflow", "onnx2tf", "ai_edge_litert", "keras")}


def _runner():
    spec = importlib.util.spec_from_file_location("nb_run", NOTEBOOKS[0].parent / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_its_headline_holds(notebook, tmp_path, petimages):
    pytest.importorskip("nbclient")
    for module in NEEDS.get(notebook.stem, ()):
        pytest.importorskip(module)
    copy = tmp_path / notebook.name
    shutil.copy(notebook, copy)
    env = {"TRANSFERLAB_QUICK": "1", "TRANSFERLAB_PROGRESS": "0", "TRANSFERLAB_NOTEBOOK_OUT": str(tmp_path / "out"),
           "TRANSFERLAB_DATA": str(petimages.parent)}
    seconds, nb = _runner().execute(copy, timeout=600, env=env)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert seconds < 600
