"""Batches drawn from tensors that live on the training device: no per-step copy, no per-sample collation.

A `DataLoader` over in-memory tensors gathers every batch sample by sample on the host and copies it
to the accelerator on every step; from pageable memory that copy makes the host wait. Data that
fits the device's memory budget is instead moved there once (`Rows.to`), and each batch is one
indexing operation with an index tensor that is on the device as well: shuffling is a `randperm`
there, so nothing in a step waits for the device. The same path serves the CPU (the "device" is
then the host), where it also saves the per-sample collation.

Under DDP every process draws the same permutation (seeded by the run's seed and the epoch) and
takes every world-size-th sample: training shards are padded to equal length as PyTorch's
`DistributedSampler` pads them, evaluation shards are not padded (each sample counted once, as
`UnrepeatedDistributedSampler` does).
"""

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

DEVICE_SHARE = 0.25  # the share of an accelerator's memory the data may take to be moved there


@runtime_checkable
class Rows(Protocol):
    """A dataset held as rows of in-memory tensors, so that a whole batch is one indexing operation."""

    def __len__(self) -> int: ...

    @property
    def nbytes(self) -> int:
        """Bytes the rows take (what moving them to a device costs there)."""
        ...

    @property
    def device(self) -> torch.device:
        """Where the rows are."""
        ...

    def to(self, device: torch.device) -> "Rows":
        """The same rows on `device`."""
        ...

    def gather(self, index: Tensor) -> tuple[Tensor, ...]:
        """The batch of rows `index` (a long tensor on the rows' device), as the training step takes it."""
        ...


class TensorRows:
    """`Rows` over equal-length tensors (a `TensorDataset`'s): row i is (t[i] for each tensor)."""

    def __init__(self, tensors: Sequence[Tensor]) -> None:
        self.tensors = tuple(tensors)

    def __len__(self) -> int:
        return len(self.tensors[0])

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def device(self) -> torch.device:
        return self.tensors[0].device

    def to(self, device: torch.device) -> "TensorRows":
        return TensorRows([t.to(device) for t in self.tensors])

    def gather(self, index: Tensor) -> tuple[Tensor, ...]:
        return tuple(t[index] for t in self.tensors)


def rows_of(dataset: Dataset | None) -> Rows | None:
    """`dataset` as `Rows` when its samples are in-memory tensor rows; None for anything else (files, chunks)."""
    if isinstance(dataset, Rows):
        return dataset
    if isinstance(dataset, TensorDataset):
        return TensorRows(dataset.tensors)
    return None


def fits_device(nbytes: int, device: torch.device) -> bool:
    """Whether data of `nbytes` may live on `device`: always on the CPU (it is there already), within
    `DEVICE_SHARE` of an accelerator's memory (the rest is the net's, its activations' and optimizer's)."""
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        return nbytes <= DEVICE_SHARE * torch.cuda.get_device_properties(device).total_memory
    if device.type == "mps":
        return nbytes <= DEVICE_SHARE * torch.mps.recommended_max_memory()
    return False


class DeviceBatches:
    """An iterable of batches gathered from `rows` on their device, shuffled on the device when `shuffle`.

    Args:
        rows: The split, already on the training device.
        batch_size: Samples per batch; the last batch may be smaller.
        shuffle: A new permutation every epoch (training); else the rows in order.
        seed: Base seed of the permutations (the same in every process).
        epoch: Returns the current epoch (the Trainer's, so a resumed run continues the sequence).
        rank: This process's index among `world_size` processes.
        world_size: Processes sharing the split.
    """

    def __init__(
        self,
        rows: Rows,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.rows, self.batch_size, self.shuffle = rows, batch_size, shuffle
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size
        self.device = rows.device

    def _shard_size(self) -> int:
        n = len(self.rows)
        if self.shuffle:  # padded to equal shards: every process runs the same number of steps
            return math.ceil(n / self.world_size)
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        return math.ceil(self._shard_size() / self.batch_size)

    def order(self) -> Tensor:
        """This process's row indices for the epoch, on the rows' device."""
        n = len(self.rows)
        if not self.shuffle:
            return torch.arange(self.rank, n, self.world_size, device=self.device)
        generator = torch.Generator(device=self.device).manual_seed(self.seed + self.epoch())
        order = torch.randperm(n, device=self.device, generator=generator)
        padded = self._shard_size() * self.world_size
        if padded > n:
            order = torch.cat([order, order[: padded - n]])
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        order = self.order()
        for start in range(0, len(order), self.batch_size):
            yield self.rows.gather(order[start : start + self.batch_size])
