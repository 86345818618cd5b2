"""Data modules whose splits are tensors held in memory."""

import hashlib
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset, random_split

from dltemplate.data.batches import DeviceBatches, Rows, fits_device, rows_of
from dltemplate.data.inferred import InfersSettings
from dltemplate.data.protocols import HasClasses
from dltemplate.errors import ConfigError, DataError
from dltemplate.files import locked

if TYPE_CHECKING:
    from dltemplate.selection import Split

MEMORY_SHARE = 0.25  # default memory budget of storage "auto": this share of the machine's RAM


def memory_fits(size_bytes: int, budget_gb: float | None, what: str) -> tuple[bool, str]:
    """Whether data of `size_bytes` fits the memory budget of `storage: auto`, and why, in GB (10^9 bytes).

    The one rule for every data module with a streamed path. `budget_gb` None: a quarter of this
    machine's RAM (not recorded as a setting: it is the machine's, not the data's).
    """
    if budget_gb is not None:
        budget, named = float(budget_gb), "data.memory_budget_gb"
    else:
        import psutil

        ram = psutil.virtual_memory().total / 1e9
        budget, named = ram * MEMORY_SHARE, f"a quarter of this machine's {ram:.0f} GB; data.memory_budget_gb"
    fits = size_bytes <= budget * 1e9
    where = "within" if fits else "over"
    return fits, f"{what} take {size_bytes / 1e9:.2f} GB, {where} the memory budget {budget:.1f} GB ({named})"


def require_split(sizes: Mapping[str, int], source: object, unit: str, setting: str, note: str = "") -> None:
    """Refuse a split that leaves a part empty, naming the data, its size and the fraction that did it.

    Args:
        sizes: Size of each part, e.g. {"training": 3, "validation": 0}.
        source: The file or folder split.
        unit: What is counted ("rows", "images", "texts").
        setting: The fraction as configured, e.g. "data.val_fraction=0.2".
        note: Said after the count, e.g. " (after the test split)".
    """
    empty = [part for part, size in sizes.items() if size == 0]
    if empty:
        raise DataError(
            f"{source}: {sum(sizes.values())} {unit}{note} with {setting} leave the {' and '.join(empty)} split "
            f"empty; add {unit}, or change {setting.split('=')[0]}"
        )


def shuffled_classes(labels: Sequence[Any] | None, size: int, seed: int) -> list[Tensor]:
    """The positions of each class's rows (classes in sorted order; one group when `labels` is None,
    e.g. regression), each shuffled with one generator seeded by `seed`.

    The one stratified shuffle: `stratified_holdout` holds out a fraction of each group, and
    cross-validation (`dltemplate.selection.stratified_folds`) deals the groups into folds.
    """
    generator = torch.Generator().manual_seed(seed)
    if labels is None:
        groups = [torch.arange(size)]
    else:
        values = list(labels)
        groups = [
            torch.tensor([i for i, v in enumerate(values) if v == label], dtype=torch.long)
            for label in sorted(set(values))
        ]
    return [g[torch.randperm(len(g), generator=generator)] for g in groups]


def stratified_holdout(labels: Sequence[Any] | None, size: int, seed: int, fraction: float) -> Tensor:
    """Boolean mask (size,) of the held-out rows: the first round(n * fraction) of each class's
    shuffled rows (`shuffled_classes`). The one stratified splitter of the data modules."""
    mask = torch.zeros(size, dtype=torch.bool)
    for members in shuffled_classes(labels, size, seed):
        mask[members[: round(len(members) * fraction)]] = True
    return mask


def whole_batch(batch):
    """Collate for datasets whose `__getitems__` already returns a whole batch of tensors."""
    return batch


class TensorDataModule(InfersSettings, LightningDataModule, HasClasses):
    """Serves in-memory train/val/test datasets; subclasses build them in `make_datasets` (or `setup`).

    Settings left null that the data decides are filled in while setting up with `infer`
    (`dltemplate.data.inferred`): an explicit setting always wins.

    Args:
        batch_size: Samples per batch, for every split.
        num_workers: DataLoader worker processes; 0 is fastest for tensors already in memory.
        split_seed: Seed of the train/val/test split, independent of the training seed.
        on_device: Keep the in-memory splits on the training device and draw batches there (see
            `dltemplate.data.batches`); null: when they fit `DEVICE_SHARE` of its memory (always on
            a CPU); false: a DataLoader, pinned memory and asynchronous copies on a GPU.
    """

    collate_fn = None  # None: PyTorch's default; `whole_batch` for datasets that serve whole batches
    # the classes the targets are codes of (`dltemplate.data.protocols.HasClasses`); None: no classes
    class_names: Sequence[str] | None = None
    # what the run trains on ("cpu" or an accelerator's name), set before setup by `build.build_datamodule`
    # for settings that depend on the hardware (an image size); None: unknown
    training_device: str | None = None
    # False for a data module restored from a checkpoint: it predicts or tests from the files as they
    # are, and never fetches what a checkpoint names (see dltemplate.checkpoint)
    fetches_data = True

    def __init__(
        self,
        batch_size: int = 32,
        num_workers: int = 0,
        split_seed: int = 0,
        on_device: bool | None = None,
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.split_seed = split_seed
        self.val_positions: Tensor | None = None  # positions of the validation rows among the training rows
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.predict_set: Dataset | None = None
        self.on_device = on_device
        self._moved: dict[int, tuple[Dataset, Rows]] = {}  # split → its rows on the training device

    def prepare_data(self) -> None:
        """Lightning's once-per-node step: fetch missing data (`fetch_data`) unless restored from a checkpoint.

        Launchers that start every rank themselves (torchrun, SLURM) run it in every process, before
        any process group exists: a per-node lock lets the first fetch while the others wait, then
        find the files in place.
        """
        if not self.fetches_data:
            return
        settings = repr(sorted((str(k), repr(v)) for k, v in self.hparams.items()))
        key = hashlib.sha1(f"{type(self).__qualname__}|{settings}".encode()).hexdigest()[:16]
        with locked(Path(tempfile.gettempdir()) / f"{__package__.split('.')[0]}-fetch-{key}"):
            self.fetch_data()

    def fetch_data(self) -> None:
        """Download or copy whatever the data needs that is not on disk yet; nothing by default."""

    def make_datasets(self) -> tuple[Dataset, Dataset, Dataset]:
        """Return the train, validation and test datasets."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        if self.train_set is None:  # idempotent: the entry point and the Trainer both call it
            self.train_set, self.val_set, self.test_set = self.make_datasets()

    def split(self, dataset: TensorDataset, val_fraction: float) -> tuple[TensorDataset, TensorDataset]:
        """Randomly split `dataset` into train and validation parts, reproducibly (tensors of each part's rows)."""
        if not 0 < val_fraction < 1:
            raise ConfigError(f"data.val_fraction must be between 0 and 1, got {val_fraction}")
        generator = torch.Generator().manual_seed(self.split_seed)
        parts = random_split(dataset, [1 - val_fraction, val_fraction], generator=generator)
        return tuple(TensorDataset(*(t[part.indices] for t in dataset.tensors)) for part in parts)

    @property
    def example_input_array(self) -> Tensor:
        """Two training inputs, for the model graph and the layer summary."""
        return self.train_set[:2][0]

    def _device(self) -> torch.device:
        """The device the Trainer trains on (the CPU without a Trainer)."""
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def _resident(self, device: torch.device) -> bool:
        """Whether the in-memory splits live on `device`: `on_device`, or (null) when they all fit its budget."""
        if self.on_device is not None:
            return bool(self.on_device)
        splits = [rows_of(s) for s in (self.train_set, self.val_set, self.test_set)]
        return fits_device(sum(rows.nbytes for rows in splits if rows is not None), device)

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader | DeviceBatches:
        """Batches of `dataset`: drawn on the training device when its rows live there, else a DataLoader.

        Under DDP, evaluation (not `shuffle`) sees each sample on exactly one rank: Lightning's default
        DistributedSampler pads uneven splits with repeated samples, which would count them twice in
        validation and test metrics; `UnrepeatedDistributedSampler` (and `DeviceBatches`) give ranks
        shards that differ by at most one sample instead (safe without gradients).
        """
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before asking for a dataloader")
        device, rows = self._device(), rows_of(dataset)
        if rows is not None and self._resident(device):
            return self._device_batches(dataset, rows, device, shuffle)
        sampler = None
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if not shuffle and distributed and torch.distributed.get_world_size() > 1:
            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=device.type == "cuda",  # page-locked batches copy to the GPU without waiting
            collate_fn=self.collate_fn,
        )

    def _device_batches(self, dataset: Dataset, rows: Rows, device: torch.device, shuffle: bool) -> DeviceBatches:
        """`DeviceBatches` of `dataset`'s rows, moved to `device` once (kept for the next loader of that split)."""
        moved = self._moved.get(id(dataset))
        if moved is None or moved[0] is not dataset or moved[1].device != device:
            moved = self._moved[id(dataset)] = (dataset, rows.to(device))
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        seed = torch.initial_seed() % 2**62  # the run's seed (seed_everything): the same in every process
        if trainer is not None and world > 1:
            seed = trainer.strategy.broadcast(seed)  # unseeded runs too: one permutation for every rank
        epoch = (lambda: trainer.current_epoch) if trainer is not None else (lambda: 0)
        return DeviceBatches(moved[1], self.batch_size, shuffle, seed, epoch, rank, world)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_set, shuffle=False)

    @property
    def dims(self) -> dict[str, Any]:
        raise NotImplementedError

    # what the targets ask of a module: "classification", "regression" or "forecasting", checked against
    # the module's when the run is built; None (a data module that does not say) is not checked
    target_kind: str | None = None


class HeldOutRows:
    """Mixin of data modules that validate on rows held out of their training rows (tables, images, texts).

    `validation_mask` picks those rows: `data.val_fraction` of each class, or, once `use_split` has
    given the data module a `dltemplate.selection.Split` (a cross-validation fold, `cv.py`), the
    rows the split names. Put it first among the bases: `class MyData(HeldOutRows, TensorDataModule)`.
    """

    given_split: "Split | None" = None  # set by `use_split`, before `setup`

    def use_split(self, split: "Split") -> None:
        """Validate on the rows `split` names instead of `data.val_fraction` of them; call before `setup`."""
        if self.train_set is not None:
            raise RuntimeError(f"{type(self).__name__}.use_split() must come before setup()")
        self.given_split = split

    def validation_mask(self, labels: Sequence[Any] | None, size: int, val_fraction: float) -> Tensor:
        """Which of `size` training rows validate: the given split's, else `val_fraction` of each class.

        Stratified by `labels` (None: not stratified). Records their positions in `val_positions`
        (out-of-fold predictions name rows by them).
        """
        if self.given_split is not None:
            mask = self.given_split.validation_mask(labels, size)
        elif not 0 < val_fraction < 1:
            raise ConfigError(f"data.val_fraction must be between 0 and 1, got {val_fraction}")
        else:
            mask = stratified_holdout(labels, size, self.split_seed, fraction=val_fraction)
        self.val_positions = mask.nonzero().squeeze(1)
        return mask
