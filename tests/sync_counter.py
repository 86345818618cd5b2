"""Count the calls that make the host wait for the device during training steps, on any machine.

On a GPU each of these calls blocks the Python thread until the device has caught up (a copy to the
host, a data-dependent shape, a host value built from a device tensor, or a copy from pageable host
memory), which leaves the GPU idle while the host prepares the next step. CUDA can report them
(`torch.cuda.set_sync_debug_mode`), but only where there is a GPU; this counter sees the same calls
on a CPU through a `TorchFunctionMode`, so a test guards the GPU path on machines without one.

What counts (see `SYNCING`): reading a tensor's value on the host (`item`, `tolist`, `bool`, `float`,
`int`, `numpy`, `cpu`), ops whose output size depends on values (`nonzero`, `unique`,
`masked_select`, indexing with a boolean mask, one-argument `where`, `repeat_interleave` without an
output size, `coalesce`) and `torch.tensor(..., device=...)` (a copy from pageable memory). Calls from
`torch.optim` are left out: optimizers keep their step counters on the host unless `capturable`.

Only whole training steps count: from one training batch's start to the next one's, when no epoch
boundary, validation or checkpoint lies between them (the epoch-end work may sync once per epoch).
"""

from __future__ import annotations

import traceback
from collections import Counter
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from torch.overrides import TorchFunctionMode

READS = {
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.__bool__,
    torch.Tensor.__float__,
    torch.Tensor.__int__,
    torch.Tensor.__index__,
    torch.Tensor.numpy,
    torch.Tensor.cpu,
}
DATA_DEPENDENT = {
    torch.nonzero,
    torch.Tensor.nonzero,
    torch.unique,
    torch.Tensor.unique,
    torch.unique_consecutive,
    torch.masked_select,
    torch.Tensor.masked_select,
    torch.argwhere,
    torch.equal,
    torch.allclose,
    torch.Tensor.allclose,
    torch.Tensor.coalesce,  # a sparse gradient's rows summed: as many as distinct indices
    torch.isin,  # not syncing by itself, but it is how unique-like checks start; kept visible
}
SKIPPED_FRAMES = ("torch/optim/",)
OWN_ROOTS = ("dltemplate/", "lightning/", "torchmetrics/", "tests/")


def _syncs(func, args, kwargs) -> bool:
    if func in READS:
        return True
    if func in DATA_DEPENDENT:
        return func is not torch.isin
    if func is torch.where and len(args) == 1 and not kwargs:
        return True
    if func in (torch.repeat_interleave, torch.Tensor.repeat_interleave):
        return kwargs.get("output_size") is None and len(args) > 1 and isinstance(args[1], torch.Tensor)
    if func is torch.Tensor.__getitem__:
        index = args[1] if len(args) > 1 else None
        indices = index if isinstance(index, tuple) else (index,)
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)
    if func is torch.Tensor.__setitem__:
        index = args[1] if len(args) > 1 else None
        indices = index if isinstance(index, tuple) else (index,)
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool and i.dim() > 0 for i in indices)
    if func is torch.tensor:
        return kwargs.get("device") is not None
    return False


class _Counting(TorchFunctionMode):
    def __init__(self, counter: SyncCounter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.counter.active and _syncs(func, args, kwargs):
            self.counter.record(func)
        return func(*args, **kwargs)


class SyncCounter(Callback):
    """A callback that counts host-synchronising calls per training step, by call site.

    Args:
        first: First training step (global batch index) whose interval counts.
        last: Counting stops at this step's start.
        chains: How many calling frames to name beside each call site (0: the site alone).
    """

    def __init__(self, first: int = 20, last: int = 60, chains: int = 0) -> None:
        self.first, self.last, self.chains = first, last, chains
        self.active = False
        self.pending: Counter[str] = Counter()  # calls since the last batch start
        self.sites: Counter[str] = Counter()  # calls in the clean intervals counted so far
        self.steps = 0  # clean intervals counted
        self.clean = False  # no epoch boundary, validation or checkpoint since the last batch start
        self.batches = 0
        self._mode: _Counting | None = None

    # ---- what is recorded ----------------------------------------------------------------------

    def record(self, func) -> None:
        stack = traceback.extract_stack()[:-2]
        # the innermost frame of an optimizer or of the code counted decides: a training step runs
        # inside `optimizer.step(closure)`, so an optimizer frame further out does not exempt it
        site = next((f for f in reversed(stack) if _is(f, SKIPPED_FRAMES + OWN_ROOTS)), None)
        if site is not None and _is(site, SKIPPED_FRAMES):
            return
        where = "?" if site is None else f"{_short(site.filename)}:{site.lineno}"
        if self.chains:  # the callers too, to find which code path asks
            own = [f for f in stack if _is(f, OWN_ROOTS)][-self.chains - 1 : -1]
            where += "".join(f" < {_short(f.filename)}:{f.lineno}" for f in reversed(own))
        self.pending[f"{getattr(func, '__name__', func)} @ {where}"] += 1

    @property
    def per_step(self) -> float:
        return sum(self.sites.values()) / max(self.steps, 1)

    def report(self) -> str:
        lines = [f"{self.per_step:.2f} host syncs per training step over {self.steps} steps"]
        lines += [f"  {count / max(self.steps, 1):6.2f}  {site}" for site, count in self.sites.most_common()]
        return "\n".join(lines)

    # ---- when ----------------------------------------------------------------------------------

    def on_train_start(self, trainer, pl_module) -> None:
        self._mode = _Counting(self)
        self._mode.__enter__()

    def on_train_end(self, trainer, pl_module) -> None:
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None
        self.active = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.active and self.clean:
            self.sites.update(self.pending)
            self.steps += 1
        self.pending.clear()
        step = self.batches
        self.batches += 1
        self.active = self.first <= step < self.last
        self.clean = True

    def _boundary(self, *args, **kwargs) -> None:
        self.clean = False

    on_train_epoch_end = on_train_epoch_start = on_validation_start = on_validation_end = _boundary
    on_save_checkpoint = _boundary


def _is(frame: traceback.FrameSummary, markers: tuple[str, ...]) -> bool:
    return any(marker in frame.filename.replace("\\", "/") for marker in markers)


def _short(filename: str) -> str:
    path = Path(filename).as_posix()
    for root in ("site-packages/", "src/"):
        if root in path:
            return path.split(root, 1)[1]
    return path.rsplit("/", 2)[-2] + "/" + path.rsplit("/", 1)[-1] if "/" in path else path
