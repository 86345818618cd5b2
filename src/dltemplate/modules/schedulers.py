"""The learning-rate scheduler from its config, its run length from the Trainer, and what
`LightningModule.configure_optimizers` returns."""

from collections.abc import Callable, Mapping
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, OneCycleLR, PolynomialLR

from dltemplate.errors import ConfigError
from dltemplate.instantiate import instantiate, locate
from dltemplate.modules.optimizers import build_optimizer

SchedulerSpec = Callable[[Optimizer], LRScheduler] | Mapping[str, Any]


# the argument of each scheduler that is the run's length, filled from the Trainer when left unset
RUN_LENGTH = {OneCycleLR: "total_steps", CosineAnnealingLR: "T_max", PolynomialLR: "total_iters"}


def build_scheduler(scheduler: SchedulerSpec, optimizer: Optimizer, run_length: Callable[[], int] | None = None):
    """Create the LR scheduler for `optimizer` from a partial config or a callable.

    A config that leaves the run's length unset (`RUN_LENGTH`: OneCycleLR's `total_steps`,
    CosineAnnealingLR's `T_max`, PolynomialLR's `total_iters`; null or omitted) gets `run_length()`:
    the number of times the scheduler will be stepped. OneCycleLR cycles the momentum (or Adam's
    beta1) unless `cycle_momentum` says otherwise, and only of an optimizer that uses one: Adagrad,
    plain SGD or RMSprop without momentum stay without. A single OneCycleLR `max_lr` is scaled for
    each parameter group by its `lr_scale` (a backbone's lower learning rate).
    """
    if isinstance(scheduler, Mapping):
        scheduler = dict(scheduler)
        cls = locate(scheduler.get("_target_"), "scheduler")
        key = RUN_LENGTH.get(cls)
        if key is not None and scheduler.get(key) is None and not (cls is OneCycleLR and scheduler.get("epochs")):
            if run_length is None:
                raise ConfigError(f"scheduler: {scheduler['_target_']} needs {key}, the run's length; set it")
            scheduler[key] = run_length()
        scales = [group.get("lr_scale", 1.0) for group in optimizer.param_groups]
        if cls is OneCycleLR and any(s != 1.0 for s in scales) and not isinstance(scheduler.get("max_lr"), list):
            scheduler["max_lr"] = [scheduler["max_lr"] * s for s in scales]  # a backbone's lower learning rate
        if cls is OneCycleLR and "cycle_momentum" not in scheduler:  # cycle a momentum only where there is one
            defaults = optimizer.defaults
            scheduler["cycle_momentum"] = "betas" in defaults or defaults.get("momentum", 0) > 0
        scheduler = instantiate({**scheduler, "_partial_": True}, "scheduler", expect=LRScheduler)
    return scheduler(optimizer)


def configure_optimizers(
    module, optimizer, scheduler, interval: str, monitor: str, backbone_lr_scale: float | None = None
) -> Any:
    """What `LightningModule.configure_optimizers` returns for these specs.

    A scheduler's unset run length is the Trainer's: its optimizer steps (`estimated_stepping_batches`)
    when stepped every "step", its `max_epochs` when stepped every "epoch".
    """
    if interval not in ("step", "epoch"):
        raise ConfigError(f"module.scheduler_interval={interval!r}: choose step or epoch")
    opt = build_optimizer(optimizer, module, backbone_lr_scale)
    if scheduler is None:
        return opt
    lr_scheduler = {
        "scheduler": build_scheduler(scheduler, opt, lambda: run_length(module, interval)),
        "interval": interval,
        "monitor": monitor,
    }
    return {"optimizer": opt, "lr_scheduler": lr_scheduler}


def run_length(module, interval: str) -> int:
    """How many times a scheduler stepped every `interval` is stepped in the module's Trainer run."""
    try:
        trainer = module.trainer
    except RuntimeError:  # not attached to a Trainer
        trainer = None
    if trainer is None:
        raise ConfigError("the scheduler's run length comes from the Trainer; set it in the scheduler config")
    total = trainer.estimated_stepping_batches if interval == "step" else trainer.max_epochs
    if total is None or total < 1 or total == float("inf"):
        raise ConfigError(
            f"the scheduler needs the run's length, but the Trainer's is unbounded ({interval}s: {total}); "
            "set trainer.max_epochs or trainer.max_steps, or the scheduler's own length"
        )
    return int(total)
