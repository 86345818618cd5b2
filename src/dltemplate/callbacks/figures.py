"""Evaluation figures at the best and last epochs and on the test set (see `callbacks.schedule`).

Classification: a confusion matrix normalised by true class, ROC curves with the chance diagonal,
precision-recall curves for a named positive class. Regression: predicted against true values, and
residuals. Forecasting: the recent history, truth, forecast and the naive forecast, in the series'
own units. Tags are `<split>/<figure>` (`val/confusion_matrix`, `test/roc`, ...); titles say the
split, the epoch and a metric.
"""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from lightning.pytorch import LightningModule, Trainer
from torchmetrics import Metric
from torchmetrics.functional import classification as C

from dltemplate.callbacks.media import log_figure
from dltemplate.callbacks.schedule import EvaluationRecords, PairsCollector, Snapshot
from dltemplate.data.dates import frequency_name
from dltemplate.data.protocols import HasClasses

SPLIT = {"val": "validation", "test": "test"}


class ClassificationFigures(EvaluationRecords):
    """Confusion matrix, ROC and precision-recall curves, labelled with the class names.

    Args:
        class_names: Names for the figures when the data module's are not meaningful (Titanic's 0/1).
        positive_class: The class whose precision and recall are drawn for binary tasks (default: the second).
        every_n_epochs, test: see `EvaluationRecords`.
    """

    def __init__(
        self,
        every_n_epochs: int = 0,
        test: bool = True,
        class_names: list[str] | None = None,
        positive_class: str | None = None,
    ) -> None:
        super().__init__(every_n_epochs, test)
        self.class_names, self.positive_class = class_names, positive_class

    def collector(self, pl_module: LightningModule) -> Metric:
        return PairsCollector()

    def record(self, trainer: Trainer, snapshot: Snapshot) -> None:
        probs, target = snapshot.data
        datamodule = trainer.datamodule
        known = datamodule.class_names if isinstance(datamodule, HasClasses) else None
        names = [str(n) for n in (self.class_names or known or [])]
        if probs.ndim == 1:
            probs = torch.stack([1 - probs, probs], dim=1)  # binary: P(class 1) → both columns
        k = probs.shape[1]
        names = names if len(names) == k else [str(i) for i in range(k)]
        target = target.long()
        caption = snapshot.caption(self.monitor(trainer))
        for name, figure in (
            ("confusion_matrix", confusion_figure(probs, target, names, caption)),
            ("roc", roc_figure(probs, target, names, caption)),
            ("precision_recall", pr_figure(probs, target, names, caption, self.positive_class)),
        ):
            log_figure(trainer, f"{snapshot.stage}/{name}", figure, snapshot.step)


def confusion_figure(probs: torch.Tensor, target: torch.Tensor, names: list[str], caption: str) -> plt.Figure:
    """Rows: true class, normalised to 1; each cell shows the share and the count."""
    k = len(names)
    counts = torch.bincount(target * k + probs.argmax(1), minlength=k * k).reshape(k, k).numpy()
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = 3.2 + 0.5 * k
    figure, ax = plt.subplots(figsize=(size + 1.6, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                color = "white" if shares[i, j] > 0.6 else "black"
                ax.text(
                    j, i, f"{shares[i, j]:.0%}\n({counts[i, j]})", ha="center", va="center", fontsize=8, color=color
                )
    ax.set_xticks(range(k), names, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
    ax.set_yticks(range(k), names)
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set(xlabel="predicted class", ylabel="true class")
    ax.set_title(f"confusion matrix, share of each true class · accuracy {accuracy:.3f}\n{caption}", fontsize=9)
    figure.colorbar(image, ax=ax, fraction=0.046)
    figure.tight_layout()
    return figure


def _curves(
    probs: torch.Tensor, target: torch.Tensor, names: list[str]
) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(class name, scores, is-that-class) for each curve: one for binary tasks, one per class otherwise."""
    if len(names) == 2:
        return [(names[1], probs[:, 1], target)]
    return [(name, probs[:, i], (target == i).long()) for i, name in enumerate(names)]


def roc_figure(probs: torch.Tensor, target: torch.Tensor, names: list[str], caption: str) -> plt.Figure:
    figure, ax = plt.subplots(figsize=(5, 4.5))
    for name, scores, positive in _curves(probs, target, names)[:10]:
        if positive.min() == positive.max():
            continue  # one class only: no curve
        fpr, tpr, _ = C.binary_roc(scores, positive)
        auc = C.binary_auroc(scores, positive)
        ax.plot(fpr.numpy(), tpr.numpy(), label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=1, label="chance")
    positive = f"positive class: {names[1]}" if len(names) == 2 else "each class against the rest"
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title(f"ROC ({positive})\n{caption}", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    return figure


def pr_figure(
    probs: torch.Tensor, target: torch.Tensor, names: list[str], caption: str, positive_class: str | None = None
) -> plt.Figure:
    figure, ax = plt.subplots(figsize=(5, 4.5))
    curves = _curves(probs, target, names)
    if len(names) == 2 and positive_class in names and names.index(positive_class) == 0:
        curves = [(names[0], probs[:, 0], 1 - target)]
    for name, scores, positive in curves[:10]:
        if positive.max() == 0:
            continue
        precision, recall, _ = C.binary_precision_recall_curve(scores, positive)
        average = C.binary_average_precision(scores, positive)
        line = ax.plot(recall.numpy(), precision.numpy(), label=f"{name} (AP {average:.3f})")[0]
        prevalence = float(positive.float().mean())
        ax.axhline(prevalence, linestyle=":", linewidth=1, color=line.get_color())
    title = f"positive class: {curves[0][0]}" if len(curves) == 1 else "each class against the rest"
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title(f"precision-recall ({title}; dotted: chance)\n{caption}", fontsize=9)
    ax.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    return figure


class RegressionFigures(EvaluationRecords):
    """Predicted against true values with the identity line, and residuals against predictions."""

    def __init__(self, every_n_epochs: int = 0, test: bool = True, max_points: int = 5000) -> None:
        super().__init__(every_n_epochs, test)
        self.max_points = max_points

    def collector(self, pl_module: LightningModule) -> Metric:
        return PairsCollector()

    def record(self, trainer: Trainer, snapshot: Snapshot) -> None:
        preds, target = (t.flatten().numpy() for t in snapshot.data)
        if len(preds) > self.max_points:  # a scatter of 10,000 points shows no more than 5,000
            keep = np.random.default_rng(0).choice(len(preds), self.max_points, replace=False)
            shown_preds, shown_target = preds[keep], target[keep]
        else:
            shown_preds, shown_target = preds, target
        caption = snapshot.caption(self.monitor(trainer))
        mse = float(np.mean((preds - target) ** 2))
        r = float(np.corrcoef(preds, target)[0, 1]) if len(preds) > 1 and preds.std() > 0 else float("nan")

        figure, ax = plt.subplots(figsize=(5, 5))
        ax.scatter(shown_target, shown_preds, s=6, alpha=0.5)
        low, high = float(min(target.min(), preds.min())), float(max(target.max(), preds.max()))
        ax.plot([low, high], [low, high], color="black", linewidth=1, label="perfect fit")
        ax.set(xlabel="true value", ylabel="predicted value")
        ax.set_title(f"predicted vs true\n{caption} · MSE {mse:.4g}, Pearson r {r:.3f}", fontsize=9)
        ax.legend(loc="upper left")
        figure.tight_layout()
        log_figure(trainer, f"{snapshot.stage}/regression_fit", figure, snapshot.step)

        residuals = shown_target - shown_preds
        figure, (ax, hist) = plt.subplots(1, 2, figsize=(8, 3.8), gridspec_kw={"width_ratios": [2, 1]})
        ax.scatter(shown_preds, residuals, s=6, alpha=0.5)
        ax.axhline(0, color="black", linewidth=1)
        ax.set(xlabel="predicted value", ylabel="residual (true − predicted)")
        hist.hist(residuals, bins=40, orientation="horizontal", color="tab:blue", alpha=0.7)
        hist.axhline(0, color="black", linewidth=1)
        hist.set(xlabel="count")
        figure.suptitle(f"residuals · {caption} · sd {np.std(target - preds):.4g}", fontsize=9)
        figure.tight_layout()
        log_figure(trainer, f"{snapshot.stage}/residuals", figure, snapshot.step)


class ForecastFigures(EvaluationRecords):
    """Recent history, truth, one-step forecast and the naive forecast of the evaluated steps, per series.

    Needs a data module with `series` (the modelled series, unscaled) and `step_index(stage)`.
    Under DDP the gathered samples are not in time order; this figure is meant for one process.

    Args:
        history_steps: Steps of history before the evaluated ones (default: 3 × their number, at least 14).
    """

    def __init__(self, every_n_epochs: int = 0, test: bool = True, history_steps: int | None = None) -> None:
        super().__init__(every_n_epochs, test)
        self.history_steps = history_steps

    def collector(self, pl_module: LightningModule) -> Metric:
        return PairsCollector()

    def record(self, trainer: Trainer, snapshot: Snapshot) -> None:
        preds, target = snapshot.data  # (N, H, C) each, own units
        datamodule = trainer.datamodule
        steps = datamodule.step_index(snapshot.stage)
        before = datamodule.series.loc[: steps[0]].iloc[:-1]
        history = before.iloc[-(self.history_steps or max(3 * len(steps), 14)) :]
        columns = list(datamodule.series.columns)
        unit = _unit(datamodule)
        caption = snapshot.caption(self.monitor(trainer))
        figure, axes = plt.subplots(len(columns), 1, figsize=(8, 2.8 * len(columns)), squeeze=False, sharex=True)
        for i, (ax, column) in enumerate(zip(axes[:, 0], columns, strict=True)):
            truth, forecast = target[:, 0, i].numpy(), preds[:, 0, i].numpy()
            naive = np.concatenate([before[column].to_numpy()[-1:], truth[:-1]])  # yesterday's value
            model_mae, naive_mae = np.abs(forecast - truth).mean(), np.abs(naive - truth).mean()
            ax.plot(history.index, history[column], color="gray", label="history")
            ax.plot(steps, truth, "o-", color="black", label="truth")
            ax.plot(steps, naive, "s:", color="tab:blue", label="naive (previous value)")
            ax.plot(steps, forecast, "o--", color="tab:red", label="forecast (1 step ahead)")
            recent = history[column].to_numpy()[-len(steps) :]  # the scale: evaluated steps and the days just before
            _zoom(ax, history[column].to_numpy(), np.concatenate([truth, forecast, naive, recent]))
            ax.set_ylabel(f"{column}\n({unit})", fontsize=8)
            ax.set_title(f"{column}: MAE {model_mae:.4g} vs naive {naive_mae:.4g}", fontsize=9)
        axes[0, 0].legend(loc="upper left", fontsize=7)
        figure.suptitle(f"forecast · {caption}", fontsize=9)
        figure.autofmt_xdate()
        figure.tight_layout()
        log_figure(trainer, f"{snapshot.stage}/forecast", figure, snapshot.step)


def _unit(datamodule) -> str:
    """ "change per day", "level", ... from the data module's settings and the series' spacing."""
    index = datamodule.series.index
    hparams = datamodule.hparams
    spacing = ""
    if isinstance(index, pd.DatetimeIndex) and len(index) > 1:
        delta = pd.Series(index[1:] - index[:-1]).mode()[0]
        spacing = {pd.Timedelta(days=1): "day", pd.Timedelta(hours=1): "hour", pd.Timedelta(weeks=1): "week"}.get(
            delta, str(delta)
        )
        calendar = {"monthly": "month", "quarterly": "quarter", "yearly": "year"}  # steps of varying length
        spacing = calendar.get(frequency_name(hparams.get("frequency")), spacing)
    if hparams.get("difference"):
        return f"change per {spacing}" if spacing else "change per step"
    return f"value per {spacing}" if spacing else "value"


def _zoom(ax: plt.Axes, history: np.ndarray, shown: np.ndarray) -> None:
    """Scale the y axis to `shown`; note older history left off that scale (a reporting spike, a peak)."""
    low, high = float(np.nanmin(shown)), float(np.nanmax(shown))
    pad = 0.15 * (high - low or abs(high) or 1.0)
    ax.set_ylim(low - pad, high + pad)
    if len(history) and (history.max() > high + pad or history.min() < low - pad):
        ax.annotate(
            f"older history off scale (from {history.min():,.4g} to {history.max():,.4g})",
            xy=(0.99, 0.97),
            xycoords="axes fraction",
            fontsize=7,
            ha="right",
            va="top",
            color="gray",
        )
