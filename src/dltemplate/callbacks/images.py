"""Image grids: what the net is fed, and which validation images it gets wrong."""

import matplotlib.pyplot as plt
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from torchvision.utils import make_grid

from dltemplate.callbacks.tensorboard import tensorboard_writer


class ImageGrids(Callback):
    """Writes `train/inputs`, a grid of training inputs after augmentation, and `val/misclassified`,
    validation images the model got wrong, titled "predicted / true".

    Needs a data module with `mean`, `std` (to undo the normalisation) and `class_names`.

    Args:
        every_n_epochs: Epoch interval.
        max_images: Images per grid.
    """

    def __init__(self, every_n_epochs: int = 5, max_images: int = 32) -> None:
        self.every_n_epochs = every_n_epochs
        self.max_images = max_images
        self._wrong: list[tuple[Tensor, int, int]] = []

    def _due(self, trainer: Trainer) -> bool:
        return trainer.current_epoch % self.every_n_epochs == 0 and not trainer.sanity_checking

    def _viewable(self, trainer: Trainer, images: Tensor) -> Tensor:
        """Undo the normalisation: (B, C, H, W) floats in [0, 1] on the CPU."""
        dm = trainer.datamodule
        mean = torch.tensor(dm.mean, device=images.device)[:, None, None]
        std = torch.tensor(dm.std, device=images.device)[:, None, None]
        return (images.float() * std + mean).clamp(0, 1).cpu()

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        writer = tensorboard_writer(trainer)
        if batch_idx == 0 and writer is not None and self._due(trainer):
            images = self._viewable(trainer, batch[0][: self.max_images])
            writer.add_image("train/inputs", make_grid(images, nrow=8), trainer.global_step)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._wrong = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not self._due(trainer) or len(self._wrong) >= self.max_images or not trainer.is_global_zero:
            return
        probs, target = outputs["preds"], outputs["target"]
        predicted = (probs > 0.5).long() if probs.ndim == 1 else probs.argmax(dim=1)
        for i in (predicted != target).nonzero().flatten().tolist()[: self.max_images - len(self._wrong)]:
            self._wrong.append((batch[0][i], int(predicted[i]), int(target[i])))

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = tensorboard_writer(trainer)
        if writer is None or not self._wrong or not self._due(trainer):
            return
        names = trainer.datamodule.class_names
        images = self._viewable(trainer, torch.stack([image for image, _, _ in self._wrong]))
        columns = 8
        rows = -(-len(images) // columns)
        figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.4, rows * 1.6), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, image, (_, predicted, true) in zip(axes.flat, images, self._wrong, strict=False):
            ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if image.shape[0] == 1 else None)
            ax.set_title(f"{names[predicted]} / {names[true]}", fontsize=7, color="tab:red")
        figure.suptitle("misclassified validation images: predicted / true", fontsize=9)
        figure.tight_layout()
        writer.add_figure("val/misclassified", figure, trainer.global_step)
        plt.close(figure)
