"""Image grids: what the net is fed, and which images it gets most confidently wrong."""

from typing import Any

import matplotlib.pyplot as plt
import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor

from dltemplate.callbacks.media import log_figure, log_image_grid
from dltemplate.callbacks.schedule import EvaluationRecords, Snapshot


class ImageGrids(EvaluationRecords):
    """Writes `train/inputs`, training inputs after augmentation (first epoch), and `<split>/misclassified`:
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
        if batch_idx == 0 and trainer.current_epoch == 0:
            log_image_grid(trainer, "train/inputs", viewable(trainer, batch[0][: self.max_images]), trainer.global_step)

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
    """The most confident mistakes per true class, kept on the CPU as viewable images."""

    def __init__(self, max_images: int, to_view) -> None:
        self.max_images, self.to_view = max_images, to_view
        self.by_class: dict[int, list[tuple[float, Tensor, int, int]]] = {}

    def to(self, device: torch.device) -> "Mistakes":
        return self

    def update(self, images: Tensor, probs: Tensor, target: Tensor) -> None:
        if probs.ndim == 1:  # binary: P(class 1)
            probs = torch.stack([1 - probs, probs], dim=1)
        confidence, predicted = probs.max(dim=1)
        wrong = (predicted != target).nonzero().flatten()
        if len(wrong) == 0:
            return
        shown = self.to_view(images[wrong])
        for image, i in zip(shown, wrong.tolist(), strict=True):
            kept = self.by_class.setdefault(int(target[i]), [])
            kept.append((float(confidence[i]), image, int(predicted[i]), int(target[i])))
        for label, kept in self.by_class.items():
            self.by_class[label] = sorted(kept, key=lambda m: -m[0])[: self.max_images]

    def compute(self) -> list[tuple[float, Tensor, int, int]]:
        """Up to `max_images` mistakes: each class's most confident, then each class's next, ..."""
        chosen: list[tuple[float, Tensor, int, int]] = []
        queues = [list(kept) for _, kept in sorted(self.by_class.items())]
        while len(chosen) < self.max_images and any(queues):
            for queue in queues:
                if queue and len(chosen) < self.max_images:
                    chosen.append(queue.pop(0))
        return chosen


def viewable(trainer: Trainer, images: Tensor) -> Tensor:
    """Undo the data module's normalisation: (B, C, H, W) floats in [0, 1] on the CPU."""
    dm = trainer.datamodule
    mean = torch.tensor(dm.mean, device=images.device)[:, None, None]
    std = torch.tensor(dm.std, device=images.device)[:, None, None]
    return (images.float() * std + mean).clamp(0, 1).cpu()
