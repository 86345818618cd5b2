"""Turn a net's config into the net (Hydra's `instantiate`); no downloads when restoring.

A module takes its net (and optimizer and scheduler: `dltemplate.modules.optimizers`, `.schedulers`)
either as a ready object or as a Hydra config (a plain dict with `_target_`). Configs are what gets
saved in the checkpoint, so `load_from_checkpoint` can rebuild the net without being handed it
again. The run's own config may name any net class or function (`torchvision.models.resnet18`);
a checkpoint's is checked against the project's allowlist (`dltemplate.registry`) before anything
in it is imported (`StepModule.load_from_checkpoint`, `dltemplate.checkpoint.restore`).
"""

import contextlib
import contextvars
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from omegaconf import OmegaConf
from torch import nn

from dltemplate.errors import ConfigError
from dltemplate.instantiate import instantiate, locate
from dltemplate.modules.optimizers import parameters_of
from dltemplate.nets.init import init_scheme

log = logging.getLogger(__name__)

NetSpec = nn.Module | Mapping[str, Any]

# what a net may fetch or read when building for training, switched off when rebuilding from a checkpoint:
# pretrained weights, a weights file or URL, and (`offline`) an architecture read from a hub or folder
DOWNLOADED = {"pretrained": False, "weights": None, "offline": True}

_RESTORING = contextvars.ContextVar("restoring", default=False)


@contextlib.contextmanager
def no_downloads() -> Iterator[None]:
    """Within this block, nets are built without pretrained weights or weight files (`DOWNLOADED`).

    `dltemplate.checkpoint.restore` rebuilds a checkpoint's net inside it: the trained weights come
    from the checkpoint's state dict, and a checkpoint must not make this process fetch or read anything.
    """
    token = _RESTORING.set(True)
    try:
        yield
    finally:
        _RESTORING.reset(token)


def without_downloads(net: Any) -> Any:
    """A net config as a checkpoint keeps it: `DOWNLOADED`'s settings wherever the net takes them (even
    when the config leaves them out); objects as they are.

    Modules save this in their hyperparameters after building the net, so that even Lightning's own
    `load_from_checkpoint` of the module rebuilds the net without fetching anything (the run config
    keeps the settings as given, for the record).
    """
    if not isinstance(net, Mapping):
        return net
    accepted = parameters_of(locate(net.get("_target_"), "net"))
    return {**net, **{k: v for k, v in DOWNLOADED.items() if k in net or k in accepted}}


def build_net(net: NetSpec) -> nn.Module:
    """Return `net` itself, or the `nn.Module` its config describes, initialised by its `init` scheme.

    `init` (see `dltemplate.nets.init`) is taken out of the config before the net is built, and the
    scheme is resolved first, so a bad name fails before a large net is built for nothing. Inside
    `no_downloads()`, `pretrained` and `weights` are switched off whatever the config says.
    """
    if isinstance(net, nn.Module):
        return net
    config = dict(OmegaConf.to_container(net, resolve=True) if OmegaConf.is_config(net) else net)
    if _RESTORING.get():
        config = without_downloads(config)
    init = config.pop("init", None)
    if init is not None and (config.get("pretrained") or config.get("weights")):
        raise ConfigError(
            f"net.init={init!r} would overwrite the pretrained weights this net loads; "
            "set net.init=null, or net.pretrained=false and net.weights=null to train from scratch"
        )
    scheme = None if init is None else init_scheme(init)
    built = instantiate(config, "net", expect=nn.Module)
    if scheme is not None:
        scheme(built)
    return built


def net_data_settings(net: Mapping[str, Any]) -> dict[str, Any]:
    """Data settings the net's weights expect (a pretrained model's input size, normalisation, tokenizer).

    A net class declares them in a static `data_settings(config)`; `net` may hold unresolved sizes
    (`${dims...}`): only the keys the net class reads are resolved.
    """
    cls = locate(net.get("_target_"), "net")
    settings = getattr(cls, "data_settings", None)
    return dict(settings(net)) if callable(settings) else {}


def complete_net_config(net: Mapping[str, Any]) -> dict[str, Any]:
    """`net` with what rebuilding it from a checkpoint needs (a transformer's architecture), when its class says."""
    cls = locate(net.get("_target_"), "net")
    complete = getattr(cls, "complete_config", None)
    return complete(net) if callable(complete) else dict(net)


def objects_to_skip(**specs: Any) -> list[str]:
    """Names of the `specs` that are objects rather than configs: they cannot go in a checkpoint."""
    return [name for name, spec in specs.items() if spec is not None and not isinstance(spec, Mapping)]
