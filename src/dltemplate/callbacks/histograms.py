"""Weight and gradient histograms, and per-layer gradient norms, grouped under `weights/`."""

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.optim import Optimizer

from dltemplate.callbacks.media import log_histogram, log_scalars


class ParameterHistograms(Callback):
    """Writes `weights/<parameter>` and `weights/<parameter>/grad` histograms every N epochs and
    `weights/<layer>/grad_norm`, each layer's gradient norm averaged over the epoch's steps.

    The `weights/` group sorts after `train/` and `val/` in TensorBoard, so the histograms no longer
    crowd the top of its pages. Parameters are written at the end of the epoch. Gradients exist only
    during a step (Lightning frees them between steps): the epoch's first optimizer step copies them
    on the device, and they are written at the epoch's end with the parameters, so that no step
    waits for the device to hand them to the host. The per-layer norms are summed on the device too.

    Args:
        every_n_epochs: Epoch interval of the histograms; the last epoch is always written too.
        gradients: Also write gradient histograms and norms.
    """

    def __init__(self, every_n_epochs: int = 10, gradients: bool = True) -> None:
        self.every_n_epochs = every_n_epochs
        self.gradients = gradients
        self._grads_written_epoch = -1
        self._norms: dict[str, float] = {}  # layer → sum over the epoch's steps of its gradient norm
        self._steps = 0
        self._layers: list[str] = []  # the layers summed in `_sums`, on the device, until folded into `_norms`
        self._sums: torch.Tensor | None = None
        self._names: list[str] = []  # the parameters whose norms `_index` adds up
        self._index: torch.Tensor | None = None  # each parameter's layer in `_layers`, on the device
        self._grads: dict[str, torch.Tensor] = {}  # the epoch's first gradients, copied on the device
        self._grads_step = 0

    def _due(self, trainer: Trainer) -> bool:
        last = trainer.current_epoch + 1 >= (trainer.max_epochs or 0) or trainer.should_stop
        return trainer.current_epoch % self.every_n_epochs == 0 or last

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._norms, self._steps, self._sums = {}, 0, None

    def _fold(self) -> None:
        """Add the running per-layer sums (read from the device) to `_norms`, and start new sums."""
        if self._sums is not None:
            for layer, total in zip(self._layers, self._sums.tolist(), strict=True):
                self._norms[layer] = self._norms.get(layer, 0.0) + total
        self._sums = None

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        if not self.gradients or not trainer.is_global_zero:
            return
        named = [(name, param) for name, param in pl_module.named_parameters() if param.grad is not None]
        for _, param in named:
            if param.grad.is_sparse:  # the same gradient summed per row once: the optimizer then finds it done
                param.grad = param.grad.coalesce()
        if named:
            # one fused kernel for every parameter's norm (as clip_grad_norm_ does), then one sum per layer:
            # a handful of operations per step instead of three per parameter
            layers = [name.rsplit(".", 1)[0] for name, _ in named]
            norms = torch.stack(torch._foreach_norm([_values(param.grad).float() for _, param in named]))
            names = [name for name, _ in named]
            if names != self._names:  # the parameters with gradients changed (a backbone unfroze)
                self._fold()
                order = list(dict.fromkeys(layers))
                self._names, self._layers = names, order
                # built once per parameter set: a host tensor copied to the device every step would wait
                self._index = torch.tensor([order.index(layer) for layer in layers], device=norms.device)
            if self._sums is None:
                self._sums = torch.zeros(len(self._layers), device=norms.device)
            self._sums += torch.zeros_like(self._sums).index_add_(0, self._index, norms.pow(2)).sqrt()
        self._steps += 1
        if self._due(trainer) and self._grads_written_epoch != trainer.current_epoch:
            self._grads_written_epoch, self._grads_step = trainer.current_epoch, trainer.global_step
            self._grads = {name: _values(param.grad).clone() for name, param in named}

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for name, grad in self._grads.items():
            log_histogram(trainer, f"weights/{name}/grad", grad, self._grads_step)
        self._grads = {}
        self._fold()
        if self._norms and self._steps:
            norms = {f"weights/{layer}/grad_norm": float(n) / self._steps for layer, n in self._norms.items()}
            log_scalars(trainer, norms, trainer.global_step)
        if self._due(trainer):
            for name, param in pl_module.named_parameters():
                log_histogram(trainer, f"weights/{name}", param, trainer.global_step)


def _values(grad: torch.Tensor) -> torch.Tensor:
    """A gradient's values: a sparse one (embedding rows) summed per row, the rows it touches only."""
    return grad.detach().coalesce().values() if grad.is_sparse else grad.detach()
