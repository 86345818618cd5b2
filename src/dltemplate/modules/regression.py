"""Regression of one or more continuous targets."""

import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

from dltemplate.modules.factories import (
    NetSpec,
    OptimizerSpec,
    SchedulerSpec,
    build_net,
    check_finite,
    configure_optimizers,
    objects_to_skip,
)


class RegressionModule(LightningModule):
    """Trains a net that predicts continuous targets with a mean-squared-error loss.

    Targets are (B,) for one output or (B, num_outputs); a net output of (B, 1) is matched to (B,).

    Args:
        net: The network, or its Hydra config (then `load_from_checkpoint` needs no net).
        num_outputs: Number of targets per sample; the data module knows it (`${dims.out_features}`).
        optimizer: Partial optimizer config or callable params → optimizer; AdamW(lr=1e-3) if None.
        scheduler: Partial LR-scheduler config or callable optimizer → scheduler; none if None.
        scheduler_interval: Step the scheduler every "epoch" or every "step".
        monitor: Metric that ReduceLROnPlateau-style schedulers watch.
        target_mean: Mean of the training targets; with `target_std`, the net predicts standardised
            values and the module rescales them, so nets train well whatever the targets' scale.
        target_std: Standard deviation of the training targets.
    """

    def __init__(
        self,
        net: NetSpec,
        num_outputs: int = 1,
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
        self.optimizer_spec, self.scheduler_spec = optimizer, scheduler
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

    def forward(self, x: Tensor) -> Tensor:
        """Predictions on the targets' scale: (B,) for one target, (B, num_outputs) otherwise."""
        out = self.net(x) * self.hparams.target_std + self.hparams.target_mean
        return out.squeeze(-1) if self.hparams.num_outputs == 1 else out

    def _step(self, batch: tuple[Tensor, Tensor], metrics: MetricCollection, stage: str) -> dict[str, Tensor]:
        x, target = batch
        preds = self(x)
        loss = F.mse_loss(preds, target)
        metrics.update(preds.detach(), target)
        self.log(
            f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=True, sync_dist=stage != "train"
        )
        self.log_dict(metrics, on_step=False, on_epoch=True)
        return {"loss": loss, "preds": preds.detach(), "target": target}

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        out = self._step(batch, self.train_metrics, "train")
        check_finite(out["loss"], self)
        return out

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._step(batch, self.val_metrics, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._step(batch, self.test_metrics, "test")

    def predict_step(self, batch: Tensor | tuple[Tensor, ...], batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x)

    def configure_optimizers(self):
        hp = self.hparams
        return configure_optimizers(self, self.optimizer_spec, self.scheduler_spec, hp.scheduler_interval, hp.monitor)
