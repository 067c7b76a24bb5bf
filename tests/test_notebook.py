"""notebooks/compare_baselines.ipynb is stored without outputs and runs on a fixture sweep."""

import json
from pathlib import Path

import nbclient
import nbformat
from reporting_fixtures import write_sweep

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "compare_baselines.ipynb"


def test_notebook_is_stored_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    assert 'RESULTS_DIR = "results/runs"' in "".join(code[0]["source"])


def test_notebook_executes_on_fixture_results(tmp_path, monkeypatch):
    runs = write_sweep(tmp_path / "runs")
    monkeypatch.setenv("SCISSORBENCH_RESULTS_DIR", str(runs))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "llava_scissor_baseline_7b" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4
