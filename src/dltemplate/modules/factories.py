"""Turn configs into nets, optimizers and schedulers, refusing anything else a config could name.

A module takes its net, optimizer and scheduler either as ready objects or as Hydra configs (plain
dicts with `_target_`). Configs are what gets saved in the checkpoint, so `load_from_checkpoint`
can rebuild the net without being handed it again. Because a checkpoint is data from disk, every
`_target_`, at every depth, goes through the project's allowlist (`dltemplate.registry`) before
anything is imported or called.
"""

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from dltemplate import registry
from dltemplate.errors import ConfigError
from dltemplate.nets.init import init_scheme

NetSpec = nn.Module | Mapping[str, Any]
OptimizerSpec = Callable[[Iterable[torch.Tensor]], Optimizer] | Mapping[str, Any]
SchedulerSpec = Callable[[Optimizer], LRScheduler] | Mapping[str, Any]

DEFAULT_OPTIMIZER = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3}


def build_net(net: NetSpec) -> nn.Module:
    """Return `net` itself, or the `nn.Module` its config describes, initialised by its `init` scheme.

    `init` (see `dltemplate.nets.init`) is taken out of the config before the net is built, and the
    scheme is resolved first, so a bad name fails before a large net is built for nothing.
    """
    if isinstance(net, nn.Module):
        return net
    config = dict(OmegaConf.to_container(net, resolve=True) if OmegaConf.is_config(net) else net)
    init = config.pop("init", None)
    if init is not None and config.get("pretrained"):
        raise ConfigError(
            f"net.init={init!r} would overwrite the pretrained weights this net loads; "
            "set net.init=null, or net.pretrained=false to train from scratch"
        )
    scheme = None if init is None else init_scheme(init)
    built = registry.instantiate(config, "net", where="net")
    if scheme is not None:
        scheme(built)
    return built


def build_optimizer(optimizer: OptimizerSpec | None, params: Iterable[torch.Tensor]) -> Optimizer:
    """Create the optimizer over `params` from a partial config, a callable, or the AdamW default."""
    optimizer = DEFAULT_OPTIMIZER if optimizer is None else optimizer
    if isinstance(optimizer, Mapping):
        optimizer = registry.instantiate({**optimizer, "_partial_": True}, "optimizer", where="optimizer")
    return optimizer(params)


def build_scheduler(scheduler: SchedulerSpec, optimizer: Optimizer) -> LRScheduler:
    """Create the LR scheduler for `optimizer` from a partial config or a callable."""
    if isinstance(scheduler, Mapping):
        scheduler = registry.instantiate({**scheduler, "_partial_": True}, "scheduler", where="scheduler")
    return scheduler(optimizer)


def objects_to_skip(**specs: Any) -> list[str]:
    """Names of the `specs` that are objects rather than configs: they cannot go in a checkpoint."""
    return [name for name, spec in specs.items() if spec is not None and not isinstance(spec, Mapping)]


def configure_optimizers(module: nn.Module, optimizer, scheduler, interval: str, monitor: str) -> Any:
    """What `LightningModule.configure_optimizers` returns for these specs."""
    opt = build_optimizer(optimizer, module.parameters())
    if scheduler is None:
        return opt
    lr_scheduler = {"scheduler": build_scheduler(scheduler, opt), "interval": interval, "monitor": monitor}
    return {"optimizer": opt, "lr_scheduler": lr_scheduler}


def check_finite(loss: torch.Tensor, module) -> None:
    """Stop with a clear error when the training loss is NaN or infinite."""
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"training loss is {loss.item()} at epoch {module.current_epoch}, step {module.global_step}: "
            "the run diverged; lower module.optimizer.lr or check the inputs for NaN/inf values"
        )
