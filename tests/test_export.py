"""Export per task family: the ONNX, torch.export (pt2) and TorchScript models give the checkpoint's outputs."""

import pytest
import torch

from dltemplate.checkpoint import default_paths, load_checkpoint, restore
from dltemplate.config import compose_config
from dltemplate.errors import ConfigError
from dltemplate.export import FORMATS, export, export_checkpoint, net_input
from dltemplate.train import train
from tests.datasets import provide_task_data
from tests.helpers import CONFIG_DIR, TASKS

FAMILIES = {
    "linear_regression": [],
    "titanic": [],
    "cifar2": ["net=simple_cnn"],
    "imdb": ["data.min_frequency=1", "net.buckets=4096"],
    "covid": [],
}


def export_config(ckpt_path, fmt: str, tmp_path):
    return compose_config(
        CONFIG_DIR,
        [f"ckpt_path={ckpt_path}", f"format={fmt}", f"paths.data_dir={tmp_path / 'data'}"],
        output_dir=tmp_path / "export",
        config_name="export",
    )


@pytest.mark.slow  # several seconds: CI runs it, `pytest` alone skips it
@pytest.mark.parametrize("task", [t for t in FAMILIES if t in TASKS])  # the families this project has
def test_exported_models_match_the_checkpoint(make_cfg, tmp_path, task):
    overrides = provide_task_data(task, tmp_path / "data")
    result = train(make_cfg(f"task={task}", "debug=limit_batches", "test=false", *FAMILIES[task], *overrides))
    for fmt in FORMATS:
        path, difference = export_checkpoint(export_config(result.best_checkpoint, fmt, tmp_path))
        assert path.is_file() and path.suffix == f".{fmt}" and difference < 1e-4, (fmt, difference)
    # the pt2 program loads with torch alone and takes other batch sizes (and, for texts, lengths)
    paths = default_paths(str(tmp_path / "data")) | {"cache_dir": str(tmp_path / "cache")}
    module, datamodule, _ = restore(result.best_checkpoint, paths=paths)
    example = net_input(datamodule, load_checkpoint(result.best_checkpoint)["example_input"])
    wider = torch.cat([example, example, example[:1]])
    if wider.dtype == torch.long:  # token ids: one more padding column
        wider = torch.cat([wider, torch.zeros_like(wider[:, :1])], dim=1)
    program = torch.export.load(str(tmp_path / "export" / "model.pt2")).module()
    with torch.no_grad():
        assert torch.allclose(program(wider), module.eval()(wider), atol=1e-4)


def test_an_unknown_format_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="onnx, pt2, torchscript"):
        export(torch.nn.Linear(2, 1), torch.zeros(2, 2), tmp_path / "model.bin", "savedmodel")
