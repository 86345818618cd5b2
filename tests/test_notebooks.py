"""Every notebook runs top to bottom on small generated data and is committed without outputs; one runs in a
real Jupyter kernel, which must render its figures and keep its output quiet."""

import logging
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import pytest

from tests.datasets import provide_task_data
from tests.helpers import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TASKS = {
    "1_regression": [],
    "2_tabular": ["titanic"],
    "3_image": ["cifar2"],
    "4_text": ["imdb"],
    "5_timeseries": ["covid"],
}


def test_every_notebook_is_listed():
    assert NOTEBOOKS and {p.stem for p in NOTEBOOKS} <= set(TASKS)


IN_KERNEL = "2_tabular"  # run by test_notebook_renders_its_figures_in_a_jupyter_kernel instead


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path: Path):
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in cells), (
        "commit notebooks without outputs"
    )


def _notebook_environment(path: Path, tmp_path: Path, monkeypatch) -> None:
    for task in TASKS[path.stem]:
        provide_task_data(task, tmp_path / "data")
    monkeypatch.setenv("DLTEMPLATE_QUICK", "1")
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.slow  # several seconds: CI runs it, `pytest` alone skips it
@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.stem != IN_KERNEL], ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path: Path, tmp_path, monkeypatch, caplog):
    notebook = nbformat.read(path, as_version=4)
    cells = [c for c in notebook.cells if c.cell_type == "code"]
    _notebook_environment(path, tmp_path, monkeypatch)
    monkeypatch.chdir(ROOT / "notebooks")  # as Jupyter runs them
    namespace: dict = {}
    with warnings.catch_warnings(record=True) as shown:
        # what a notebook shows: each warning once per place, no library's deprecation notes (IPython shows
        # those of the notebook's own code only); the filters the project sets inside still apply
        warnings.simplefilter("default")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
        try:
            for number, cell in enumerate(cells):
                exec(compile(cell.source, f"{path.name} cell {number}", "exec"), namespace)
        finally:
            plt.close("all")
    assert namespace["run"].metrics, "the notebook trained nothing"
    assert not shown, [f"{w.category.__name__}: {str(w.message)[:200]} ({w.filename}:{w.lineno})" for w in shown]
    # the project's own logged warnings say something about the data or the request; no library's notes
    noise = [r for r in caplog.records if r.levelno >= logging.WARNING and not r.name.startswith("dltemplate")]
    assert not noise, [f"{r.name}: {r.getMessage()[:200]}" for r in noise]


@pytest.mark.slow  # starts a Jupyter kernel process
def test_notebook_renders_its_figures_in_a_jupyter_kernel(tmp_path, monkeypatch):
    """Executed as Jupyter executes it: plots appear as images, training prints no warnings or banners."""
    nbclient = pytest.importorskip("nbclient")
    path = ROOT / "notebooks" / f"{IN_KERNEL}.ipynb"
    _notebook_environment(path, tmp_path, monkeypatch)  # the kernel inherits this environment
    notebook = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, resources={"metadata": {"path": str(path.parent)}}).execute()

    def outputs(marker: str) -> list:
        (cell,) = [c for c in notebook.cells if c.cell_type == "code" and marker in c.source]
        return cell.outputs

    def images(cell_outputs: list) -> int:
        return sum("image/png" in o.get("data", {}) for o in cell_outputs)

    assert images(outputs("api.plot_metric(")) == 1  # the training curves
    assert images(outputs("api.show_figures(")) == 1  # the test set's figures, once
    training = outputs("run = api.fit(cfg)")
    stderr = "".join(o.get("text", "") for o in training if o.get("name") == "stderr")
    assert "Warning" not in stderr and "GPU available" not in stderr and "Tip" not in stderr, stderr
    assert len(training) <= 4, [o.get("text", o.get("data", {}).get("text/plain", ""))[:200] for o in training]
    code = [c for c in notebook.cells if c.cell_type == "code"]
    every_stderr = "".join(o.get("text", "") for c in code for o in c.outputs if o.get("name") == "stderr")
    assert "TqdmWarning" not in every_stderr, every_stderr  # ipywidgets is installed with the notebooks extra
