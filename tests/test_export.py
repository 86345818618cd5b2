"""Export per task family: the ONNX, torch.export (pt2) and TorchScript models give the checkpoint's outputs."""

import pytest
import torch

from dltemplate.checkpoint import default_paths, load_checkpoint, restore
from dltemplate.config import compose_config
from dltemplate.errors import ConfigError
from dltemplate.extras.export import FORMATS, export, export_checkpoint, net_input
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
    # the pt2 program loads with torch alone and takes other batch sizes, one included (and, for texts, lengths)
    paths = default_paths(str(tmp_path / "data")) | {"cache_dir": str(tmp_path / "cache")}
    module, datamodule, _ = restore(result.best_checkpoint, paths=paths)
    example = net_input(datamodule, load_checkpoint(result.best_checkpoint)["example_input"])
    wider = torch.cat([example, example, example[:1]])
    if wider.dtype == torch.long:  # token ids: one more padding column
        wider = torch.cat([wider, torch.zeros_like(wider[:, :1])], dim=1)
    program = torch.export.load(str(tmp_path / "export" / "model.pt2")).module()
    with torch.no_grad():
        assert torch.allclose(program(wider), module.eval()(wider), atol=1e-4)
        if task != "covid":  # the GRU's exported program still guards a batch of one (torch's RNN decomposition)
            assert torch.allclose(program(wider[:1]), module(wider[:1]), atol=1e-4)


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_an_exported_text_model_takes_a_batch_of_one_and_texts_of_any_length(tmp_path, fmt):
    from dltemplate.text.nets.ngram_bag import NGramBag

    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    net = NGramBag(vocab_size=50, buckets=64).eval()
    example = NGramBag.example_input(4, vocab_size=50)  # traced on a batch of 4 texts of 37 tokens
    path, difference = export(net, example, tmp_path / f"model.{fmt}", fmt)
    assert difference < 1e-5
    if fmt == "pt2":
        run = torch.export.load(str(path)).module()
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path))

        def run(ids):
            return torch.from_numpy(session.run(None, {"input": ids.numpy()})[0])

    for batch, length in [(1, 37), (3, 37), (1, 1), (3, 2), (1, 2), (3, 60)]:
        ids = torch.randint(1, 50, (batch, length))
        with torch.no_grad():
            assert torch.allclose(run(ids), net(ids), atol=1e-5), (batch, length)


def test_an_unknown_format_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="onnx, pt2, torchscript"):
        export(torch.nn.Linear(2, 1), torch.zeros(2, 2), tmp_path / "model.bin", "savedmodel")
