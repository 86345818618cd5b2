"""Export per task family: the ONNX and TorchScript models give the checkpoint's outputs."""

import pytest

from dltemplate.config import compose_config
from dltemplate.export import export_checkpoint
from dltemplate.train import train
from tests.datasets import provide_task_data
from tests.helpers import CONFIG_DIR

FAMILIES = {
    "linear_regression": [],
    "titanic": [],
    "cifar2": ["net=simple_cnn"],
    "imdb": ["data.min_frequency=1", "net.buckets=4096"],
    "covid": [],
}


@pytest.mark.parametrize("task", FAMILIES)
def test_exported_models_match_the_checkpoint(make_cfg, tmp_path, task):
    overrides = provide_task_data(task, tmp_path / "data")
    result = train(make_cfg(f"task={task}", "debug=limit_batches", "test=false", *FAMILIES[task], *overrides))
    for fmt in ("onnx", "torchscript"):
        cfg = compose_config(
            CONFIG_DIR,
            [f"ckpt_path={result.best_checkpoint}", f"format={fmt}", f"paths.data_dir={tmp_path / 'data'}"],
            output_dir=tmp_path / "export",
            config_name="export",
        )
        path, difference = export_checkpoint(cfg)
        assert path.is_file() and difference < 1e-4, (fmt, difference)
