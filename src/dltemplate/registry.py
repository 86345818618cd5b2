"""The one allowlist of what a config or a checkpoint may name, checked before anything is imported.

A run config, and so every checkpoint (which stores it), names classes and functions by
`_target_`. A checkpoint is data from disk: building from it must neither import nor call anything
the project did not choose. Every `_target_`, at every depth, is therefore resolved here by name,
against the *kind* of thing expected at that place:

    kind        may name
    net         nn.Module classes defined in the project's `nets` packages (any folder depth), or any `torch.nn` layer
    layer       the same: what a net's config may hold inside it (an activation, a block)
    module      LightningModule classes defined in the project's `modules` packages
    datamodule  LightningDataModule classes defined in the project's `data` packages
    optimizer   `torch.optim` optimizers
    scheduler   `torch.optim.lr_scheduler` schedulers
    loss        `torch.nn` losses, and losses registered with `@register("loss")` (`dltemplate.losses`)
    init        weight-initialisation schemes registered with `@register("init")` (`dltemplate.nets.init`)
    feature     functions registered with `@register("feature")` (derived table columns)

Every `_target_` of a config is first checked by its form alone (`check_names`), so a config with
one refused name imports nothing it names. A name is accepted only in one of these forms:
`<package>.<submodule>.<Name>` where the submodule lies inside the project package of that kind and
defines `Name` itself (re-exports such as `dltemplate.data.tabular.pd` are refused),
`torch.nn.<Name>`-style members of the exact torch namespace of the kind, or an object registered
for the kind. Only then is the submodule imported, and the object must still be of the kind's base
class. A kind's package is the package's own (`dltemplate.nets`) or one inside a folder of the
package (`dltemplate.image.nets`, a family's). A module path that has moved is read as its new
path (`dltemplate.moved`), so old checkpoints keep loading. Extend the allowlist with
`register(kind)` (a class or function of yours) or `add_source(kind, ...)` (a new namespace or a
new kind).

`instantiate` builds a checked config. It is deliberately not Hydra's `instantiate`: Hydra imports
whatever a name says before anyone can look at it, and resolves interpolations (`${oc.create:...}`)
again while building, which could produce a `_target_` no check has seen.
"""

import functools
import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dltemplate.errors import ConfigError
from dltemplate.moved import MOVED

PACKAGE = __name__.split(".")[0]
SPECIAL_KEYS = {"_target_", "_args_", "_partial_", "_recursive_", "_convert_"}


@dataclass(frozen=True)
class Namespace:
    """Classes defined in a subpackage of the project, e.g. `nets` for `dltemplate.nets.mlp.MLP`, or
    in that subpackage of one of the project's folders (`dltemplate.image.nets.resnet.ResNet`)."""

    subpackage: str
    base: str  # "module:Class", imported lazily (Lightning is slow to import)

    def allows(self, module_name: str, attr: str) -> bool:
        """Whether the name has this namespace's form (nothing imported)."""
        # the subpackage right under the package, or under one of its folders (image/nets/resnet.py: a
        # family's own nets); any depth inside it (nets/custom/tiny.py): it is the project's own code,
        # and `find` still requires the object to be defined in that very module
        parts = module_name.split(".")
        depth = 1 if parts[1:2] == [self.subpackage] else 2 if parts[2:3] == [self.subpackage] else 0
        return parts[0] == PACKAGE and depth > 0 and len(parts) > depth + 1 and all(p.isidentifier() for p in parts)

    def find(self, module_name: str, attr: str) -> Any:
        if not self.allows(module_name, attr):
            return None
        try:  # imports only `package` itself (ours) to look for the submodule
            if importlib.util.find_spec(module_name) is None:
                return None
        except (ImportError, AttributeError, ValueError):
            return None
        obj = getattr(importlib.import_module(module_name), attr, None)
        if getattr(obj, "__module__", None) != module_name:  # defined there, not imported into it
            return None
        return obj if _is_subclass(obj, _load(self.base)) else None


@dataclass(frozen=True)
class Members:
    """Members of one torch namespace, e.g. `torch.optim.AdamW`, of a given base class."""

    module: str
    base: str

    def allows(self, module_name: str, attr: str) -> bool:
        return module_name == self.module and not attr.startswith("_")

    def find(self, module_name: str, attr: str) -> Any:
        if not self.allows(module_name, attr):
            return None
        obj = getattr(importlib.import_module(self.module), attr, None)  # torch namespaces: already imported
        return obj if _is_subclass(obj, _load(self.base)) else None


@dataclass(frozen=True)
class Registered:
    """Objects registered for a kind with `register`, by their full name.

    `modules` lists the project's modules whose import registers them (imported before a lookup).
    """

    kind: str
    modules: tuple[str, ...] = ()

    def allows(self, module_name: str, attr: str) -> bool:
        return self.find(module_name, attr) is not None  # imports only the project's registering modules

    def find(self, module_name: str, attr: str) -> Any:
        for module in self.modules:
            importlib.import_module(module)
        return _REGISTERED.get(self.kind, {}).get(f"{module_name}.{attr}")


_REGISTERED: dict[str, dict[str, Any]] = {}

_SOURCES: dict[str, list[Any]] = {
    "net": [Namespace("nets", "torch.nn:Module"), Members("torch.nn", "torch.nn:Module"), Registered("net")],
    "layer": [Namespace("nets", "torch.nn:Module"), Members("torch.nn", "torch.nn:Module"), Registered("net")],
    "module": [Namespace("modules", "lightning.pytorch:LightningModule"), Registered("module")],
    "datamodule": [Namespace("data", "lightning.pytorch:LightningDataModule"), Registered("datamodule")],
    "optimizer": [Members("torch.optim", "torch.optim:Optimizer"), Registered("optimizer")],
    "scheduler": [Members("torch.optim.lr_scheduler", "torch.optim.lr_scheduler:LRScheduler"), Registered("scheduler")],
    "loss": [Members("torch.nn", "torch.nn.modules.loss:_Loss"), Registered("loss", (f"{PACKAGE}.losses",))],
    "init": [Registered("init", (f"{PACKAGE}.nets.init",))],
    "feature": [Registered("feature", (f"{PACKAGE}.data.features",))],
}
# what may appear nested inside a config of each kind, when it is built recursively
_NESTED: dict[str, tuple[str, ...]] = {"net": ("layer",), "layer": ("layer",)}


def register(kind: str, name: str | None = None) -> Callable[[Any], Any]:
    """Decorator: allow the decorated class or function wherever `kind` is expected.

    Its `_target_` is its full name (`module.qualname`), or `name` if given.
    """
    if kind not in _SOURCES:
        raise ConfigError(f"unknown kind {kind!r}; kinds are {sorted(_SOURCES)}")

    def add(obj: Any) -> Any:
        _REGISTERED.setdefault(kind, {})[name or f"{obj.__module__}.{obj.__qualname__}"] = obj
        return obj

    return add


def add_source(kind: str, source: Any, nested: tuple[str, ...] | None = None) -> None:
    """Allow a new source (`Namespace`, `Members`, `Registered`) for `kind`, creating the kind if new."""
    _SOURCES.setdefault(kind, [Registered(kind)]).append(source)
    if nested is not None:
        _NESTED[kind] = nested


def registered(kind: str) -> dict[str, Any]:
    """Name → object of everything registered for `kind` (after importing the modules that register)."""
    for source in _SOURCES.get(kind, []):
        if isinstance(source, Registered):
            source.find("", "")
    return dict(_REGISTERED.get(kind, {}))


def resolve(target: Any, kind: str, where: str = "config") -> Any:
    """The class or function `target` names, if it is allowed as a `kind`; a `ConfigError` otherwise.

    Nothing outside the allowed namespaces is imported, whatever `target` says.
    """
    module_name, attr = _split(target, kind, where)
    for source in _SOURCES[kind]:
        obj = source.find(module_name, attr)
        if obj is not None:
            return obj
    if any(isinstance(source, Namespace) and source.allows(module_name, attr) for source in _SOURCES[kind]):
        # the right place, but nothing of that name: say so rather than "put it in the package"
        file = module_name.replace(".", "/") + ".py"
        raise ConfigError(
            f"{where} names _target_={target!r}, which is not an allowed {kind}: {file} does not exist or "
            f"does not define a {kind} named {attr} itself; check the file and the class name"
        )
    raise _refused(target, kind, where)


def _split(target: Any, kind: str, where: str) -> tuple[str, str]:
    if not isinstance(target, str) or "." not in target:
        raise ConfigError(f"{where}: _target_ must be a dotted name of an allowed {kind}, got {target!r}")
    module_name, attr = target.rsplit(".", 1)
    return MOVED.get(module_name, module_name), attr


def _refused(target: Any, kind: str, where: str) -> ConfigError:
    return ConfigError(
        f"{where} names _target_={target!r}, which is not an allowed {kind}: {describe(kind)}. "
        f"A project {kind} of your own goes in the project's package or is registered with "
        f"{PACKAGE}.registry.register({kind!r})"
    )


def check_names(config: Any, kind: str, where: str = "config", recursive: bool = True) -> None:
    """Refuse `config` if any `_target_` in it (every depth when `recursive`) is not of an allowed form
    for its place, before anything it names is imported; `check` does this first.

    Only the names' form is looked at (`<package>.<subpackage>.<file>.<Name>`, a member of the kind's
    torch namespace, a registered name); the objects are found and checked by `resolve` afterwards.
    """
    if not isinstance(config, Mapping) or "_target_" not in config:
        raise ConfigError(f"{where}: expected a config with a _target_, got {config!r}")
    target = config["_target_"]
    module_name, attr = _split(target, kind, where)
    if not any(source.allows(module_name, attr) for source in _SOURCES[kind]):
        raise _refused(target, kind, where)
    if recursive:
        inner = _NESTED.get(kind, ())
        for key, value in config.items():
            if key != "_target_":
                _check_nested(value, inner, f"{where}.{key}", check_names)


def describe(kind: str) -> str:
    """What the allowlist accepts for `kind`, in words."""
    words = []
    for source in _SOURCES[kind]:
        if isinstance(source, Namespace):
            where = f"{PACKAGE}.{source.subpackage}.<file> or {PACKAGE}.<folder>.{source.subpackage}.<file>"
            words.append(f"a {source.base.split(':')[1]} defined in {where}")
        elif isinstance(source, Members):
            words.append(f"a {source.base.split(':')[1]} of {source.module}")
        elif _REGISTERED.get(source.kind):
            words.append("one of " + ", ".join(sorted(_REGISTERED[source.kind])))
    return "; ".join(words) or "nothing is registered"


def check(config: Any, kind: str, where: str = "config", recursive: bool = True) -> Any:
    """A copy of `config` (plain data) with its `_target_` resolved, and every nested one when `recursive`.

    Nested `_target_`s must be of the kinds allowed inside `kind` (a net may hold layers); with
    `recursive=False` they stay data for the object itself to build (and check) later.
    """
    check_names(config, kind, where, recursive)  # every name first: nothing is imported for a refused config
    unknown = sorted(k for k in config if str(k).startswith("_") and str(k).endswith("_") and k not in SPECIAL_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown special key(s) {unknown}; allowed: {sorted(SPECIAL_KEYS)}")
    if not isinstance(config.get("_args_", []), (list, tuple)):
        raise ConfigError(f"{where}._args_ must be a list of positional arguments, got {config['_args_']!r}")
    if not isinstance(config.get("_partial_", False), bool):
        raise ConfigError(f"{where}._partial_ must be true or false, got {config['_partial_']!r}")
    checked = {k: v for k, v in config.items() if k not in ("_target_", "_recursive_", "_convert_")}
    checked["_target_"] = resolve(config["_target_"], kind, where)
    if recursive:
        inner = _NESTED.get(kind, ())
        for key, value in checked.items():
            if key != "_target_":
                checked[key] = _check_nested(value, inner, f"{where}.{key}")
    return checked


def _check_nested(value: Any, kinds: tuple[str, ...], where: str, check_one: Callable[..., Any] | None = None) -> Any:
    """`value` with every nested config checked by `check_one` (`check`; `check_names` for the names alone)."""
    check_one = check_one or check
    if isinstance(value, Mapping):
        if "_target_" in value:
            if not kinds:
                raise ConfigError(f"{where}: nothing may be built here, but it names _target_={value['_target_']!r}")
            errors = []
            for kind in kinds:
                try:
                    return check_one(value, kind, where)
                except ConfigError as error:
                    errors.append(str(error))
            raise ConfigError(errors[0])
        return {k: _check_nested(v, kinds, f"{where}.{k}", check_one) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_check_nested(v, kinds, f"{where}[{i}]", check_one) for i, v in enumerate(value)]
    return value


def instantiate(config: Any, kind: str, where: str = "config", recursive: bool = True, **kwargs: Any) -> Any:
    """Build what `config` describes (a `kind`), after `check`; `kwargs` are passed to it as well.

    Supports `_args_` (positional arguments) and `_partial_` (return a `functools.partial`). With
    `recursive=False`, nested configs reach the object as plain dicts.
    """
    config = _plain(config)
    return _build(check(config, kind, where, recursive), kwargs)


def _build(checked: dict[str, Any], kwargs: dict[str, Any]) -> Any:
    target = checked["_target_"]
    args = [_build_value(v) for v in checked.get("_args_", [])]
    params = {k: _build_value(v) for k, v in checked.items() if k not in SPECIAL_KEYS}
    params.update(kwargs)
    if checked.get("_partial_", False):
        return functools.partial(target, *args, **params)
    return target(*args, **params)


def _build_value(value: Any) -> Any:
    if isinstance(value, dict):
        if not isinstance(value.get("_target_", ""), str):  # resolved by `check`
            return _build(value, {})
        return {k: _build_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_build_value(v) for v in value]
    return value


def _plain(config: Any) -> Any:
    """Plain containers: resolve a (trusted, live) OmegaConf config; copy a plain one as it is."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(config):
        return OmegaConf.to_container(config, resolve=True, throw_on_missing=True)  # `???` left: one clear error
    return config


@functools.cache
def _load(spec: str) -> type:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _is_subclass(obj: Any, base: type) -> bool:
    return isinstance(obj, type) and issubclass(obj, base)
