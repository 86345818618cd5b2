"""Stopping a run with SIGTERM or SIGINT (Ctrl+C): within a moment, with a checkpoint to resume from.

Lightning on its own acts on SIGTERM only after the current training batch (a batch of large images
on a CPU can take half a minute), and on Ctrl+C it exits without a checkpoint. Here, while
`stop_on_signals` is active, the first SIGTERM or SIGINT raises `RunInterrupted` at once, in the
middle of a batch if need be; later signals are ignored while the run saves and records. During
`fit`, `SaveOnInterrupt` then writes `checkpoints/last.ckpt` (the weights as they are: a step cut
short is not redone), which `train.py ckpt_path=<run>` resumes; `train` records `interrupted` in
result.json and the entry point exits with status 128 + the signal's number (143 for SIGTERM,
130 for SIGINT), as a shell reports a process a signal stopped. In a run of several processes
(DDP), SIGTERM is left to Lightning (every process stops at the end of the batch) and an
interrupted run saves no checkpoint of its own: the last epoch's `last.ckpt` resumes it.
"""

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunInterrupted(BaseException):
    """A run stopped by a signal; `checkpoint` is where it was saved (None when it was not training yet)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        self.checkpoint: str | None = None
        super().__init__(f"stopped by {self.name}")

    def __str__(self) -> str:
        if not self.checkpoint:
            return f"stopped by {self.name} before training started: nothing to resume"
        run = Path(self.checkpoint).parent.parent  # quoted for Hydra: run names hold "="
        return (
            f"stopped by {self.name}; {self.checkpoint} holds the run so far: resume with 'ckpt_path=\"{run}\"' "
            "(or ckpt_path=last)"
        )


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, the first SIGTERM or SIGINT raises `RunInterrupted`; the handlers are restored after.

    Only the main thread can handle signals: elsewhere (threaded search trials) the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}

    def handle(signum: int, frame) -> None:
        if signum == signal.SIGTERM and _distributed():
            return  # Lightning's own handler stops every process together at the end of the batch
        for other in SIGNALS:  # one stop: a second signal does not cut the saving short
            signal.signal(other, signal.SIG_IGN)
        log.warning("received %s: stopping the run", signal.Signals(signum).name)
        raise RunInterrupted(signum)

    for signum in SIGNALS:
        signal.signal(signum, handle)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class SaveOnInterrupt(Callback):
    """Write `last.ckpt` when `RunInterrupted` stops `fit`, so `ckpt_path=<run>` resumes from there."""

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, RunInterrupted) or trainer.state.fn != TrainerFn.FITTING:
            return
        if trainer.world_size > 1:  # the other processes may not reach the save: the epoch's last.ckpt resumes
            last = self.dirpath / "last.ckpt"
            exception.checkpoint = str(last) if last.is_file() else None
            log.warning("a multi-process run saves no checkpoint when interrupted: resume from its last epoch's")
            return
        path = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(path)  # atomic: a temporary file renamed when complete
        exception.checkpoint = str(path)
        log.warning("saved %s at epoch %d, step %d", path, trainer.current_epoch, trainer.global_step)


def _distributed() -> bool:
    """Whether this process is one of several of a distributed run."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
