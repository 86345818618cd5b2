"""The step every module shares, in named parts that a variant overrides one at a time."""

from contextvars import ContextVar
from typing import Any

from lightning.pytorch import LightningModule
from lightning.pytorch.utilities.model_helpers import _restricted_classmethod
from torch import Tensor
from torchmetrics import MetricCollection

from dltemplate import registry
from dltemplate.modules.finite import check_finite
from dltemplate.modules.metrics import log_epoch_metrics
from dltemplate.modules.schedulers import configure_optimizers

_LOADING = ContextVar("loading_from_checkpoint", default=False)


class StepModule(LightningModule):
    """A LightningModule whose training, validation and test steps are one `model_step`, read top to bottom:

        x, target = batch
        loss, outputs = self.objective(x, target, stage)  # forward and loss (mixup overrides this part)
        preds = self.predictions(outputs.detach())         # what predict_step returns, on the targets' scale
        self.update_metrics(preds, target, x, stage)       # on the device; read once per epoch
        self.log_loss(loss, stage)                         # per step (training) and per epoch

    `objective` is `net_outputs` (the net's raw outputs: logits, standardised values, scaled
    forecasts) followed by `loss`. Subclasses define those parts and `predictions`, and set
    `train_metrics`, `val_metrics`, `test_metrics` (None: none for that stage), which the run summary
    reads too (`callbacks.summary.custom_scalars_layout`). Nothing in a step
    reads a value on the host: the loss is read by the progress bar and the loggers every
    `trainer.log_every_n_steps` steps, metrics once per epoch (`end_epoch`).
    """

    # set by every subclass in __init__ (None: no metrics for that stage); no class-level default, which
    # would hide the submodule nn.Module registers under the same name
    train_metrics: MetricCollection | None
    val_metrics: MetricCollection | None
    test_metrics: MetricCollection | None
    backbone_lr_scale: float | None = None  # a fine-tuned backbone's share of the learning rate
    target_kind: str  # "classification", "regression" or "forecasting": must match the data module's
    # logs naive forecasts' errors beside its own (`<stage>/naive_mae`, `<stage>/rel_mae`): charted together
    compares_to_naive: bool = False
    # the first non-finite training loss as (step, value) tensors on the device, kept by `check_finite`
    _first_nonfinite: tuple[Tensor, Tensor] | None = None

    # ---- from a checkpoint ---------------------------------------------------------------------

    @_restricted_classmethod  # Lightning's classmethod that refuses to be called on an instance
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:
        """Lightning's `load_from_checkpoint`, with the module's saved arguments checked before they are built.

        They are data from a file: every `_target_` in them (the net and its layers, the optimizer,
        scheduler and loss) must be allowed for its place by the allowlist (`dltemplate.registry`),
        before anything it names is imported; a `ConfigError` otherwise. The module then builds them
        with Hydra's `instantiate`, as it does from the run's own config.
        """
        token = _LOADING.set(True)
        try:
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
        finally:
            _LOADING.reset(token)

    def __new__(cls, *args: Any, **kwargs: Any) -> "StepModule":
        if _LOADING.get():  # Lightning creates the module with the checkpoint's hyperparameters (and the caller's)
            _LOADING.set(False)  # once: a module this one creates itself is not the checkpoint's
            registry.check(kwargs, "hyperparameters", f"{cls.__name__}.load_from_checkpoint: hyper_parameters")
        return super().__new__(cls)

    # ---- the parts -------------------------------------------------------------------------------

    def net_outputs(self, x: Tensor) -> Tensor:
        """The net's raw outputs for inputs `x`."""
        raise NotImplementedError

    def loss(self, outputs: Tensor, target: Tensor, stage: str) -> Tensor:
        """The loss of `outputs` against `target`."""
        raise NotImplementedError

    def objective(self, x: Tensor, target: Tensor, stage: str) -> tuple[Tensor, Tensor]:
        """(loss, outputs) of a batch: the part to override for another training objective."""
        outputs = self.net_outputs(x)
        return self.loss(outputs, target, stage), outputs

    def predictions(self, outputs: Tensor) -> Tensor:
        """Predictions from the net's outputs: probabilities, or values on the targets' scale."""
        raise NotImplementedError

    def update_metrics(self, preds: Tensor, target: Tensor, x: Tensor, stage: str) -> None:
        """Feed the stage's metrics (they stay on the device until the epoch ends)."""
        metrics = self.stage_metrics(stage)
        if metrics is not None:
            metrics.update(preds, target)

    def log_loss(self, loss: Tensor, stage: str) -> None:
        """`<stage>/loss`: per step and epoch mean while training, epoch mean (over every process) otherwise.

        The training loss is not marked `prog_bar`: Lightning would turn it into a number after every
        step, which waits for the device. `dltemplate.callbacks.progress.ProgressBar` shows it instead.
        """
        training = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=training, on_epoch=True, prog_bar=not training, sync_dist=not training)

    def step_output(self, loss: Tensor, preds: Tensor, target: Tensor) -> dict[str, Tensor]:
        """What a step returns, which callbacks read (`preds`, `target` on the targets' scale)."""
        return {"loss": loss, "preds": preds, "target": target}

    # ---- the step --------------------------------------------------------------------------------

    def model_step(self, batch: tuple[Tensor, Tensor], stage: str) -> dict[str, Tensor]:
        x, target = batch
        loss, outputs = self.objective(x, target, stage)
        preds = self.predictions(outputs.detach())
        self.update_metrics(preds, target, x, stage)
        self.log_loss(loss, stage)
        return self.step_output(loss, preds, target)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        out = self.model_step(batch, "train")
        check_finite(out["loss"], self)  # on the device; read every few steps
        return out

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self.model_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self.model_step(batch, "test")

    def predict_step(self, batch: Tensor | tuple[Tensor, ...], batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.predictions(self.net_outputs(x))

    # ---- epochs ----------------------------------------------------------------------------------

    def stage_metrics(self, stage: str) -> MetricCollection | None:
        return {"train": self.train_metrics, "val": self.val_metrics, "test": self.test_metrics}[stage]

    def end_epoch(self, stage: str) -> None:
        """Log the stage's metrics once for the epoch (computed over every process), then reset them."""
        metrics = self.stage_metrics(stage)
        if metrics is not None:
            log_epoch_metrics(self, metrics, prog_bar=stage == "val")

    def on_train_epoch_end(self) -> None:
        self.end_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self.end_epoch("val")

    def on_test_epoch_end(self) -> None:
        self.end_epoch("test")

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        return configure_optimizers(
            self, self.optimizer_spec, self.scheduler_spec, hp.scheduler_interval, hp.monitor, self.backbone_lr_scale
        )
