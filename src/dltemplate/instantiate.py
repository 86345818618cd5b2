"""Objects named by `_target_`, built with Hydra's `instantiate`, with one-line errors.

Every object a config describes (nets, modules, data modules, optimizers, schedulers, losses,
initialisation schemes, derived columns, callbacks, loggers, the Trainer) is built here by
`hydra.utils.instantiate`. The run's own config may name any class or function, at any depth: the
project's (`<package>/nets/<any folders>/<file>.py`), a library's (`net._target_=torchvision.models.resnet18`).
A config read from a checkpoint is checked against the allowlist first (`dltemplate.registry`,
called by `dltemplate.checkpoint.restore` and a module's `load_from_checkpoint`), then built here too.

A `_target_` that cannot be found is one `ConfigError` naming its key (`net._target_`,
`net.activation._target_`) and what is missing; an error raised by the object being built
(a `ConfigError` of a module, a `TypeError` of a wrong argument) is raised as it is, not wrapped.
"""

import re
import sys
from collections.abc import Mapping
from typing import Any

from hydra._internal.utils import _locate  # what `instantiate` uses (hydra.utils.get_object logs its failures)
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate

from dltemplate.errors import ConfigError
from dltemplate.moved import moved, upgrade_targets

PACKAGE = __name__.split(".")[0]
_LOCATING = re.compile(r"Error locating target '(.*?)'")
_FULL_KEY = re.compile(r"\nfull_key: (\S+)")
_ARGS = re.compile(r"_args_(\d+)")  # Hydra's key for a positional argument


def instantiate(config: Any, where: str, expect: type | None = None, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate(config, **kwargs)` with plain containers for arguments (`_convert_="all"`,
    unless `kwargs` say otherwise), as a checkpoint stores them.

    `where` is the config's key for messages ("net", "module.loss"). `expect`: a base class; a class
    `_target_` that is not one is refused before it is built, and so is a built object that is not one
    (a function `_target_` such as `torchvision.models.resnet18` is called, its result checked).
    """
    config = upgrade_targets(config)  # a module path that moved (`dltemplate.moved`): old configs still build
    target = config.get("_target_") if isinstance(config, Mapping) else None
    if expect is not None and isinstance(target, str):
        found = locate(target, where)
        if isinstance(found, type) and not issubclass(found, expect):
            raise ConfigError(f"{where}._target_={target!r} is not a {_name(expect)} (it is a {_name(found)})")
    kwargs.setdefault("_convert_", "all")
    try:
        built = hydra_instantiate(config, **kwargs)
    except InstantiationException as error:
        failure = _unwrapped(error, where)
        raise failure from failure.__cause__  # a one-line ConfigError, or the object's own error with its cause
    partial = kwargs.get("_partial_") or (isinstance(config, Mapping) and config.get("_partial_"))
    if expect is not None and not partial and not isinstance(built, expect):
        raise ConfigError(f"{where}._target_={target!r} built a {type(built).__name__}, not a {_name(expect)}")
    return built


def locate(target: Any, where: str) -> Any:
    """The class or function `target` names, as `instantiate` finds it (importing its module); a
    `ConfigError` naming `<where>._target_` when there is none."""
    if not isinstance(target, str) or not target:
        raise ConfigError(f"{where}._target_ must be a dotted name (package.module.Name), got {target!r}")
    try:
        return _locate(moved(target))  # a module path that moved: its new place
    except (ImportError, ValueError) as error:
        failure = _not_found(target, where, error)
        raise failure from failure.__cause__


def _unwrapped(error: InstantiationException, where: str) -> Exception:
    """The error to raise for Hydra's `error`: a one-line `ConfigError` when a `_target_` cannot be found
    or called, else the error the object itself raised."""
    message = str(error)
    key = _FULL_KEY.search(message)
    place = where if key is None else f"{where}." + _ARGS.sub(r"_args_[\1]", key.group(1))
    locating = _LOCATING.match(message)
    if locating:
        return _not_found(locating.group(1), place, error.__cause__)
    if message.startswith("Expected a callable target"):
        return ConfigError(f"{place}._target_ names {message.split(', got ', 1)[-1]}, not a class or function")
    cause = error.__cause__
    if cause is not None:  # raised while collecting the arguments or by the call itself: the object's own error
        return cause
    return ConfigError(f"{place}: {' '.join(message.split())}")  # Hydra's own refusal (a blocklisted target)


def _not_found(target: str, where: str, error: BaseException | None) -> Exception:
    """One line saying why `target` cannot be found (no such module, no such name in it), or the error
    that importing its module raised (a bug in that file keeps its traceback)."""
    cause = getattr(error, "__cause__", None) or error
    key = f"{where}._target_={target!r}"
    module, _, name = target.rpartition(".")
    if isinstance(cause, ModuleNotFoundError):
        missing = cause.name or ""
        if missing == target and module:  # Hydra tries a missing name as a submodule last
            return ConfigError(f"{key}: {_module_words(module)} does not define {name}; check the name")
        if target.startswith(f"{missing}."):
            return ConfigError(f"{key}: {_module_words(missing)} does not exist; check the name")
        return ConfigError(f"{key}: importing it needs the module {missing!r}, which is not installed")
    if isinstance(cause, AttributeError):
        return ConfigError(f"{key}: {cause}; check the name")
    if isinstance(cause, ValueError) or cause is None:
        return ConfigError(f"{key} is not a dotted name (package.module.Name)")
    return cause  # importing the module failed: its own error (a syntax error, ...)


def _module_words(module: str) -> str:
    """A module as the user finds it: the project's as its file, another as an installed package's module."""
    if module.split(".")[0] == PACKAGE:
        return f"{module.replace('.', '/')}.py"
    return f"module {module} (a package that is not installed?)" if "." not in module else f"module {module}"


def _name(cls: type) -> str:
    """`torch.nn.Module` rather than where torch defines it."""
    for namespace in ("torch.nn", "torch.optim", "torch.optim.lr_scheduler", "lightning.pytorch"):
        if getattr(sys.modules.get(namespace), cls.__qualname__, None) is cls:
            return f"{namespace}.{cls.__qualname__}"
    return f"{cls.__module__}.{cls.__qualname__}"
