"""Execute the tutorial notebooks (quick size) with nbclient, in a kernel running this very interpreter."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def _client(nb, cwd):
    pytest.importorskip("ipykernel", reason="ipykernel is needed to run the notebooks")
    nbclient = pytest.importorskip("nbclient")
    # kernel "python3" is ipykernel's native kernel: jupyter_client launches it with sys.executable
    # (the argv 'python' is replaced by the running interpreter); the first cell below checks that.
    return nbclient.NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(cwd)}})


def test_notebooks_exist():
    names = [p.stem for p in NOTEBOOKS]
    assert names == ["01_test_time_scaling", "02_overthinking", "03_task_selection", "04_gpt2"]


# Training even a toy Flax GPT-2 compiles for minutes on a shared 2-core CPU: that notebook runs
# with --run-full (it is still executed there, end to end, at its toy size).
SLOW = {"04_gpt2"}
CASES = [pytest.param(p, marks=pytest.mark.full) if p.stem in SLOW else p for p in NOTEBOOKS]


# Notebooks that draw a figure: each must show it (an ``image/png`` output of the inline backend).
# 04_gpt2 prints its tables and draws no figure.
FIGURES = {"01_test_time_scaling", "02_overthinking", "03_task_selection"}


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(path, as_version=4)
    probe = nbformat.v4.new_code_cell("import sys, os\nprint(os.path.realpath(sys.executable))")
    nb.cells.insert(0, probe)
    # the kernel must be able to display figures as a user's would: no MPLBACKEND=Agg inherited from the test
    # environment (ipykernel then defaults to the inline backend; the notebooks also ask for it)
    env_before = os.environ.pop("MPLBACKEND", None)
    try:
        _client(nb, tmp_path).execute()
    finally:
        if env_before is not None:
            os.environ["MPLBACKEND"] = env_before
    printed = "".join(o.get("text", "") for o in nb.cells[0].outputs).strip()
    assert printed == os.path.realpath(sys.executable), f"kernel ran {printed}, tests run {sys.executable}"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    if path.stem in FIGURES:
        assert images, f"{path.name} draws a figure but shows none (no image/png output: is a non-inline backend forced?)"
