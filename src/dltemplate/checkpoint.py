"""Read checkpoints as untrusted data and rebuild a trained run (module + data pipeline) from one.

What is guaranteed for any file given as a checkpoint:

- it is read with `torch.load(weights_only=True)`: tensors and plain containers only, no pickled code;
  a damaged or foreign file is one `CheckpointError` naming it;
- every `_target_` it names, at any depth, is resolved through `dltemplate.registry` before anything
  is imported or called, so it can only build the project's own nets, modules, data modules,
  feature functions, losses and initialisation schemes, `torch.nn` layers and losses, and
  `torch.optim` optimizers and schedulers (a loss or scheme named by a short name goes the same way);
- it chooses no place to read from or write to beyond its data files: `paths` (data, cache and log
  folders) are the current run's, and the data module's download sources are switched off, so
  restoring never downloads anything;
- its net is built without pretrained weights or weight files (`pretrained`, `weights`), whatever
  its config says (`dltemplate.modules.factories.no_downloads`): the trained weights are in its
  state dict, a transformer's architecture and tokenizer in its config and data state; no
  configuration can ask for remote code (`trust_remote_code` is not an argument of any net).
"""

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch import LightningDataModule, LightningModule
from omegaconf import DictConfig, OmegaConf

from dltemplate import registry
from dltemplate.errors import CheckpointError, ConfigError, MissingFileError, UserError
from dltemplate.files import write_atomically
from dltemplate.modules.factories import no_downloads
from dltemplate.rundir import read_result

log = logging.getLogger(__name__)

DOWNLOAD_KEYS = ("download", "url")  # where data modules keep their download sources


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, writing a local checkpoint beside its target and renaming it there.

    Lightning writes through fsspec, which puts the file in $TMPDIR and moves it: a copy when the
    run directory is on another filesystem (a Docker volume, a network disk), so a kill mid-copy
    left a truncated `last.ckpt` and the previous one gone. Here the temporary file is in the
    checkpoint's folder, flushed to disk, then renamed over the target in one step
    (`files.write_atomically`): until the new checkpoint is complete, the previous one stays.
    Remote paths (s3://...) keep Lightning's way.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        write_atomically(Path(path), lambda partial: torch.save(checkpoint, partial))


def find_checkpoint(value: str | Path, prefer: str = "best") -> Path:
    """The checkpoint file `value` names: a file, or a run directory (its best or last checkpoint).

    For a run directory, `prefer="best"` picks the checkpoint the run tested (recorded in its
    result.json, else its only `epoch*.ckpt`), and `prefer="last"` its `last.ckpt` (to resume).
    The file is always the one inside the directory given: a copied or moved run directory uses its
    own checkpoint, never the original's through the absolute path its result.json recorded. The
    file chosen is logged.
    """
    path = Path(value)
    if path.is_file():
        return path
    if not path.exists():
        raise MissingFileError(f"ckpt_path={value}: {path} does not exist; give a .ckpt file or a run directory")
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    last = folder / "last.ckpt"
    if prefer == "best":
        tested = sorted(p for p in folder.glob("*.ckpt") if not p.name.startswith("last"))
        best = _recorded_best(path) or (tested[0] if len(tested) == 1 else None)
        if best is not None:
            log.info("ckpt_path=%s: using %s, the checkpoint the run tested", value, best)
            return best
    if last.is_file():
        log.info("ckpt_path=%s: using %s, the run's last checkpoint", value, last)
        return last
    found = sorted(p.name for p in folder.glob("*.ckpt"))
    raise MissingFileError(
        f"ckpt_path={value}: {folder} holds no {'checkpoint the run tested, nor a ' if prefer == 'best' else ''}"
        f"last.ckpt (it has {found or 'no .ckpt files'}); pass one of its .ckpt files"
    )


def _recorded_best(run_dir: Path) -> Path | None:
    """The checkpoint the run in `run_dir` tested, as a file inside `run_dir` (None if it is not there).

    result.json records the absolute path where the run wrote it; a copy of the directory holds the
    same file at the same place relative to the directory.
    """
    record = read_result(run_dir) or {}
    best, original = record.get("best_checkpoint"), record.get("output_dir")
    if not isinstance(best, str):
        return None
    try:
        here = run_dir / Path(best).relative_to(str(original))
    except ValueError:  # recorded elsewhere (an older record): the file of that name in the run's checkpoints
        here = run_dir / "checkpoints" / Path(best).name
    return here if here.is_file() else None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file with `weights_only=True`; a file that is not one is a `CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any failure to parse foreign bytes means: not a usable checkpoint
        if "Unsupported global" in str(error) or "not an allowed global" in str(error):
            raise CheckpointError(
                f"{path} holds Python objects other than tensors and plain data; it is refused, since "
                "loading it could run code. Use a checkpoint written by this template's train.py"
            ) from None
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise CheckpointError(
            f"{path} cannot be read as a checkpoint ({type(error).__name__}: {reason}); it is damaged or "
            "truncated (an interrupted copy?) or not a checkpoint. Use another one, e.g. the run's last.ckpt"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict)")
    return checkpoint


def check_finite_weights(checkpoint: Mapping[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint whose weights hold NaN or infinity: its every prediction would be meaningless.

    A run that diverged (too high a learning rate) saves such weights; predicting with them gives
    the same class for every row, or NaN, with no other sign.
    """
    state = checkpoint.get("state_dict")
    bad = [
        str(name)
        for name, tensor in (state.items() if isinstance(state, Mapping) else ())
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all()
    ]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise CheckpointError(
            f"{path} holds weights that are not finite numbers (NaN or infinity) in {', '.join(bad[:3])}{more}: "
            "the run diverged before it was saved. Use an earlier checkpoint of the run, or train again "
            "with a lower module.optimizer.lr"
        )


def checkpoint_run_config(checkpoint: Mapping[str, Any], path: str | Path) -> DictConfig:
    """The run config stored in `checkpoint`, checked to have the parts a restore needs."""
    config = checkpoint.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} has no run config: it was not written by this template's train entry point")
    for part in ("data", "module", "net"):
        if not isinstance(config.get(part), dict) or "_target_" not in config[part]:
            raise CheckpointError(f"{path}: its run config has no {part} config with a _target_")
    return OmegaConf.create(config)


def default_paths(data_dir: str | None = None) -> dict[str, str]:
    """The `paths` of conf/paths/default.yaml, for restores outside a Hydra run (the Python API)."""
    return {
        "data_dir": data_dir or os.environ.get("DATA_DIR", "data"),
        "log_dir": "logs",
        "output_dir": ".",
        "cache_dir": os.environ.get("CACHE_DIR", ".cache"),
    }


def restore(
    ckpt_path: str | Path, paths: Mapping[str, Any] | None = None, data_overrides: Mapping[str, Any] | None = None
) -> tuple[LightningModule, LightningDataModule, DictConfig]:
    """Rebuild the trained module, its data module (with fitted preprocessing) and the run config.

    Args:
        ckpt_path: A checkpoint written by a run of this template, or a run directory (its best one).
        paths: The current run's `paths` (data_dir, cache_dir, ...), default `default_paths()`; they
            replace the checkpoint's, which name no place this process reads or writes.
        data_overrides: Data settings that replace the checkpoint's (e.g. another `test_file`); the
            fitted preprocessing stays the checkpoint's.
    """
    path = find_checkpoint(ckpt_path, prefer="best")
    checkpoint = load_checkpoint(path)
    check_finite_weights(checkpoint, path)
    cfg = checkpoint_run_config(checkpoint, path)
    paths = default_paths() if paths is None else paths
    cfg.paths = OmegaConf.create(
        OmegaConf.to_container(paths, resolve=True) if OmegaConf.is_config(paths) else dict(paths)
    )
    try:
        data_config = OmegaConf.to_container(cfg.data, resolve=True)
    except Exception as error:
        raise CheckpointError(f"{path}: its data config cannot be resolved ({error})") from None
    unknown = sorted(set(data_overrides or {}) - set(data_config) - {"_target_"})
    if unknown:
        raise CheckpointError(f"data override(s) {unknown} are not settings of {data_config.get('_target_')}")
    data_config.update({k: v for k, v in (data_overrides or {}).items() if k != "_target_"})
    for key in DOWNLOAD_KEYS:  # a checkpoint names no URL to fetch
        if key in data_config:
            data_config[key] = None
    where = f"{path}: config.data"
    data_cls = _built(lambda: registry.resolve(data_config.get("_target_"), "datamodule", where), path)
    datamodule = _built(lambda: registry.instantiate(data_config, "datamodule", where, recursive=False), path)
    datamodule.fetches_data = False
    state = checkpoint.get(data_cls.__qualname__)
    if state:
        _built(lambda: datamodule.load_state_dict(state), path)
    module_cls = _built(lambda: registry.resolve(cfg.module.get("_target_"), "module", f"{path}: config.module"), path)
    with no_downloads():
        module = _built(lambda: module_cls.load_from_checkpoint(path, map_location="cpu", weights_only=True), path)
    return module, datamodule, cfg


def _built(make, path: Path) -> Any:
    """Run `make`; a config error keeps its message, anything else is a checkpoint that does not fit."""
    try:
        return make()
    except ConfigError as error:
        raise CheckpointError(str(error)) from None
    except UserError:
        raise
    except (TypeError, KeyError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"{path} does not fit this version of the template ({type(error).__name__}: {error})"
        ) from None
