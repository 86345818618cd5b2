"""The allowlist a checkpoint is checked against: what a config read from a file may name, by place.

The run's own config (conf/ and the command line) is built with Hydra's `instantiate`
(`dltemplate.instantiate`) and may name any class or function. A checkpoint is data from disk, and so
are the config and the module's saved arguments in it: before anything is built from one
(`dltemplate.checkpoint.restore`, `StepModule.load_from_checkpoint`), `check` walks it whole and
refuses it unless every `_target_` in it, at every depth (`_args_` too), is allowed for its place:

    kind        may name
    net         nn.Module classes defined in the project's `nets` package (any folder depth), or any `torch.nn` layer
    layer       the same: what a net's config may hold inside it (an activation, a block)
    module      LightningModule classes defined in the project's `modules` package
    datamodule  LightningDataModule classes defined in the project's `data` package
    optimizer   `torch.optim` optimizers
    scheduler   `torch.optim.lr_scheduler` schedulers
    loss        `torch.nn` losses, and losses registered with `@register("loss")` (`dltemplate.losses`)
    init        weight-initialisation schemes registered with `@register("init")` (`dltemplate.nets.init`)
    feature     functions registered with `@register("feature")` (derived table columns)

`NESTED` says which kind each key inside a config may hold (a net's `init` an init scheme, anything
else in a net a layer, a data module's `derived` columns features); a `_target_` anywhere else is
refused, and so is an interpolation (`${...}`) where Hydra would resolve it. `check_names` first looks
at every name's form alone, importing nothing it names (`<package>.<subpackage>.<file>.<Name>` with the
kind's subpackage, a member of the kind's exact torch namespace, a registered name); `resolve_names`
then imports each and requires it to be defined in that very module (a re-export such as
`dltemplate.tabular.data.tabular.pd` is refused), of the kind's base class, and what Hydra finds under that
name. Only then is the checkpoint built, with the same `instantiate`. A kind's subpackage may sit in a
folder of the package (`dltemplate.image.nets`, a family's), and a module path that has moved is read
as its new path (`dltemplate.moved`), so old checkpoints keep loading. Extend the allowlist with
`register(kind)`, or `add_source(kind, ...)` for a new namespace or kind.
"""

import functools
import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from hydra._internal.utils import _locate  # how Hydra's `instantiate` finds a `_target_` (get_object logs failures)

from dltemplate.errors import ConfigError
from dltemplate.moved import MOVED, moved

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

# `Registered` sources import the project's modules that register (a library's net: in nets/__init__.py)
_SOURCES: dict[str, list[Any]] = {
    "net": [
        Namespace("nets", "torch.nn:Module"),
        Members("torch.nn", "torch.nn:Module"),
        Registered("net", (f"{PACKAGE}.nets",)),
    ],
    "layer": [
        Namespace("nets", "torch.nn:Module"),
        Members("torch.nn", "torch.nn:Module"),
        Registered("net", (f"{PACKAGE}.nets",)),
    ],
    "module": [
        Namespace("modules", "lightning.pytorch:LightningModule"),
        Registered("module", (f"{PACKAGE}.modules",)),
    ],
    "datamodule": [
        Namespace("data", "lightning.pytorch:LightningDataModule"),
        Registered("datamodule", (f"{PACKAGE}.data",)),
    ],
    "optimizer": [Members("torch.optim", "torch.optim:Optimizer"), Registered("optimizer")],
    "scheduler": [Members("torch.optim.lr_scheduler", "torch.optim.lr_scheduler:LRScheduler"), Registered("scheduler")],
    "loss": [Members("torch.nn", "torch.nn.modules.loss:_Loss"), Registered("loss", (f"{PACKAGE}.losses",))],
    "init": [Registered("init", (f"{PACKAGE}.nets.init",))],
    "feature": [Registered("feature", (f"{PACKAGE}.data.features",))],
}
# the kind a config may name at each key inside a config of a kind ("*": any other key; a key left out, or
# a kind not listed: nothing may be built there); "hyperparameters" is a module's saved arguments
NESTED: dict[str, dict[str, str]] = {
    "net": {"init": "init", "*": "layer"},
    "layer": {"*": "layer"},
    "module": {"net": "net", "optimizer": "optimizer", "scheduler": "scheduler", "loss": "loss"},
    "datamodule": {"derived": "feature"},
    "hyperparameters": {"net": "net", "optimizer": "optimizer", "scheduler": "scheduler", "loss": "loss"},
}


class Named(NamedTuple):
    """A `_target_` found by `check_names`: the name, the kind its place allows, and where it is."""

    target: str
    kind: str
    where: str


def register(kind: str, name: str | None = None) -> Callable[[Any], Any]:
    """Decorator: allow the decorated class or function wherever `kind` is expected.

    Its `_target_` is its full name (`module.qualname`), or `name`: the name a config gives it, which
    must find the same object (`register("net", "torchvision.ops.MLP")(torchvision.ops.MLP)`, in the
    package file of the kind: `nets/__init__.py`).
    """
    if kind not in _SOURCES:
        raise ConfigError(f"unknown kind {kind!r}; kinds are {sorted(_SOURCES)}")

    def add(obj: Any) -> Any:
        _REGISTERED.setdefault(kind, {})[name or f"{obj.__module__}.{obj.__qualname__}"] = obj
        return obj

    return add


def add_source(kind: str, source: Any, nested: Mapping[str, str] | None = None) -> None:
    """Allow a new source (`Namespace`, `Members`, `Registered`) for `kind`, creating the kind if new."""
    _SOURCES.setdefault(kind, [Registered(kind)]).append(source)
    if nested is not None:
        NESTED[kind] = dict(nested)


def check(config: Any, kind: str, where: str = "config", interpolations: bool = False) -> None:
    """Refuse `config` (a `kind`, or the place `kind` names in `NESTED`) unless every `_target_` in it is
    allowed for its place: `check_names` for all of them first, then `resolve_names`. A `ConfigError` otherwise."""
    resolve_names(check_names(config, kind, where, interpolations))


def check_names(config: Any, kind: str, where: str = "config", interpolations: bool = False) -> list[Named]:
    """Every `_target_` in `config`, at every depth, checked by its form alone: nothing it names is imported.

    `config` is a config of `kind` (with a `_target_`), or a place of `NESTED` without one
    ("hyperparameters"). Also refused: a `_target_` where nothing may be built, a malformed `_args_`
    or `_partial_`, an unknown `_special_` key, and, unless `interpolations`, any `${` in a string
    (Hydra would resolve it while building).
    """
    found: list[Named] = []
    if kind in _SOURCES:
        if not isinstance(config, Mapping) or "_target_" not in config:
            raise ConfigError(f"{where}: expected a config with a _target_, got {config!r}")
        _walk(config, kind, where, found, interpolations)
    else:
        if not isinstance(config, Mapping):
            raise ConfigError(f"{where}: expected settings (a mapping), got {type(config).__name__}")
        _walk_inside(config, NESTED.get(kind, {}), where, found, interpolations)
    return found


def resolve_names(found: list[Named]) -> None:
    """Import and check what each name `check_names` found refers to (see `resolve`)."""
    for named in found:
        resolve(named.target, named.kind, named.where)


def resolve(target: Any, kind: str, where: str = "config") -> Any:
    """The class or function `target` names, if it is allowed as a `kind`; a `ConfigError` otherwise.

    Nothing outside the allowed namespaces is imported, whatever `target` says; the object found must
    be the one Hydra's `instantiate` finds under the same name.
    """
    module_name, attr = _split(target, kind, where)
    for source in _SOURCES[kind]:
        obj = source.find(module_name, attr)
        if obj is not None and _located(moved(target)) is obj:
            return obj
    if any(isinstance(source, Namespace) and source.allows(module_name, attr) for source in _SOURCES[kind]):
        # the right place, but nothing of that name: say so rather than "put it in the package"
        file = module_name.replace(".", "/") + ".py"
        raise ConfigError(
            f"{where} names _target_={target!r}, which is not an allowed {kind}: {file} does not exist or "
            f"does not define a {kind} named {attr} itself; check the file and the class name"
        )
    raise _refused(target, kind, where)


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


def _walk(config: Mapping, kind: str, where: str, found: list[Named], interpolations: bool) -> None:
    """Check the config of `kind` at `where` by form, and everything inside it."""
    target = config["_target_"]
    module_name, attr = _split(target, kind, where)
    if not any(source.allows(module_name, attr) for source in _SOURCES[kind]):
        raise _refused(target, kind, where)
    unknown = sorted(k for k in config if str(k).startswith("_") and str(k).endswith("_") and k not in SPECIAL_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown special key(s) {unknown}; allowed: {sorted(SPECIAL_KEYS)}")
    if not isinstance(config.get("_args_", []), (list, tuple)):
        raise ConfigError(f"{where}._args_ must be a list of positional arguments, got {config['_args_']!r}")
    if not isinstance(config.get("_partial_", False), bool):
        raise ConfigError(f"{where}._partial_ must be true or false, got {config['_partial_']!r}")
    found.append(Named(target, kind, where))
    inside = {k: v for k, v in config.items() if k != "_target_"}
    _walk_inside(inside, NESTED.get(kind, {}), where, found, interpolations)


def _walk_inside(
    config: Mapping, kinds: Mapping[str, str], where: str, found: list[Named], interpolations: bool
) -> None:
    for key, value in config.items():
        _walk_value(value, kinds.get(key, kinds.get("*")), f"{where}.{key}", found, interpolations)


def _walk_value(value: Any, kind: str | None, where: str, found: list[Named], interpolations: bool) -> None:
    """Every config in `value` (plain settings around them are looked through) must be a `kind`."""
    if isinstance(value, Mapping):
        if "_target_" in value:
            if kind is None:
                raise ConfigError(f"{where}: nothing may be built here, but it names _target_={value['_target_']!r}")
            _walk(value, kind, where, found, interpolations)
            return
        for key, item in value.items():
            _walk_value(item, kind, f"{where}.{key}", found, interpolations)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _walk_value(item, kind, f"{where}[{i}]", found, interpolations)
    elif isinstance(value, str) and not interpolations and "${" in value:
        raise ConfigError(
            f"{where}={value!r} is an interpolation; a checkpoint's settings are taken as written, and none is "
            "resolved where it is built. Use a checkpoint written by this template's train.py"
        )


def _split(target: Any, kind: str, where: str) -> tuple[str, str]:
    if not isinstance(target, str) or "." not in target:
        raise ConfigError(f"{where}: _target_ must be a dotted name of an allowed {kind}, got {target!r}")
    module_name, attr = target.rsplit(".", 1)
    return MOVED.get(module_name, module_name), attr


def _refused(target: Any, kind: str, where: str) -> ConfigError:
    packages = [f"{PACKAGE}/{s.subpackage}/" for s in _SOURCES[kind] if isinstance(s, Namespace)]
    place = f"goes in {' or '.join(packages)} or " if packages else ""
    return ConfigError(
        f"{where} names _target_={target!r}, which is not an allowed {kind}: {describe(kind)}. "
        f"A {kind} of your own {place}is registered with {PACKAGE}.registry.register({kind!r})"
    )


def _located(target: str) -> Any:
    """What Hydra's `instantiate` builds for `target` (only called once the name's module is imported)."""
    try:
        return _locate(target)
    except (ImportError, ValueError):
        return None


@functools.cache
def _load(spec: str) -> type:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _is_subclass(obj: Any, base: type) -> bool:
    return isinstance(obj, type) and issubclass(obj, base)
