"""Export entry point: a trained net to ONNX, torch.export (pt2) or TorchScript, checked against the checkpoint."""

import contextlib
import logging
import math
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch import LightningModule
from omegaconf import DictConfig
from torch import Tensor

from dltemplate.checkpoint import find_checkpoint, load_checkpoint, net_input, restore
from dltemplate.errors import CheckpointError, ConfigError, ExportError
from dltemplate.files import output_path
from dltemplate.settings import check_settings

log = logging.getLogger(__name__)


FORMATS = ("onnx", "pt2", "torchscript")


def dynamic_dims(example: Tensor) -> dict[int, object]:
    """Dimensions of `example` that may vary: the batch (and, for token ids, the length); the net fixes the others."""
    return {0: torch.export.Dim.AUTO} | ({1: torch.export.Dim.AUTO} if example.dtype == torch.long else {})


def size_oblivious() -> contextlib.AbstractContextManager:
    """Trace without specialising a dimension on whether it is 1 (what `torch.onnx.export` does itself).

    By default torch.export assumes a dynamic dimension is at least 2 whenever the net's code would
    broadcast a size of 1 differently (flattening a batch of token ids into a bag, slicing one n-gram
    shorter than the text): the program then refuses a batch of one text, or a text of two tokens,
    with a "Guard failed" error. Without the option (another torch), export as before.
    """
    config = torch.fx.experimental._config
    if not hasattr(config, "backed_size_oblivious"):  # pragma: no cover - another torch
        return contextlib.nullcontext()
    return config.patch(backed_size_oblivious=True)


# what torch's exporters say of their own code while exporting this project's nets; nothing in the net or
# the command changes it (an LSTM re-flattening its weights on every call, torch's internal size checks)
EXPORT_NOISE = (
    (UserWarning, r"The tensor attributes .* were assigned during export"),
    (FutureWarning, r"_check_is_size will be removed"),
)


# the ONNX optimizer's notes on its own passes ("Skipping constant folding for op SequenceEmpty", for an
# LSTM): logged as warnings, though the exported model is checked against the checkpoint's outputs anyway
ONNX_LOGGERS = ("onnxscript", "onnx_ir")


@contextlib.contextmanager
def quiet_loggers(names: tuple[str, ...]) -> Iterator[None]:
    """Show only errors of the loggers `names` within the block."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def export(
    module: LightningModule, example: Tensor, path: str | Path, fmt: Literal["onnx", "pt2", "torchscript"]
) -> tuple[Path, float]:
    """Write `module` (its forward: net and output shaping) to `path`; return it and the largest
    difference between the exported model's outputs and the module's on `example`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval().cpu()
    example = example.contiguous()
    with torch.no_grad():
        expected = module(example)
    with warnings.catch_warnings():
        for category, message in EXPORT_NOISE:
            warnings.filterwarnings("ignore", message=message, category=category)
        got = _export_and_run(module, example, path, fmt)
    return path, float((got.detach().reshape(expected.shape) - expected).abs().max())


def _export_and_run(module: LightningModule, example: Tensor, path: Path, fmt: str) -> Tensor:
    """Write `module` to `path` in `fmt`, load it back and return its outputs for `example`."""
    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError:
            raise ImportError(
                "ONNX export needs onnx, onnxscript and onnxruntime: pip install -e '.[export]'"
            ) from None
        with quiet_loggers(ONNX_LOGGERS):
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=True,
                dynamic_shapes=(dynamic_dims(example),),
                input_names=["input"],
                output_names=["output"],
            )
        session = onnxruntime.InferenceSession(str(path))
        got = torch.from_numpy(session.run(None, {"input": example.numpy()})[0])
    elif fmt == "pt2":
        # torch.export: the graph PyTorch itself maintains (TorchScript's successor); AOTInductor and
        # ExecuTorch compile from it. Loading needs torch only, not this package.
        with size_oblivious():
            program = torch.export.export(module, (example,), dynamic_shapes=(dynamic_dims(example),))
        torch.export.save(program, str(path))
        got = torch.export.load(str(path)).module()(example)
    elif fmt == "torchscript":  # deprecated by PyTorch in favour of torch.export; kept while it works
        traced = module.to_torchscript(method="trace", example_inputs=example)  # Lightning guards its properties
        traced.save(str(path))
        got = torch.jit.load(str(path))(example)
    else:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    return got


def export_checkpoint(cfg: DictConfig) -> tuple[Path, float]:
    """Export `cfg.ckpt_path` in `cfg.format` to `cfg.output`, traced on the example inputs it stores."""
    check_tolerance(cfg.tolerance)
    check_settings(cfg)
    output = output_path(cfg.output, cfg.get("overwrite", False))
    ckpt_path = find_checkpoint(cfg.ckpt_path)
    checkpoint = load_checkpoint(ckpt_path)
    if "example_input" not in checkpoint:
        raise CheckpointError(f"{ckpt_path} stores no example input to trace the net with")
    module, datamodule, _ = restore(ckpt_path, paths=cfg.paths)
    # written into a folder of its own beside the output (an ONNX file may bring its external data
    # along), moved into place only when it matches: a refused or failed export leaves no file behind
    staging = output.with_name(f".{output.name}.{os.getpid()}.part")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        written, difference = export(
            module, net_input(datamodule, checkpoint["example_input"]), staging / output.name, cfg.format
        )
        if math.isnan(difference):  # NaN > tolerance is False: without this, NaN outputs would pass
            raise ExportError(
                f"the exported {cfg.format} model differs from the checkpoint by NaN (NaN weights or outputs), so "
                f"it was not written to {output}; export a checkpoint of a run that did not diverge"
            )
        if difference > cfg.tolerance:
            raise ExportError(
                f"the exported {cfg.format} model differs from the checkpoint by {difference:.2e}, more than "
                f"tolerance={cfg.tolerance}, so it was not written to {output}; pass tolerance=<a larger value> "
                "to accept it, or try another format="
            )
        for file in sorted(staging.iterdir()):
            os.replace(file, output.parent / file.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output.parent / written.name, difference


def check_tolerance(tolerance: object) -> None:
    """Refuse a `tolerance` that is not a number of at least 0."""
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or not tolerance >= 0:
        raise ConfigError(
            f"tolerance={tolerance!r} must be a number of at least 0 (the largest accepted difference); e.g. 1e-4"
        )


def main(cfg: DictConfig) -> None:
    """Hydra task function."""
    path, difference = export_checkpoint(cfg)
    log.info("%s written to %s; largest difference from the checkpoint's outputs: %.2e", cfg.format, path, difference)
