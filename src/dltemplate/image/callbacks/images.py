"""Image grids: what the net is fed, and which images it gets most confidently wrong."""

from typing import Any

import matplotlib.pyplot as plt
import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor

from dltemplate.callbacks.media import log_figure, log_image_grid
from dltemplate.callbacks.schedule import EvaluationRecords, Snapshot
from dltemplate.data.protocols import HasClasses


class ImageGrids(EvaluationRecords):
    """Writes `train/inputs`, training inputs after augmentation (first epoch: a class-balanced sample of
    the first batch, each image titled with its class), and `<split>/misclassified`:
    the mistakes the model is most confident about, taken in turn from each true class, titled
    "predicted / true (confidence)", at the best and last epochs and on the test set.

    Needs a data module with `mean`, `std` (to undo the normalisation) and `class_names`. Under DDP
    the grid shows rank 0's share of the images.

    Args:
        max_images: Images per grid.
        every_n_epochs, test: see `EvaluationRecords`.
    """

    def __init__(self, every_n_epochs: int = 0, test: bool = True, max_images: int = 32) -> None:
        super().__init__(every_n_epochs, test)
        self.max_images = max_images

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        if batch_idx != 0 or trainer.current_epoch != 0:
            return
        images, targets = batch[0], batch[1] if len(batch) > 1 else None
        datamodule = trainer.datamodule
        names = datamodule.class_names if isinstance(datamodule, HasClasses) else None
        if not names or not _class_indices(targets, len(names)):
            log_image_grid(trainer, "train/inputs", viewable(trainer, images[: self.max_images]), trainer.global_step)
            return
        chosen = balanced_indices(targets, self.max_images)
        labels = [names[int(targets[i])] for i in chosen]
        title = "training inputs after augmentation (first batch, classes in turn)"
        figure = labelled_grid(viewable(trainer, images[chosen]), labels, title)
        log_figure(trainer, "train/inputs", figure, trainer.global_step)

    def collector(self, pl_module: LightningModule) -> "Mistakes":
        return Mistakes(self.max_images, lambda images: viewable(pl_module.trainer, images))

    def collect(self, collector: "Mistakes", outputs: Any, batch: Any) -> None:
        collector.update(batch[0], outputs["preds"], outputs["target"])

    def record(self, trainer: Trainer, snapshot: Snapshot) -> None:
        mistakes = snapshot.data
        if not mistakes:
            return
        names = trainer.datamodule.class_names
        columns = 8
        rows = -(-len(mistakes) // columns)
        figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.4, rows * 1.6 + 0.5), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, (confidence, image, predicted, true) in zip(axes.flat, mistakes, strict=False):
            ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if image.shape[0] == 1 else None)
            ax.set_title(f"{names[predicted]} / {names[true]}\n({confidence:.0%})", fontsize=7, color="tab:red")
        caption = snapshot.caption(self.monitor(trainer))
        figure.suptitle(f"most confident mistakes, each true class in turn: predicted / true\n{caption}", fontsize=9)
        figure.tight_layout()
        log_figure(trainer, f"{snapshot.stage}/misclassified", figure, snapshot.step)


class Mistakes:
    """The most confident mistakes per true class, kept on the device until `compute` brings them to the CPU.

    Each batch merges its mistakes into every class's top `keep` by one `topk` (correct predictions
    count as confidence -inf): no step reads a value on the host, which would wait for the device.
    A class keeps `max_images` mistakes when there are up to four classes, else four times its share
    of the grid, which bounds the images held however many classes there are.
    """

    def __init__(self, max_images: int, to_view) -> None:
        self.max_images, self.to_view = max_images, to_view
        self.confidence: Tensor | None = None  # (K, keep): -inf where no mistake is kept
        self.images: Tensor | None = None  # (K, keep, C, H, W)
        self.predicted: Tensor | None = None  # (K, keep)

    def to(self, device: torch.device) -> "Mistakes":
        return self

    def update(self, images: Tensor, probs: Tensor, target: Tensor) -> None:
        if probs.ndim == 1:  # binary: P(class 1)
            probs = torch.stack([1 - probs, probs], dim=1)
        confidence, predicted = probs.float().max(dim=1)  # (B,)
        classes = probs.shape[1]
        keep = self.max_images if classes <= 4 else max(1, -(-4 * self.max_images // classes))
        wrong = torch.where(predicted != target, confidence, torch.full_like(confidence, -torch.inf))
        if self.confidence is None:  # `keep` empty places per class (-inf: no mistake there yet)
            self.confidence = confidence.new_full((classes, keep), -torch.inf)
            self.images = images.new_zeros((classes, keep, *images.shape[1:]))
            self.predicted = predicted.new_zeros((classes, keep))
        # candidates: the places kept so far, class by class, then this batch's images
        arange = torch.arange(classes, device=target.device)
        labels = torch.cat([arange.repeat_interleave(keep), target])  # (N,)
        candidates = torch.cat([self.confidence.reshape(-1), wrong])
        mine = labels[None, :] == arange[:, None]  # (K, N): a candidate counts for its own class only
        per_class = torch.where(mine, candidates[None, :], -torch.inf)
        top = per_class.topk(keep, dim=1).indices  # (K, keep)
        self.confidence = per_class.gather(1, top)
        self.predicted = torch.cat([self.predicted.reshape(-1), predicted])[top]
        self.images = torch.cat([self.images.reshape(-1, *images.shape[1:]), images.detach()])[top]

    def compute(self) -> list[tuple[float, Tensor, int, int]]:
        """Up to `max_images` mistakes: each class's most confident, then each class's next, ..."""
        if self.confidence is None:
            return []
        confidence, predicted = self.confidence.cpu(), self.predicted.cpu()  # the one read, at the epoch's end
        queues = []
        for label in range(confidence.shape[0]):
            found = [i for i in range(confidence.shape[1]) if confidence[label, i] > -torch.inf]
            shown = self.to_view(self.images[label, found]) if found else []
            pairs = zip(found, shown, strict=True)
            queues.append([(float(confidence[label, i]), image, int(predicted[label, i]), label) for i, image in pairs])
        chosen: list[tuple[float, Tensor, int, int]] = []
        while len(chosen) < self.max_images and any(queues):
            for queue in queues:
                if queue and len(chosen) < self.max_images:
                    chosen.append(queue.pop(0))
        return chosen


def balanced_indices(targets: Tensor, count: int) -> list[int]:
    """Up to `count` positions of `targets`, taking each class in turn (first of each, then second, ...)."""
    by_class: dict[int, list[int]] = {}
    for position, label in enumerate(targets.tolist()):
        by_class.setdefault(int(label), []).append(position)
    queues = [by_class[label] for label in sorted(by_class)]
    order = [queue[k] for k in range(max(map(len, queues), default=0)) for queue in queues if k < len(queue)]
    return order[:count]


def labelled_grid(images: Tensor, labels: list[str], title: str, columns: int = 8) -> plt.Figure:
    """A figure of (B, C, H, W) images in [0, 1], each titled with its label."""
    rows = max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.4, rows * 1.5 + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label in zip(axes.flat, images, labels, strict=False):
        ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if image.shape[0] == 1 else None)
        ax.set_title(label, fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


def _class_indices(targets: Any, num_classes: int) -> bool:
    """Whether `targets` are one class index per image (not masks, boxes or soft labels)."""
    if not isinstance(targets, Tensor) or targets.ndim != 1 or not len(targets):
        return False
    whole = not targets.is_floating_point() or bool((targets == targets.round()).all())
    return whole and float(targets.min()) >= 0 and float(targets.max()) < num_classes


def viewable(trainer: Trainer, images: Tensor) -> Tensor:
    """Undo the data module's normalisation: (B, C, H, W) floats in [0, 1] on the CPU."""
    dm = trainer.datamodule
    mean = torch.tensor(dm.mean, device=images.device)[:, None, None]
    std = torch.tensor(dm.std, device=images.device)[:, None, None]
    return (images.float() * std + mean).clamp(0, 1).cpu()
