"""The training loss checked for NaN and infinity on the device, read by the host every few steps."""

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from dltemplate.errors import DivergedError

if TYPE_CHECKING:
    from dltemplate.modules.step import StepModule

FINITE_CHECK_EVERY = 50  # steps between the host's looks at the loss flag (each look waits for the device)


def check_finite(loss: torch.Tensor, module: "StepModule") -> None:
    """Stop with a clear error when the training loss becomes NaN or infinite.

    The check runs on the device every step (the first non-finite step and value are kept there);
    the host reads it, which waits for the device, only every `FINITE_CHECK_EVERY` steps and at
    the last batch of each epoch, so a GPU is not held up on every step. The step number goes to the
    device as a fill (`torch.full`), which is queued like any kernel; `torch.tensor(step, device=...)`
    would copy it from pageable host memory and wait.
    """
    bad = ~torch.isfinite(loss.detach())
    step = torch.full((), module.global_step, device=loss.device, dtype=torch.long)
    first = module._first_nonfinite
    if first is None or first[0].device != loss.device:
        first = (torch.full((), -1, device=loss.device, dtype=torch.long), torch.zeros((), device=loss.device))
    unseen = bad & (first[0] < 0)
    first = (torch.where(unseen, step, first[0]), torch.where(unseen, loss.detach().float(), first[1]))
    module._first_nonfinite = first
    trainer = module._trainer
    if module.global_step % FINITE_CHECK_EVERY and not (trainer is not None and trainer.is_last_batch):
        return
    at, value = torch.stack([first[0].float(), first[1]]).tolist()  # one read of both (float32: MPS has no float64)
    if at >= 0:
        at = int(at)
        optimizer = module.hparams.get("optimizer")
        lr = optimizer.get("lr") if isinstance(optimizer, Mapping) else None
        now = f" (now {lr})" if lr is not None else ""
        raise DivergedError(
            f"training loss is {value} at epoch {module.current_epoch}, step {at}: "
            f"the run diverged; lower module.optimizer.lr{now} or check the inputs for NaN/inf values"
        )
