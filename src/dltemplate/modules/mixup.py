"""Mixup: classification trained on convex mixtures of pairs of inputs and of their labels' losses."""

from typing import Any

import torch
from torch import Tensor
from torch.distributions import Beta

from dltemplate.errors import ConfigError
from dltemplate.modules.classification import ClassificationModule


class MixupClassification(ClassificationModule):
    """A `ClassificationModule` whose training objective is mixup (Zhang et al., 2018); one step part differs.

    Each training batch is mixed with a shuffled copy of itself, x' = λ·x + (1 − λ)·x[perm], with λ
    drawn from Beta(alpha, alpha) on the device, and the loss is λ·L(x', y) + (1 − λ)·L(x', y[perm]).
    Validation and test are unchanged. Inputs must be floats (images after normalisation, table
    features), not token ids.

        python train.py task=cifar2 module=mixup module.alpha=0.2

    Args:
        alpha: Beta distribution parameter; small values keep most mixtures close to one of the pair.
        *args, **kwargs: as `ClassificationModule`.
    """

    def __init__(self, *args: Any, alpha: float = 0.2, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not alpha > 0:
            raise ConfigError(f"module.alpha={alpha!r}: mixup needs a positive Beta parameter such as 0.2")
        self.alpha = alpha

    def objective(self, x: Tensor, target: Tensor, stage: str) -> tuple[Tensor, Tensor]:
        if stage != "train":
            return super().objective(x, target, stage)
        # λ ~ Beta(alpha, alpha), drawn on the device (argument checks off: they read values on the host)
        concentration = torch.full((), float(self.alpha), device=x.device)
        lam = Beta(concentration, concentration, validate_args=False).sample()
        perm = torch.randperm(x.shape[0], device=x.device)
        outputs = self.net_outputs(lam * x + (1 - lam) * x[perm])
        loss = lam * self.loss(outputs, target, stage) + (1 - lam) * self.loss(outputs, target[perm], stage)
        return loss, outputs
