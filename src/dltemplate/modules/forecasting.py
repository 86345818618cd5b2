"""Forecasting of one or more series from a window of their past."""

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric, MetricCollection
from torchmetrics.regression import SymmetricMeanAbsolutePercentageError

from dltemplate.losses import LossSpec, build_loss
from dltemplate.modules.factories import NetSpec, build_net, objects_to_skip, without_downloads
from dltemplate.modules.optimizers import OptimizerSpec
from dltemplate.modules.schedulers import SchedulerSpec
from dltemplate.modules.step import StepModule


class ForecastingModule(StepModule):
    """Trains a net that maps (B, window, C) scaled history to (B, horizon, C) scaled forecasts.

    The loss is computed on the scaled series, what the net predicts (so a Huber `delta` of 1 is one
    unit of the data module's scale); every metric is computed after undoing the scaling,
    on the series' own units: MAE, RMSE and sMAPE, MASE (MAE over the mean absolute one-step change
    of the training steps), and beside them the naive forecast (repeat the last value) and the
    seasonal-naive forecast (repeat the value one season back) on the same targets: `rel_mae` is
    the model's MAE over the naive forecast's MAE, below 1 when the model beats it.

    Args:
        net: The network, or its Hydra config (then `load_from_checkpoint` needs no net).
        scale: Per-series scale the data was divided by (`${dims.scale}`).
        naive_scale: Per-series mean absolute one-step change over the training steps (for MASE).
        season: Period of the seasonal-naive baseline; None skips it.
        transform: "log1p" if the data module log-transformed the series before scaling.
        loss: "mse", "l1", "huber" or "smooth_l1" on the scaled series, or a `_target_` config of a
            fitting loss (see `dltemplate.losses`). Poisson is refused: the nets predict the scaled
            (often differenced or log-transformed) series itself, not the log-rate of counts.
        optimizer, scheduler, scheduler_interval, monitor: as in `RegressionModule`.
    """

    target_kind = "forecasting"
    compares_to_naive = True  # val_baselines / test_baselines: the naive forecasts' errors

    def __init__(
        self,
        net: NetSpec,
        scale: Sequence[float],
        naive_scale: Sequence[float],
        season: int | None = None,
        transform: Literal["log1p"] | None = None,
        loss: LossSpec = "mse",
        optimizer: OptimizerSpec | None = None,
        scheduler: SchedulerSpec | None = None,
        scheduler_interval: str = "epoch",
        monitor: str = "val/loss",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            ignore=objects_to_skip(net=net, optimizer=optimizer, scheduler=scheduler), logger=False
        )
        self.net = build_net(net)
        if "net" in self.hparams:  # rebuilding from a checkpoint fetches no weights
            self.hparams["net"] = without_downloads(self.hparams["net"])
        self.optimizer_spec, self.scheduler_spec = optimizer, scheduler
        self.loss_fn = build_loss(loss, "forecasting")
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32), persistent=False)
        metrics = MetricCollection(
            {
                "mae": MeanAbsoluteError(),
                "rmse": MeanSquaredError(squared=False),
                "smape": SymmetricMeanAbsolutePercentageError(),
            }
        )
        self.train_metrics = None  # training tracks the loss
        self.val_metrics, self.test_metrics = metrics.clone(prefix="val/"), metrics.clone(prefix="test/")
        self.val_baselines = NaiveComparison(naive_scale, season)
        self.test_baselines = NaiveComparison(naive_scale, season)

    def forward(self, x: Tensor) -> Tensor:
        """Scaled forecasts (B, horizon, C) from scaled history (B, window, C)."""
        return self.net(x)

    # ---- the step's parts (see StepModule.model_step) ------------------------------------------

    def net_outputs(self, x: Tensor) -> Tensor:
        return self(x)

    def loss(self, outputs: Tensor, target: Tensor, stage: str) -> Tensor:
        return self.loss_fn(outputs, target)  # on the scaled series, what the net predicts

    def predictions(self, outputs: Tensor) -> Tensor:
        return self.to_units(outputs)

    def update_metrics(self, preds: Tensor, target: Tensor, x: Tensor, stage: str) -> None:
        if stage == "train":  # the loss is what training tracks
            return
        target, history = self.to_units(target), self.to_units(x)
        self.stage_metrics(stage).update(preds.flatten(), target.flatten())
        (self.val_baselines if stage == "val" else self.test_baselines).update(preds, target, history)

    def step_output(self, loss: Tensor, preds: Tensor, target: Tensor) -> dict[str, Tensor]:
        return super().step_output(loss, preds, self.to_units(target))

    def end_epoch(self, stage: str) -> None:
        super().end_epoch(stage)
        if stage != "train":
            baselines = self.val_baselines if stage == "val" else self.test_baselines
            self.log_dict({f"{stage}/{k}": v for k, v in baselines.compute().items()})
            baselines.reset()

    def to_units(self, values: Tensor) -> Tensor:
        """Undo the data module's scaling (and log1p transform): the series' own units."""
        values = values * self.scale
        return torch.expm1(values) if self.hparams.transform == "log1p" else values


class NaiveComparison(Metric):
    """MASE of the model, and the errors of the naive and seasonal-naive forecasts on its targets.

    Not a stock torchmetrics metric because the baselines are built from the input history, which
    the (preds, target) signature of those metrics does not carry.
    """

    full_state_update = False

    def __init__(self, naive_scale: Sequence[float], season: int | None = None) -> None:
        super().__init__()
        self.season = season
        self.naive_scale = torch.tensor(naive_scale, dtype=torch.float32)
        for name in ("model", "scaled", "naive", "snaive", "count"):
            self.add_state(name, default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, history: Tensor) -> None:
        """preds, target: (B, H, C); history: (B, W, C); all in the series' own units."""
        error = (preds - target).abs()
        self.model += error.sum()
        self.scaled += (error / self.naive_scale.to(error.device)).sum()
        self.naive += (history[:, -1:, :] - target).abs().sum()
        if self.season is not None:
            window, horizon = history.shape[1], target.shape[1]
            steps = window - self.season + torch.arange(horizon, device=history.device) % self.season
            self.snaive += (history[:, steps, :] - target).abs().sum()
        self.count += target.numel()

    def compute(self) -> dict[str, Tensor]:
        out = {
            "mase": self.scaled / self.count,
            "rel_mae": self.model / self.naive.clamp(min=1e-12),
            "naive_mae": self.naive / self.count,
        }
        if self.season is not None:
            out["snaive_mae"] = self.snaive / self.count
        return out
