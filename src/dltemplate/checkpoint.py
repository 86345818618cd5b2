"""Read checkpoints safely and rebuild a trained run (module + data pipeline) from one."""

from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from lightning.pytorch import LightningDataModule, LightningModule
from omegaconf import DictConfig, OmegaConf


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file with `weights_only=True`: tensors and plain containers, no pickled code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def restore(
    ckpt_path: str | Path, data_dir: str | None = None
) -> tuple[LightningModule, LightningDataModule, DictConfig]:
    """Rebuild the trained module, its data module (with fitted preprocessing) and the run config.

    Args:
        ckpt_path: A checkpoint written by a run of this template.
        data_dir: Where the data lives now, if not where it lived during training.
    """
    checkpoint = load_checkpoint(ckpt_path)
    if "config" not in checkpoint:
        raise ValueError(f"{ckpt_path} has no run config: it was not written by this template's train entry point")
    cfg = OmegaConf.create(checkpoint["config"])
    if data_dir is not None:
        cfg.paths.data_dir = data_dir

    data_cls = _checked_class(cfg.data._target_, LightningDataModule, ckpt_path)
    datamodule = instantiate(cfg.data, _recursive_=False, _convert_="all")
    state = checkpoint.get(data_cls.__qualname__)
    if state:
        datamodule.load_state_dict(state)

    module_cls = _checked_class(cfg.module._target_, LightningModule, ckpt_path)
    module = module_cls.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True)
    return module, datamodule, cfg


def _checked_class(target: str, base: type, ckpt_path: str | Path) -> type:
    """The class `target` names, if it is a subclass of `base`: checked before anything is called."""
    cls = get_class(target)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(f"{ckpt_path} names {target!r} where a {base.__name__} subclass belongs")
    return cls
