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


# per module family: the task whose config builds it, the dims its data module would report, and a
# tiny batch of n samples in its shapes (counts as regression targets, so that every loss fits them)
FAMILIES = {
    "binary": ("rings", {"in_features": 2, "num_classes": 2, "out_features": 1}),
    "multiclass": ("rings", {"in_features": 2, "num_classes": 3, "out_features": 3}),
    "regression": ("linear_regression", {"in_features": 2, "out_features": 1, "target_mean": 2.0, "target_std": 1.5}),
    "forecasting": (
        "series",
        {
            "num_series": 2,
            "horizon": 3,
            "scale": [1.0, 2.0],
            "naive_scale": [0.5, 0.5],
            "season": None,
            "transform": None,
        },
    ),
    "image": ("cifar2", {"in_channels": 3, "num_classes": 2, "out_features": 1}),
}


def family_batch(family: str, n: int):
    """(inputs, targets) of `n` random samples shaped as `family`'s data module delivers them."""
    import torch

    if family == "forecasting":
        return torch.randn(n, 8, 2), torch.randn(n, 3, 2)  # (B, window, C), (B, horizon, C)
    if family == "image":  # 16×16 rather than CIFAR's 32×32: the image nets pool adaptively, and it is 4× cheaper
        return torch.randn(n, 3, 16, 16), torch.randint(0, 2, (n,))
    if family == "regression":
        return torch.randn(n, 2), torch.poisson(torch.full((n,), 2.0))
    return torch.randn(n, 2), torch.randint(0, FAMILIES[family][1]["num_classes"], (n,))


def fit_family(cfg, family: str, steps: int = 1, batch_size: int = 4, callbacks=()):
    """Build `cfg`'s module with `family`'s dims and fit it for one epoch of `steps` tiny batches, in-process.

    Returns (module, trainer).
    """
    from lightning.pytorch import Trainer
    from omegaconf import open_dict
    from torch.utils.data import DataLoader, TensorDataset

    from dltemplate.build import build_module

    with open_dict(cfg):
        cfg.dims = FAMILIES[family][1]
    module = build_module(cfg)
    trainer = Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
    )
    data = TensorDataset(*family_batch(family, steps * batch_size))
    trainer.fit(module, DataLoader(data, batch_size=batch_size))
    return module, trainer


def assert_balanced_class_weights(result) -> None:
    """A binary run's loss weights are N / (2 × count) of its training labels: the rarer class above 1."""
    import pytest

    weights = result.trainer.lightning_module.hparams.class_weights
    labels = result.trainer.datamodule.train_set.labels
    expected = [len(labels) / (2 * int((labels == c).sum())) for c in (0, 1)]
    assert weights == pytest.approx(expected) and weights[1] > 1 > weights[0]
