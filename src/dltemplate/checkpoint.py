"""Read checkpoints as untrusted data and rebuild a trained run (module + data pipeline) from one.

What is guaranteed for any file given as a checkpoint:

- it is read with `torch.load(weights_only=True)`: tensors and plain containers only, no pickled code;
  a damaged or foreign file is one `CheckpointError` naming it;
- every `_target_` it names, at any depth, is checked against the allowlist (`dltemplate.registry`)
  before anything is imported or called (`check_names`), so it can only build the project's own nets,
  modules, data modules, feature functions, losses and initialisation schemes, `torch.nn` layers and
  losses, and `torch.optim` optimizers and schedulers; only then is it built with Hydra's `instantiate`,
  as the run's own config is (a loss or scheme named by a short name goes the same way);
- its stored config is data, taken as written: no interpolation in it is resolved (`${oc.env:...}`
  stays those characters), except a leading `${paths.<name>}` in a data setting, which is this
  run's path; any other interpolation in its data settings is refused;
- it chooses no place to read from or write to: `paths` (data, cache and log folders) are the
  current run's, a file or folder setting of its data module (`file`, `*_file`, `root`, `folder`,
  `archive`, `*_dir`, ...) is followed only where it lies inside this run's `paths.data_dir` or
  `paths.cache_dir` (else it is withheld: evaluating needs it passed as `+data.<key>=`, forecasting
  the trained series needs `input=`), and the data module's download sources are switched off, so
  restoring never downloads anything;
- its net is built on the meta device and compared with its weights before any memory is taken, and its
  `num_classes` must be its data module's count of classes: a crafted size is one message;
- its net is built without pretrained weights or weight files (`pretrained`, `weights`), whatever
  its config says (`dltemplate.modules.factories.no_downloads`): the trained weights are in its
  state dict, a transformer's architecture and tokenizer in its config and data state; no
  configuration can ask for remote code (`trust_remote_code` is not an argument of any net).
"""

import logging
import os
import re
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
from dltemplate.data.protocols import HasClasses
from dltemplate.errors import CheckpointError, ConfigError, MissingFileError, UserError
from dltemplate.files import write_atomically
from dltemplate.instantiate import instantiate
from dltemplate.modules.factories import no_downloads
from dltemplate.rundir import read_result
from dltemplate.selection import drop_old_data_keys

log = logging.getLogger(__name__)

DOWNLOAD_KEYS = ("download", "url")  # where data modules keep their download sources
# data settings that name a file or folder to read (or write): followed only inside this run's paths
# folder names taken under another setting's folder (images: `<root>/<test_folder>`), followed only with it
RELATIVE_TO = {"test_folder": "root"}
PATH_KEYS = re.compile(r"(^|_)(file|root|folder|archive|dir|path)s?$")
# where a followed file or folder may lie: this run's
READABLE_PATHS = ("data_dir", "cache_dir")
_INTERPOLATION = re.compile(r"(\\*)\$\{")  # OmegaConf: backslashes before `${` escape in pairs
_PATHS_PREFIX = re.compile(r"\$\{paths\.(\w+)\}(.*)", re.DOTALL)


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
        raise CheckpointError(unreadable(path)) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict)")
    return checkpoint


def unreadable(path: Path) -> str:
    """Why `path` cannot be loaded, from its own bytes (torch's message is about its own options), and
    which other checkpoints lie beside it."""
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            head = file.read(4)
    except OSError as error:
        return f"{path} cannot be read as a checkpoint: {error.strerror or error}"
    if size == 0:
        cause = "it is empty (0 bytes)"
    elif head.startswith(b"PK\x03\x04"):
        cause = f"it is a damaged or truncated checkpoint archive ({size} bytes; an interrupted write or copy?)"
    elif head[:1] == b"\x80":
        cause = "it is a damaged or truncated legacy checkpoint, or a pickle that torch.save did not write"
    else:
        cause = "it is not a checkpoint (its first bytes are not those of a file torch.save writes)"
    others = sorted(p.name for p in path.parent.glob("*.ckpt") if p.name != path.name)
    hint = (
        f"use another checkpoint beside it ({', '.join(others[:5])}{', ...' if len(others) > 5 else ''})"
        if others
        else "use another checkpoint of the run, or train again"
    )
    return f"{path} cannot be read as a checkpoint: {cause}; {hint}"


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
    try:
        return OmegaConf.create(literal(config))
    except Exception as error:  # tensors, bytes or odd keys where settings belong
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise CheckpointError(
            f"{path}: its run config holds something other than settings ({reason}); "
            "use a checkpoint written by this template's train.py"
        ) from None


def literal(value: Any) -> Any:
    """Plain data as an OmegaConf config holds it literally: every `${` escaped, so nothing resolves.

    A checkpoint's config is data; `${oc.env:SECRET}` in it must stay those characters, whoever reads
    `cfg.task_name` or `cfg.data.file` later.
    """
    if isinstance(value, str):
        return _INTERPOLATION.sub(lambda found: found.group(1) * 2 + "\\${", value)
    if isinstance(value, Mapping):
        return {key: literal(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [literal(item) for item in value]
    return value


def is_path_setting(key: Any) -> bool:
    """Whether a data setting names a file or folder (`train_file`, `file`, `root`, `cache_dir`, ...)."""
    return isinstance(key, str) and PATH_KEYS.search(key.lower()) is not None


def default_paths(data_dir: str | None = None) -> dict[str, str]:
    """The `paths` of conf/paths/default.yaml, for restores outside a Hydra run (the Python API)."""
    return {
        "data_dir": data_dir or os.environ.get("DATA_DIR", "data"),
        "log_dir": "logs",
        "output_dir": ".",
        "cache_dir": os.environ.get("CACHE_DIR", ".cache"),
    }


def restore(
    ckpt_path: str | Path,
    paths: Mapping[str, Any] | None = None,
    data_overrides: Mapping[str, Any] | None = None,
    reads_data: bool = False,
) -> tuple[LightningModule, LightningDataModule, DictConfig]:
    """Rebuild the trained module, its data module (with fitted preprocessing) and the run config.

    Args:
        ckpt_path: A checkpoint written by a run of this template, or a run directory (its best one).
        paths: The current run's `paths` (data_dir, cache_dir, ...), default `default_paths()`; they
            replace the checkpoint's, which name no place this process reads or writes.
        data_overrides: Data settings that replace the checkpoint's (e.g. another `test_file`); the
            fitted preprocessing stays the checkpoint's.
        reads_data: The caller reads the data module's files (evaluation): a file setting the
            checkpoint names outside this run's paths is then refused, with how to pass it. Otherwise
            such a setting is withheld (None; listed in the data module's `withheld_paths`).

    The returned config is the checkpoint's, taken literally (see `literal`), with this run's `paths`.
    """
    path = find_checkpoint(ckpt_path, prefer="best")
    checkpoint = load_checkpoint(path)
    check_finite_weights(checkpoint, path)
    cfg = checkpoint_run_config(checkpoint, path)
    paths = default_paths() if paths is None else paths
    paths = OmegaConf.to_container(paths, resolve=True) if OmegaConf.is_config(paths) else dict(paths)
    cfg.paths = OmegaConf.create(literal(paths))
    where = f"{path}: config.data"
    stored = drop_old_data_keys(checkpoint["config"]["data"])  # an earlier version's data.folds, ...
    overrides = {k: v for k, v in (data_overrides or {}).items() if k != "_target_"}
    unknown = sorted(set(overrides) - set(stored))
    if unknown:
        raise CheckpointError(f"data override(s) {unknown} are not settings of {stored.get('_target_')}")
    data_config, withheld = data_settings(stored, overrides, paths, where)
    if withheld and reads_data:
        given = " ".join(f"+data.{key}=<{'file' if 'file' in key else 'folder'}>" for key in withheld)
        raise CheckpointError(
            f"{where} names {_listed(withheld)}: outside this run's paths.data_dir ({paths.get('data_dir')}) and "
            f"paths.cache_dir, so not read (a checkpoint chooses no file to read); pass {given}, "
            "or paths.data_dir=<the folder that holds them>"
        )
    for key in DOWNLOAD_KEYS:  # a checkpoint names no URL to fetch
        if key in data_config:
            data_config[key] = None
    check_names(checkpoint, data_config, path)
    data_cls = _built(lambda: registry.resolve(data_config.get("_target_"), "datamodule", where), path)
    name = data_cls.__qualname__
    datamodule = _built(
        lambda: instantiate(data_config, where, _recursive_=False),
        f"{path}: its data settings (config.data) cannot build {name}",
    )
    datamodule.fetches_data = False
    datamodule.withheld_paths = withheld
    state = checkpoint.get(name)
    if state:
        _built(
            lambda: datamodule.load_state_dict(state),
            f"{path}: its fitted preprocessing (the {name} state: encoders, classes, vocabulary) is damaged "
            "or not this data module's",
        )
    module_cls = _built(
        lambda: registry.resolve(cfg.module.get("_target_"), "module", f"{path}: config.module"), f"{path}"
    )
    check_class_count(checkpoint, datamodule, path)
    net_error = check_net_sizes(checkpoint, path)
    at_fault = (
        "its net settings (hyper_parameters.net) cannot build its net"
        if net_error is not None
        else f"its module settings (hyper_parameters) cannot build {module_cls.__qualname__} with its weights"
    )
    with no_downloads():
        module = _built(
            lambda: module_cls.load_from_checkpoint(path, map_location="cpu", weights_only=True), f"{path}: {at_fault}"
        )
    return module, datamodule, cfg


# where Lightning reads a module's saved arguments from (the first two: older versions' keys)
HYPERPARAMETER_KEYS = ("hparams", "module_arguments", "hyper_parameters")


def net_input(datamodule: LightningDataModule, raw: torch.Tensor) -> torch.Tensor:
    """What the net receives for `raw` data-module output: the device-side transform applied
    (normalisation for images; the identity elsewhere), outside any training step."""
    return datamodule.on_after_batch_transfer(raw, 0)


def check_names(checkpoint: Mapping[str, Any], data_config: Mapping[str, Any], path: Path) -> None:
    """Refuse the checkpoint unless every `_target_` it holds, at every depth, is allowed for its place
    (`dltemplate.registry`), before anything it names is imported: the data settings (with their derived
    columns), the stored module and net configs, and the module's saved hyperparameters (the net with its
    layers and init scheme, optimizer, scheduler, loss; see `registry.NESTED`).

    Every name is checked by its form first, then each is imported and checked. What is built from the
    checkpoint holds no interpolation (`${...}`): Hydra's `instantiate` would resolve it. A refused derived
    column is a `ConfigError` (as building it says), anything else a `CheckpointError`.
    """
    found = registry.check_names(data_config, "datamodule", f"{path}: config.data")
    try:
        config = checkpoint["config"]
        found += registry.check_names(config["module"], "module", f"{path}: config.module", interpolations=True)
        found += registry.check_names(config["net"], "net", f"{path}: config.net", interpolations=True)
        for key in HYPERPARAMETER_KEYS:
            if checkpoint.get(key) is not None:
                found += registry.check_names(checkpoint[key], "hyperparameters", f"{path}: {key}")
        registry.resolve_names(found)
    except ConfigError as error:
        raise CheckpointError(f"{path}: {error}" if not str(error).startswith(str(path)) else str(error)) from None


def check_class_count(checkpoint: Mapping[str, Any], datamodule: LightningDataModule, path: Path) -> None:
    """Refuse a module's `num_classes` that is not a whole number or not the data module's count of classes
    (a crafted `num_classes: 1000000000` would size the metrics' state by it)."""
    count = (checkpoint.get("hyper_parameters") or {}).get("num_classes")
    if count is None:
        return
    names = datamodule.class_names if isinstance(datamodule, HasClasses) else None
    if not isinstance(count, int) or isinstance(count, bool) or count < 2:
        raise CheckpointError(f"{path}: its module settings say num_classes={count!r}, not a whole number from 2")
    if isinstance(names, (list, tuple)) and names and count != len(names):
        raise CheckpointError(
            f"{path}: its module settings say num_classes={count}, but its data module has {len(names)} classes; "
            "use a checkpoint written by this template's train.py"
        )


def check_net_sizes(checkpoint: Mapping[str, Any], path: Path) -> Exception | None:
    """Refuse a net whose settings build other shapes than its weights, before any memory is taken.

    The net of `hyper_parameters.net` is built on the meta device (shapes, no storage) and compared
    with the weights of the state dict, so that a crafted size (`hidden: [10**12]`) is one message
    rather than terabytes asked of the allocator. Returns the error of a net that cannot even be built
    on the meta device (the real build then says what is wrong), else None.
    """
    from dltemplate.modules.factories import build_net

    spec = (checkpoint.get("hyper_parameters") or {}).get("net")
    if not isinstance(spec, Mapping):
        return None
    try:
        with torch.device("meta"), no_downloads():
            net = build_net(dict(spec))
    except UserError as error:
        raise CheckpointError(f"{path}: its net settings (hyper_parameters.net) are refused: {error}") from None
    except Exception as error:  # a negative or text size; built for real, it fails the same way
        return error
    weights = {k[4:]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    built = net.state_dict()
    for key in sorted(set(weights) | set(built)):
        have, want = weights.get(key), built.get(key)
        have_shape = None if have is None else tuple(getattr(have, "shape", ()))
        want_shape = None if want is None else tuple(want.shape)
        if have_shape != want_shape:
            raise CheckpointError(
                f"{path}: its net settings (hyper_parameters.net) do not fit its weights: net.{key} is "
                f"{_shape(have_shape)} in the weights and {_shape(want_shape)} as the settings build it; "
                "use a checkpoint written by this template's train.py"
            )
    return None


def _shape(shape: tuple[int, ...] | None) -> str:
    return "absent" if shape is None else f"[{'×'.join(map(str, shape))}]"


def data_settings(
    stored: Mapping[str, Any], overrides: Mapping[str, Any], paths: Mapping[str, Any], where: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The data settings to build a restored data module with, and the file settings withheld.

    `overrides` (the user's) are taken as given. The checkpoint's own are taken as written, except
    that a leading `${paths.<name>}` becomes this run's path; any other interpolation is refused. A
    file or folder setting (`is_path_setting`) is kept only where it lies inside this run's
    `paths.data_dir` or `paths.cache_dir`; otherwise it is withheld (None here, its stored value in
    the second dict).
    """
    settings: dict[str, Any] = {}
    withheld: dict[str, Any] = {}
    for key, value in stored.items():
        if key in overrides:
            settings[key] = overrides[key]
            continue
        value = _with_paths(value, paths, f"{where}.{key}")
        if key in RELATIVE_TO:  # a folder name under another setting's folder: checked below, with it
            settings[key] = value
            continue
        if key != "_target_" and is_path_setting(key) and value is not None and not _inside(value, paths):
            withheld[key], value = stored[key], None
        settings[key] = value
    for key, base in RELATIVE_TO.items():
        value = settings.get(key)
        if key in overrides or value is None:
            continue
        folder, name = settings.get(base), Path(str(value))
        plain = not name.is_absolute() and ".." not in name.parts  # stays under its folder
        chosen = base in overrides  # the user named the folder: a plain name under it is followed
        if folder is None or not plain or not (chosen or _inside(os.path.join(str(folder), str(value)), paths)):
            withheld[key], settings[key] = stored[key], None
    return settings, withheld


def _with_paths(value: Any, paths: Mapping[str, Any], where: str) -> Any:
    """`value` with a leading `${paths.<name>}` of its strings filled in; any other interpolation refused."""
    if isinstance(value, Mapping):
        return {k: _with_paths(v, paths, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_with_paths(v, paths, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    found = _PATHS_PREFIX.fullmatch(value)
    if found and "${" not in found.group(2) and paths.get(found.group(1)) is not None:
        return f"{paths[found.group(1)]}{found.group(2)}"
    raise CheckpointError(
        f"{where}={value!r} is an interpolation; a checkpoint's settings are taken as written, and only a "
        "leading ${paths.<name>} is filled in (with this run's paths). Use a checkpoint written by this "
        "template's train.py"
    )


def _inside(value: Any, paths: Mapping[str, Any]) -> bool:
    """Whether a file setting's value is one path inside this run's data or cache folder."""
    if not isinstance(value, (str, Path)) or not str(value) or "\0" in str(value):
        return False
    target = Path(os.path.abspath(value))
    if ".." in Path(value).parts:
        return False
    for name in READABLE_PATHS:
        root = paths.get(name)
        if root is not None and target.is_relative_to(Path(os.path.abspath(root))):
            return True
    return False


def _listed(settings: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in settings.items())


def _built(make, what: str | Path) -> Any:
    """Run `make`; a config error keeps its message, anything else is said as `what` and the error's first line.

    `what` names the part of the checkpoint that failed (its data settings, its fitted preprocessing,
    its net or module settings), so the message says where the cause is.
    """
    try:
        return make()
    except ConfigError as error:  # said where in the checkpoint, unless its message already starts there
        message = str(error)
        raise CheckpointError(message if message.startswith(str(what)) else f"{what}: {message}") from None
    except UserError:
        raise
    except (TypeError, KeyError, ValueError, RuntimeError, AttributeError, IndexError, OverflowError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = "; ".join(lines)[:300] or type(error).__name__
        raise CheckpointError(
            f"{what} ({type(error).__name__}: {reason}); use a checkpoint written by this template's train.py"
        ) from None
