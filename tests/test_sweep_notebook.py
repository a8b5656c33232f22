"""notebooks/pareto.ipynb: stored without outputs, and runs top to bottom on a made-up sweep."""
import os
from pathlib import Path

import pytest

from fake_multirun import make_fake_sweep

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "pareto.ipynb"
os.environ.setdefault("MPLCONFIGDIR", str(REPO / ".cache" / "test" / "mpl"))
nbformat = pytest.importorskip("nbformat")


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])


def test_notebook_executes_on_a_fake_sweep(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    sweep = make_fake_sweep(tmp_path / "multirun" / "2026-11-23" / "16-25-29")
    monkeypatch.setenv("ALIGNLAB_SWEEP_DIR", str(sweep))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "'failed': 1" in text and "'missing': 1" in text
    assert "0.62 ± 0.028" in text  # the settings table
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # reward-vs-KL and reward-vs-tax fronts
    assert not (sweep / "sweep.md").exists()  # the notebook reads the sweep, it writes nothing into it
