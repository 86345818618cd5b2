"""Fine-tuning policy: the pretrained backbone frozen for the first epochs, then trained at a lower rate.

The policy is part of the module's config (`module.finetune`), so it is in the hparams and the
checkpoint; the module returns this callback from `configure_callbacks`:

    module:
      finetune:
        freeze_epochs: 1          # epochs 0 … freeze_epochs-1 train the head only
        backbone_lr_scale: 0.1    # backbone learning rate = module.optimizer.lr × this (scheduled alike)
        norm_eval_while_frozen: true

Freezing leaves `requires_grad` alone: under DDP, parameters that stop (or start) needing gradients
after the model is wrapped are a hang or an error. The backbone's parameter groups exist from the
start (`dltemplate.modules.optimizers.parameter_groups`); while frozen, their gradients, already
all-reduced by DDP, are dropped just before each optimizer step, so every optimizer leaves them
exactly as they are (no step, no weight decay, no momentum or Adam moments), and normalisation
layers with running statistics (BatchNorm) stay in eval mode, so those do not move either.
Freezing saves no compute: the backward pass still runs through the backbone.
"""

from collections.abc import Mapping
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from torch.optim import Optimizer

from dltemplate.errors import ConfigError

POLICY = {"freeze_epochs": 0, "backbone_lr_scale": 1.0, "norm_eval_while_frozen": True}


def finetune_policy(spec: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """`module.finetune` checked and completed with the defaults of `POLICY`; None stays None."""
    if spec is None:
        return None
    unknown = sorted(set(spec) - set(POLICY))
    if unknown:
        raise ConfigError(f"module.finetune has unknown key(s) {unknown}; its keys are {sorted(POLICY)}")
    policy = {**POLICY, **spec}
    if not isinstance(policy["freeze_epochs"], int) or policy["freeze_epochs"] < 0:
        raise ConfigError(f"module.finetune.freeze_epochs must be a whole number ≥ 0, got {policy['freeze_epochs']}")
    if not policy["backbone_lr_scale"] >= 0:
        raise ConfigError(f"module.finetune.backbone_lr_scale must be ≥ 0, got {policy['backbone_lr_scale']}")
    return policy


class BackboneFreeze(Callback):
    """Keeps the net's `backbone` unchanged for the first `freeze_epochs` epochs, DDP-safely (see the module).

    Args:
        freeze_epochs: Epochs during which only the head trains.
        norm_eval_while_frozen: Keep the backbone's BatchNorm-style layers in eval mode while frozen.
    """

    def __init__(self, freeze_epochs: int, norm_eval_while_frozen: bool = True) -> None:
        self.freeze_epochs = freeze_epochs
        self.norm_eval_while_frozen = norm_eval_while_frozen
        self._params: list[nn.Parameter] = []
        self._norms: list[nn.Module] = []

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        named = [(n, m) for n, m in pl_module.named_modules() if "backbone" in n.split(".")]
        if not named:
            raise ConfigError("module.finetune freezes a backbone, but the net has none (net=timm, net=transformer)")
        self._params = [p for n, p in pl_module.named_parameters() if "backbone" in n.split(".")[:-1]]
        self._norms = [m for _, m in named if isinstance(m, nn.modules.batchnorm._NormBase)]

    def frozen(self, trainer: Trainer) -> bool:
        return trainer.current_epoch < self.freeze_epochs

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pl_module.log("finetune/backbone_frozen", float(self.frozen(trainer)), on_step=False, on_epoch=True)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self.norm_eval_while_frozen:  # Lightning sets train mode after each validation: set it again
            training = not self.frozen(trainer)
            for norm in self._norms:
                norm.train(training)

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        if self.frozen(trainer):
            for param in self._params:
                param.grad = None  # optimizers skip parameters without a gradient
