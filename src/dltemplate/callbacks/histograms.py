"""Weight and gradient histograms."""

from lightning.pytorch import Callback, LightningModule, Trainer
from torch.optim import Optimizer

from dltemplate.callbacks.tensorboard import tensorboard_writer


class ParameterHistograms(Callback):
    """Writes a histogram of every parameter, and of its gradient, every N epochs.

    Parameters are written at the end of the epoch; gradients at the epoch's first optimizer step,
    the only moment they are sure to exist (Lightning frees them between steps).

    Args:
        every_n_epochs: Epoch interval; the last epoch is always written too.
        gradients: Also write `grads/<name>` histograms.
    """

    def __init__(self, every_n_epochs: int = 5, gradients: bool = True) -> None:
        self.every_n_epochs = every_n_epochs
        self.gradients = gradients
        self._grads_written_epoch = -1

    def _due(self, trainer: Trainer) -> bool:
        last = trainer.current_epoch + 1 >= (trainer.max_epochs or 0) or trainer.should_stop
        return trainer.current_epoch % self.every_n_epochs == 0 or last

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        writer = tensorboard_writer(trainer)
        if not self.gradients or writer is None or self._grads_written_epoch == trainer.current_epoch:
            return
        if self._due(trainer):
            self._grads_written_epoch = trainer.current_epoch
            for name, param in pl_module.named_parameters():
                if param.grad is not None:
                    writer.add_histogram(f"grads/{name}", param.grad.detach().float().cpu(), trainer.global_step)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = tensorboard_writer(trainer)
        if writer is None or not self._due(trainer):
            return
        for name, param in pl_module.named_parameters():
            writer.add_histogram(f"params/{name}", param.detach().float().cpu(), trainer.global_step)
