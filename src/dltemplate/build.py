"""Build a run's data module, LightningModule and Trainer from its Hydra config.

Every entry point (train, evaluate, the tests) goes through these functions, so the wiring exists once.
"""

import copy
import logging
import re
import types
import typing
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import InterpolationKeyError, OmegaConfBaseException

from dltemplate.callbacks.config import ConfigInCheckpoint
from dltemplate.callbacks.summary import RunSummary
from dltemplate.checkpoint import AtomicCheckpointIO, checkpoint_run_config, find_checkpoint, load_checkpoint
from dltemplate.data.inferred import InfersSettings, format_table, save_table
from dltemplate.data.tensors import TensorDataModule
from dltemplate.errors import CheckpointError, ConfigError, MissingFileError
from dltemplate.instantiate import instantiate, locate
from dltemplate.modules.factories import complete_net_config, net_data_settings
from dltemplate.modules.step import StepModule
from dltemplate.rundir import claim, hold_for_resume
from dltemplate.selection import give_split, run_split

log = logging.getLogger(__name__)


def build_datamodule(cfg: DictConfig) -> LightningDataModule:
    """Instantiate `cfg.data`, prepare and set it up for fitting, and record its `dims` in `cfg.dims`.

    Setting up before the Trainer exists is what lets the net's sizes come from the data
    (`${dims.in_features}` in the net configs) instead of being typed into configs. Before that, the
    data settings the net's weights expect (`apply_net_data_settings`) are filled in, and the data
    module is given the validation split the run asks for (`cv.fold`, see `dltemplate.selection`).
    """
    apply_net_data_settings(cfg)
    split = run_split(cfg)
    # plain containers (weights_only-loadable); nested _target_s (derived columns) are the module's to build
    datamodule = instantiate(cfg.data, "data", expect=LightningDataModule, _recursive_=False)
    if split is not None:
        give_split(datamodule, split)
    if isinstance(datamodule, TensorDataModule):  # settings that depend on the hardware (an image size)
        datamodule.training_device = training_device(cfg.get("trainer") or {})
    datamodule.prepare_data()
    datamodule.setup("fit")
    with open_dict(cfg):
        cfg.dims = dict(datamodule.dims)
    record_inferred(cfg, datamodule)
    return datamodule


def training_device(trainer: DictConfig | dict) -> str:
    """ "cpu" when `trainer` trains on the CPU (its accelerator, or "auto" on a machine without CUDA or MPS), else
    the accelerator's name."""
    accelerator = str(trainer.get("accelerator") or "auto")
    if accelerator != "auto":
        return accelerator
    if torch.cuda.is_available():
        return "gpu"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def record_inferred(cfg: DictConfig, datamodule: LightningDataModule) -> None:
    """Write what the data module inferred into `cfg.data` (so checkpoints hold it and a restored run
    infers nothing), print it once as a table and save it as the run directory's `inferred.yaml`."""
    inferred = datamodule.inferred if isinstance(datamodule, InfersSettings) else None
    if not inferred:
        return
    with open_dict(cfg):
        for key, item in inferred.items():
            if not key.startswith("dims."):
                cfg.data[key] = item.value
    if rank_zero_only.rank == 0:
        log.info("inferred from the data (an explicit setting overrides any of them):\n%s", format_table(inferred))
        output_dir = cfg.get("paths", {}).get("output_dir")
        if output_dir:
            save_table(inferred, output_dir)


def apply_net_data_settings(cfg: DictConfig) -> None:
    """Fill in the data settings a net's pretrained weights expect (a timm model's input size, mean and
    std; a transformer's tokenizer) where `cfg.data` leaves them null: an explicit setting wins.

    They land in `cfg.data`, so the run config and every checkpoint hold them.
    """
    if cfg.get("net") is None or cfg.get("data") is None:
        return
    filled = {}
    for key, value in net_data_settings(cfg.net).items():
        if key in cfg.data and cfg.data[key] is None:
            filled[key] = value
    with open_dict(cfg):
        for key, value in filled.items():
            cfg.data[key] = value
    if filled:
        log.info("data settings from net %s: %s", cfg.net.get("_target_"), filled)


def build_module(cfg: DictConfig, datamodule: LightningDataModule | None = None) -> LightningModule:
    """Instantiate `cfg.module` around the net of `cfg.net`.

    The net, optimizer and scheduler reach the module as plain config dicts (`_recursive_=False`):
    the module builds them itself and saves the configs in its hyperparameters, which is what lets
    `load_from_checkpoint` rebuild it without being given a net.
    """
    net = complete_net_config(_resolve_sized(cfg, "net"))
    extra = {k: v for k, v in net.items() if cfg.net.get(k) is None and v is not None}
    if extra:  # what the checkpoint needs to rebuild the net offline (a transformer's architecture)
        with open_dict(cfg):
            cfg.net.update(extra)
    _resolve_sized(cfg, "module")
    check_target_kind(cfg, datamodule)
    module = instantiate(cfg.module, "module", expect=LightningModule, _recursive_=False, net=net)
    if cfg.get("compile", False):
        module.net.compile()  # in place: state_dict keys stay those of the plain net
    example = datamodule.example_input_array if isinstance(datamodule, TensorDataModule) else None
    if example is not None:
        module.example_input_array = example  # model graph in TensorBoard, shapes in the summary
    return module


def check_target_kind(cfg: DictConfig, datamodule: LightningDataModule | None) -> None:
    """Refuse a module whose target kind differs from what the data's targets ask (data.task=regression with
    module=classification would otherwise train on class codes, or fail deep inside the loss)."""
    if not isinstance(datamodule, TensorDataModule) or datamodule.target_kind is None:
        return
    module_cls = locate(cfg.module.get("_target_"), "module")
    wanted = datamodule.target_kind
    own = not (isinstance(module_cls, type) and issubclass(module_cls, StepModule))  # a module of one's own: unchecked
    offered = None if own else module_cls.target_kind
    if offered is not None and offered != wanted:
        task = f"data.task={wanted}" if "task" in cfg.data else f"data={type(datamodule).__name__}"
        raise ConfigError(
            f"{task} needs a {wanted} module, but module={cfg.module.get('_target_')} trains {offered}: "
            f"use module={wanted}" + (f", or data.task={offered}" if "task" in cfg.data else "")
        )


def _resolve_sized(cfg: DictConfig, group: str) -> dict:
    """`cfg[group]` resolved; a `${dims.x}` the data module does not provide is a `ConfigError` that says
    which net or module needs it and which nets fit this data."""
    try:
        return OmegaConf.to_container(cfg[group], resolve=True, throw_on_missing=True)
    except InterpolationKeyError as error:
        missing = re.search(r"dims\.(\w+)", str(error))
        if missing is None:
            raise
        chosen = _choice(group) or cfg[group].get("_target_")
        fitting = _nets_that_fit(cfg) if group == "net" else []
        raise ConfigError(
            f"{group}={chosen} needs the size dims.{missing.group(1)}, which the data of task "
            f"{cfg.get('task_name')} does not provide (it provides {', '.join(sorted(cfg.dims))})"
            + (f"; nets that fit: {', '.join(fitting)}" if fitting else "")
        ) from None


def _choice(group: str) -> str | None:
    """The option chosen for a config group (`net=mlp` → "mlp"), when Hydra knows it."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None


def _nets_that_fit(cfg: DictConfig) -> list[str]:
    """The net options (files of the config folder Hydra runs from) that fit this data: each file read with
    OmegaConf and resolved in place of `cfg.net`, so that every size it takes from `${dims...}` must be there."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    fitting = []
    for source in HydraConfig.get().runtime.config_sources:
        folder = Path(str(source.path).removeprefix("file://")) / "net"
        for file in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
            probe = copy.deepcopy(cfg)
            with open_dict(probe):
                probe.net = OmegaConf.load(file)
            try:
                OmegaConf.to_container(probe.net, resolve=True, throw_on_missing=True)
            except OmegaConfBaseException:  # a size (or another setting) this run does not provide
                continue
            fitting.append(file.stem)
    return fitting


def build_trainer(cfg: DictConfig, resume_step: int | None = None, extra_callbacks: Sequence[Callback] = ()) -> Trainer:
    """Instantiate `cfg.trainer` with the callbacks and loggers the config lists (null entries off).

    `resume_step`: the global step of the checkpoint a fit resumes from. TensorBoard then hides
    what the interrupted run logged after it (`purge_step`), so replayed steps are not shown twice.
    """
    listed = (cfg.get("callbacks") or {}).items()
    callbacks = [instantiate(config, f"callbacks.{name}") for name, config in listed if config is not None]
    if not cfg.trainer.get("enable_checkpointing", True):  # Lightning refuses checkpoint callbacks then
        callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
    callbacks += [*extra_callbacks, ConfigInCheckpoint(checkpoint_config(cfg))]
    callbacks.append(RunSummary(cfg))  # settings at the start, summary at the end, for every logger
    loggers = []
    for name, config in (cfg.get("logger") or {}).items():
        if config is None:
            continue
        is_tensorboard = config.get("_target_", "").endswith("TensorBoardLogger")
        extra = {"purge_step": resume_step} if is_tensorboard and resume_step is not None else {}
        if is_tensorboard and cfg.get("compile", False):
            extra["log_graph"] = False  # TorchScript cannot trace a compiled net
        loggers.append(instantiate(config, f"logger.{name}", **extra))
    check_trainer_types(cfg.trainer)
    # Step values are read from the device every log_every_n_steps global steps, across epochs: an
    # epoch shorter than that loses nothing, so Lightning's warning about it is noise here
    warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval")
    trainer = instantiate(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # Lightning's default: write checkpoints safely
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    return trainer


def check_trainer_types(trainer: DictConfig) -> None:
    """Refuse `trainer.<key>` values of the wrong simple type (`max_epochs=abc`) before Lightning trips over them."""
    hints = typing.get_type_hints(Trainer.__init__)
    for key, value in trainer.items():
        allowed = _simple_types(hints.get(str(key)))
        if allowed and value is not None and not isinstance(value, allowed):
            names = " or ".join(sorted({t.__name__ for t in allowed}))
            raise ConfigError(f"trainer.{key}={value!r} must be {names}; e.g. trainer.{key}=<{names}>")


def _simple_types(hint: Any) -> tuple[type, ...]:
    """The int/float/bool/str types an annotation admits, or () when it admits anything more complex."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    args = tuple(a for a in args if a is not type(None))
    if not args or not all(a in (int, float, bool, str) for a in args):
        return ()
    return (int, float) if float in args else args  # an int is a fine float


def checkpoint_config(cfg: DictConfig) -> dict:
    """The config to store in checkpoints: plain containers, interpolations kept.

    Keeping `${paths.data_dir}/...` unresolved lets a restored run read its data from wherever
    `paths.data_dir` points then; `paths` itself is resolved, since `${hydra:...}` is gone by then.
    """
    config = OmegaConf.to_container(cfg, resolve=False)
    config["paths"] = OmegaConf.to_container(cfg.paths, resolve=True)
    return config


def resolve_checkpoint(cfg: DictConfig) -> int | None:
    """Turn `cfg.ckpt_path` into a checkpoint file; when fitting resumes, continue in the run that wrote it.

    `ckpt_path` may be a checkpoint file, a run directory (its last.ckpt to resume, the checkpoint
    it tested for `train=false`) or "last" (the most recently written last.ckpt among this task's
    runs). Before anything is written, the checkpoint is read and checked to belong to this task,
    module and net, so a mismatched or damaged checkpoint leaves its run exactly as it was. A
    resumed checkpoint inside a run directory makes that directory this run's output directory
    again, so TensorBoard and checkpoints continue where they were; `train=false` only tests the
    checkpoint and records the result in this run's own directory.

    Returns the checkpoint's global step when fitting resumes from it, else None.
    """
    value = cfg.get("ckpt_path")
    if value is None:
        return None
    resuming = cfg.get("train", True)
    if value == "last":
        runs = Path(cfg.paths.log_dir) / cfg.task_name / "runs"
        found = sorted(runs.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise MissingFileError(f"ckpt_path=last: no {runs}/*/checkpoints/last.ckpt to resume from")
        path = found[-1]
    else:
        path = find_checkpoint(value, prefer="last" if resuming else "best")
    checkpoint = load_checkpoint(path)
    check_compatible(checkpoint, path, cfg)
    with open_dict(cfg):
        cfg.ckpt_path = str(path)
        run_dir = path.parent.parent
        if resuming and path.parent.name == "checkpoints":  # <run>/checkpoints/x.ckpt
            hold_for_resume(run_dir)
            cfg.paths.output_dir = str(run_dir)
    return int(checkpoint.get("global_step", 0)) if resuming else None


def check_compatible(checkpoint: dict, path: Path, cfg: DictConfig) -> None:
    """Refuse a checkpoint of another task, data module, module or net than `cfg`'s."""
    stored = checkpoint_run_config(checkpoint, path)
    differences = [
        f"{key} {stored_value!r} (this run: {wanted!r})"
        for key, stored_value, wanted in (
            ("task", stored.get("task_name"), cfg.get("task_name")),
            ("data", stored.data.get("_target_"), cfg.data.get("_target_")),
            ("module", stored.module.get("_target_"), cfg.module.get("_target_")),
            ("net", stored.net.get("_target_"), cfg.net.get("_target_")),
        )
        if stored_value != wanted
    ]
    if differences:
        raise CheckpointError(
            f"ckpt_path={path} was written by another kind of run: {'; '.join(differences)}. "
            f"Pass task={stored.get('task_name')} (and its net), or a checkpoint of this task"
        )


def claim_output_dir(cfg: DictConfig, own_dir: str) -> bool:
    """Claim `own_dir`, this command's directory (see `dltemplate.rundir`), unless it is the run it resumes.

    A resume started from a new directory claims that one too: a failure is recorded there, never
    in the run it tried to continue. Returns whether it claimed `own_dir`.
    """
    if Path(own_dir).resolve() == Path(cfg.paths.output_dir).resolve() and cfg.get("ckpt_path"):
        return False
    return claim(own_dir)
