"""Constants and helpers shared by the tests."""

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "conf"
TASKS = sorted(p.stem for p in (CONFIG_DIR / "task").glob("*.yaml"))


def run_script(args: Sequence[str], cwd: Path = ROOT, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run a root script (train.py, evaluate.py) in a subprocess, as a user would."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def tensorboard_tags(run_dir: Path) -> dict[str, set[str]]:
    """Tags per TensorBoard plugin ("scalars", "histograms", "images", "hparams", "graphs") in a run."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    tags: dict[str, set[str]] = {}
    for path in sorted(run_dir.rglob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            if event.HasField("graph_def"):
                tags.setdefault("graphs", set()).add("graph_def")
            for value in event.summary.value:
                tags.setdefault(value.metadata.plugin_data.plugin_name, set()).add(value.tag)
    return tags
