"""Validation figures: confusion matrix and ROC curve, or predicted-versus-true scatter."""

import matplotlib.pyplot as plt
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torchmetrics import Metric
from torchmetrics.classification import ROC, ConfusionMatrix
from torchmetrics.regression import PearsonCorrCoef

from dltemplate.callbacks.tensorboard import tensorboard_writer


class _ValidationFigures(Callback):
    """Collects the `preds` and `target` that validation_step returns, draws figures at epoch end.

    Metric states live on the module's device and are synchronised across processes, so under DDP
    the figure shows the whole validation set.
    """

    def __init__(self, every_n_epochs: int = 1) -> None:
        self.every_n_epochs = every_n_epochs
        self.metrics: dict[str, Metric] = {}

    def make_metrics(self, pl_module: LightningModule) -> dict[str, Metric]:
        raise NotImplementedError

    def draw(self, trainer: Trainer) -> dict[str, plt.Figure]:
        raise NotImplementedError

    def _active(self, trainer: Trainer) -> bool:
        return not trainer.sanity_checking and trainer.current_epoch % self.every_n_epochs == 0

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._active(trainer):
            self.metrics = {k: m.to(pl_module.device) for k, m in self.make_metrics(pl_module).items()}

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self._active(trainer):
            for metric in self.metrics.values():
                metric.update(outputs["preds"], outputs["target"])

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._active(trainer):
            return
        figures = self.draw(trainer)  # every rank computes: compute() is a collective under DDP
        writer = tensorboard_writer(trainer)
        for tag, figure in figures.items():
            if writer is not None:
                writer.add_figure(tag, figure, trainer.global_step)
            plt.close(figure)
        self.metrics = {}


class ClassificationFigures(_ValidationFigures):
    """Confusion matrix and ROC curve of the validation set, labelled with the data's class names."""

    def make_metrics(self, pl_module: LightningModule) -> dict[str, Metric]:
        num_classes = pl_module.hparams.num_classes
        task = "binary" if num_classes == 2 else "multiclass"
        return {
            "confusion_matrix": ConfusionMatrix(task=task, num_classes=num_classes),
            "roc": ROC(task=task, num_classes=num_classes, thresholds=200),
        }

    def draw(self, trainer: Trainer) -> dict[str, plt.Figure]:
        names = getattr(trainer.datamodule, "class_names", None)
        confusion_fig, _ = self.metrics["confusion_matrix"].plot(labels=names)
        roc_fig, _ = self.metrics["roc"].plot(score=True)
        return {"val/confusion_matrix": confusion_fig, "val/roc": roc_fig}


class RegressionFigures(_ValidationFigures):
    """Scatter of predicted against true validation targets, with the identity line."""

    def make_metrics(self, pl_module: LightningModule) -> dict[str, Metric]:
        return {"fit": _PairsCollector()}

    def draw(self, trainer: Trainer) -> dict[str, plt.Figure]:
        preds, target = self.metrics["fit"].compute()
        figure, ax = plt.subplots(figsize=(5, 5))
        ax.scatter(target.cpu().numpy(), preds.cpu().numpy(), s=8, alpha=0.6)
        low, high = float(min(target.min(), preds.min())), float(max(target.max(), preds.max()))
        ax.plot([low, high], [low, high], color="black", linewidth=1, label="perfect fit")
        r = PearsonCorrCoef()(preds.flatten().cpu(), target.flatten().cpu())
        ax.set(xlabel="true", ylabel="predicted", title=f"validation fit (Pearson r = {r:.3f})")
        ax.legend(loc="upper left")
        return {"val/regression_fit": figure}


class _PairsCollector(Metric):
    """Keeps every (prediction, target) pair; a Metric so that DDP gathers them across processes."""

    def __init__(self) -> None:
        super().__init__()
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.preds.append(preds.detach().float())
        self.target.append(target.detach().float())

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        cat = torch.cat if isinstance(self.preds, list) else (lambda t: t)
        return cat(self.preds), cat(self.target)


class ForecastFigures(_ValidationFigures):
    """History, truth and one-step-ahead forecast of the validation steps, one panel per series.

    Needs a data module with `series` (the modelled series, unscaled) and `step_index(stage)`.
    Under DDP the gathered samples are not in time order; this figure is meant for one process.
    """

    def make_metrics(self, pl_module: LightningModule) -> dict[str, Metric]:
        return {"forecast": _PairsCollector()}

    def draw(self, trainer: Trainer) -> dict[str, plt.Figure]:
        preds, target = self.metrics["forecast"].compute()  # (N, H, C) each, own units
        datamodule = trainer.datamodule
        steps = datamodule.step_index("val")
        history = datamodule.series.loc[: steps[0]].iloc[:-1]
        columns = list(datamodule.series.columns)
        figure, axes = plt.subplots(len(columns), 1, figsize=(8, 2.6 * len(columns)), squeeze=False, sharex=True)
        for i, (ax, column) in enumerate(zip(axes[:, 0], columns, strict=True)):
            ax.plot(history.index, history[column], color="gray", label="history")
            ax.plot(steps, target[:, 0, i].cpu().numpy(), "o-", color="black", label="truth")
            ax.plot(steps, preds[:, 0, i].cpu().numpy(), "o--", color="tab:red", label="forecast (1 step)")
            ax.set_title(column)
        axes[0, 0].legend(loc="upper left")
        figure.autofmt_xdate()
        figure.tight_layout()
        return {"val/forecast": figure}
