"""Regression of one or more continuous targets."""

import math

import torch
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

from dltemplate.errors import ConfigError, DataError
from dltemplate.losses import LossSpec, build_loss
from dltemplate.modules.factories import NetSpec, build_net, objects_to_skip, without_downloads
from dltemplate.modules.optimizers import OptimizerSpec
from dltemplate.modules.schedulers import SchedulerSpec
from dltemplate.modules.step import StepModule


class RegressionModule(StepModule):
    """Trains a net that predicts continuous targets, by default with a mean-squared-error loss.

    Targets are (B,) for one output or (B, num_outputs); a net output of (B, 1) is matched to (B,).
    The net predicts standardised targets, (y - target_mean) / target_std, and the loss compares
    them on that scale: a Huber `delta` or smooth-L1 `beta` of 1 then means one standard deviation,
    whatever the targets' units (`train/loss` is in those standardised units). Predictions and the
    mse, mae and r2 metrics are on the targets' own scale.

    With `loss="poisson"` the targets are non-negative counts and the net's output is instead the
    log of the Poisson rate relative to the training mean: the prediction is exp(output) ·
    target_mean, the expected count, always positive, and the loss is the Poisson negative
    log-likelihood of the raw counts (standardising counts would break the likelihood).

    Args:
        net: The network, or its Hydra config (then `load_from_checkpoint` needs no net).
        num_outputs: Number of targets per sample; the data module knows it (`${dims.out_features}`).
        loss: "mse", "l1", "huber", "smooth_l1", "poisson", or a `_target_` config of a fitting loss
            (see `dltemplate.losses`).
        optimizer: Partial optimizer config or callable params → optimizer; AdamW(lr=1e-3) if None.
        scheduler: Partial LR-scheduler config or callable optimizer → scheduler; none if None.
        scheduler_interval: Step the scheduler every "epoch" or every "step".
        monitor: Metric that ReduceLROnPlateau-style schedulers watch.
        target_mean: Mean of the training targets; with `target_std`, the net predicts standardised
            values and the module rescales them, so nets train well whatever the targets' scale.
        target_std: Standard deviation of the training targets.
    """

    target_kind = "regression"

    def __init__(
        self,
        net: NetSpec,
        num_outputs: int = 1,
        loss: LossSpec = "mse",
        optimizer: OptimizerSpec | None = None,
        scheduler: SchedulerSpec | None = None,
        scheduler_interval: str = "epoch",
        monitor: str = "val/loss",
        target_mean: float = 0.0,
        target_std: float = 1.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            ignore=objects_to_skip(net=net, optimizer=optimizer, scheduler=scheduler), logger=False
        )
        self.net = build_net(net)
        if "net" in self.hparams:  # rebuilding from a checkpoint fetches no weights
            self.hparams["net"] = without_downloads(self.hparams["net"])
        self.optimizer_spec, self.scheduler_spec = optimizer, scheduler
        self.loss_fn = build_loss(loss, "regression")
        self.counts = self.loss_fn.takes == "log_rate"
        if self.counts and target_mean < 0:
            raise ConfigError(
                f"module.loss=poisson needs counts (targets >= 0), but the training targets' mean is {target_mean}"
            )
        self.log_mean = math.log(target_mean) if self.counts and target_mean > 0 else 0.0
        metrics = MetricCollection(
            {
                # averaged over all targets, so every metric is one scalar
                "mse": MeanSquaredError(),
                "mae": MeanAbsoluteError(),
                "r2": R2Score(multioutput="uniform_average"),
            }
        )
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.negative_counts = torch.zeros((), dtype=torch.bool)  # a negative count seen this epoch (poisson)

    def forward(self, x: Tensor) -> Tensor:
        """Predictions on the targets' scale: (B,) for one target, (B, num_outputs) otherwise."""
        return self.to_units(self._outputs(x))

    def _outputs(self, x: Tensor) -> Tensor:
        """The net's outputs, shaped like the targets: standardised targets, or log-rates for poisson."""
        out = self.net(x)
        return out.squeeze(-1) if self.hparams.num_outputs == 1 else out

    def to_units(self, out: Tensor) -> Tensor:
        """Net outputs → predictions on the targets' scale."""
        if self.counts:
            return torch.exp(out + self.log_mean)
        return out * self.hparams.target_std + self.hparams.target_mean

    # ---- the step's parts (see StepModule.model_step) ------------------------------------------

    def net_outputs(self, x: Tensor) -> Tensor:
        return self._outputs(x)

    def loss(self, outputs: Tensor, target: Tensor, stage: str) -> Tensor:
        if self.counts:
            self.negative_counts = self.negative_counts | (target < 0).any()  # on the device, read per epoch
            return self.loss_fn(outputs + self.log_mean, target)
        return self.loss_fn(outputs, (target - self.hparams.target_mean) / self.hparams.target_std)

    def predictions(self, outputs: Tensor) -> Tensor:
        return self.to_units(outputs)

    def end_epoch(self, stage: str) -> None:
        """Refuse negative counts seen this epoch (read once per epoch, not every step), then log the metrics."""
        if self.counts and bool(self.negative_counts):
            self.negative_counts = torch.zeros((), dtype=torch.bool, device=self.device)
            raise DataError(f"module.loss=poisson needs counts, but a {stage} target is negative")
        super().end_epoch(stage)

    def on_train_epoch_start(self) -> None:
        self.negative_counts = torch.zeros((), dtype=torch.bool, device=self.device)

    on_validation_epoch_start = on_test_epoch_start = on_train_epoch_start
