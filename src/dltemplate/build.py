"""Build a run's data module, LightningModule and Trainer from its Hydra config.

Every entry point (train, evaluate, the tests) goes through these functions, so the wiring exists once.
"""

from pathlib import Path

from hydra.utils import instantiate
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from omegaconf import DictConfig, OmegaConf, open_dict

from dltemplate.callbacks.config import ConfigInCheckpoint


def build_datamodule(cfg: DictConfig) -> LightningDataModule:
    """Instantiate `cfg.data`, prepare and set it up for fitting, and record its `dims` in `cfg.dims`.

    Setting up before the Trainer exists is what lets the net's sizes come from the data
    (`${dims.in_features}` in the net configs) instead of being typed into configs.
    """
    # plain containers (weights_only-loadable); nested _target_s (derived columns) are the module's to build
    datamodule = instantiate(cfg.data, _recursive_=False, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")
    with open_dict(cfg):
        cfg.dims = dict(datamodule.dims)
    return datamodule


def build_module(cfg: DictConfig, datamodule: LightningDataModule | None = None) -> LightningModule:
    """Instantiate `cfg.module` around the net of `cfg.net`.

    The net, optimizer and scheduler reach the module as plain config dicts (`_recursive_=False`):
    the module builds them itself and saves the configs in its hyperparameters, which is what lets
    `load_from_checkpoint` rebuild it without being given a net.
    """
    net = OmegaConf.to_container(cfg.net, resolve=True)
    module = instantiate(cfg.module, net=net, _recursive_=False, _convert_="all")
    example = getattr(datamodule, "example_input_array", None)
    if example is not None:
        module.example_input_array = example  # model graph in TensorBoard, shapes in the summary
    return module


def build_trainer(cfg: DictConfig) -> Trainer:
    """Instantiate `cfg.trainer` with the callbacks and loggers the config lists (null entries off)."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks.append(ConfigInCheckpoint(checkpoint_config(cfg)))
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


def checkpoint_config(cfg: DictConfig) -> dict:
    """The config to store in checkpoints: plain containers, interpolations kept.

    Keeping `${paths.data_dir}/...` unresolved lets a restored run read its data from wherever
    `paths.data_dir` points then; `paths` itself is resolved, since `${hydra:...}` is gone by then.
    """
    config = OmegaConf.to_container(cfg, resolve=False)
    config["paths"] = OmegaConf.to_container(cfg.paths, resolve=True)
    return config


def resolve_checkpoint(cfg: DictConfig) -> None:
    """Turn `cfg.ckpt_path` into a checkpoint file, and resume into the run that wrote it.

    `ckpt_path` may be a checkpoint file, a run directory (its checkpoints/last.ckpt) or "last" (the
    most recently written last.ckpt among this task's runs). A checkpoint inside a run directory
    makes that directory this run's output directory again, so TensorBoard and checkpoints continue
    where they were.
    """
    value = cfg.get("ckpt_path")
    if value is None:
        return
    if value == "last":
        runs = Path(cfg.paths.log_dir) / cfg.task_name / "runs"
        found = sorted(runs.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise FileNotFoundError(f"ckpt_path=last: no {runs}/*/checkpoints/last.ckpt to resume from")
        path = found[-1]
    else:
        path = Path(value)
        if path.is_dir():
            path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={value}: {path} does not exist")
    with open_dict(cfg):
        cfg.ckpt_path = str(path)
        if path.parent.name == "checkpoints" and (path.parent.parent / "tensorboard").is_dir():
            cfg.paths.output_dir = str(path.parent.parent)


def check_output_dir_unused(cfg: DictConfig) -> None:
    """Refuse to train into an output directory that already holds another run's results.

    Resuming (`ckpt_path` set) may write into its own run directory again.
    """
    if cfg.get("ckpt_path") or rank_zero_only.rank != 0:  # DDP workers share rank 0's directory
        return
    output_dir = Path(cfg.paths.output_dir)
    used = [p.name for p in (output_dir / "checkpoints", output_dir / "tensorboard") if p.is_dir() and any(p.iterdir())]
    if used:
        raise FileExistsError(
            f"{output_dir} already holds results of another run ({', '.join(used)}); "
            "choose a new hydra.run.dir, or pass ckpt_path=... to resume that run"
        )
