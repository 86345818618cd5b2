"""Every notebook runs top to bottom (in-process, on small generated data) and is committed without outputs."""

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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path: Path, tmp_path, monkeypatch):
    notebook = nbformat.read(path, as_version=4)
    cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in cells), (
        "commit notebooks without outputs"
    )
    for task in TASKS[path.stem]:
        provide_task_data(task, tmp_path / "data")
    monkeypatch.setenv("DLTEMPLATE_QUICK", "1")
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(ROOT / "notebooks")  # as Jupyter runs them
    namespace: dict = {}
    try:
        for number, cell in enumerate(cells):
            exec(compile(cell.source, f"{path.name} cell {number}", "exec"), namespace)
    finally:
        plt.close("all")
    assert namespace["run"].metrics, "the notebook trained nothing"
