"""Images from a folder tree or torchvision's CIFAR-10 / MNIST / Fashion-MNIST, held as uint8 tensors."""

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.transforms.v2 import functional as TF

from dltemplate.data.predictions import class_table
from dltemplate.data.protocols import PredictsInputs
from dltemplate.data.targets import balanced_class_weights
from dltemplate.data.tensors import HeldOutRows, TensorDataModule, memory_fits, require_split, whole_batch
from dltemplate.errors import ConfigError, DataError, MissingFileError
from dltemplate.files import files_key
from dltemplate.image.data.augment import random_crop_and_flip
from dltemplate.image.data.image_chunks import ChunkedImages, streaming_loader, write_chunks
from dltemplate.image.data.image_files import (
    CACHE_FORMAT,
    IMAGE_EXTENSIONS,
    cached_decode,
    cached_headers,
    channel_statistics,
    decode_files,
    list_image_folder,
)

TORCHVISION_SOURCES = {"cifar10": datasets.CIFAR10, "mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}
MAX_INFERRED_SIZE = 224  # an inferred image size is capped here (ImageNet nets' input): data.image_size overrides
MAX_INFERRED_SIZE_CPU = 64  # ... and here when training on a CPU, where 224 px costs ~12× the compute of 64 px
TEST_FOLDERS = ("test", "val", "valid", "validation")  # the held-out folder's usual names, in the order looked for


class ImageTensors(Dataset):
    """uint8 images (N, C, H, W) and labels (N,); `__getitems__` (and `gather`, as `Rows`) serves a whole
    batch in one index. Kept as uint8 wherever they live: 4× less memory than floats, and converted,
    augmented and normalised a batch at a time on the device (`ImageDataModule.on_after_batch_transfer`)."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        return self.images[indices], self.labels[indices]

    @property
    def nbytes(self) -> int:
        return self.images.nbytes + self.labels.nbytes

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device) -> "ImageTensors":
        return ImageTensors(self.images.to(device), self.labels.to(device))

    def gather(self, index: Tensor) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]


class ImageDataModule(HeldOutRows, TensorDataModule, PredictsInputs):
    """Image classification data, decoded once into uint8 tensors in memory or into chunks on disk.

    Sources: "folder" reads `<root>/{train,test}/<class>/*.jpg|png|...` (class names from the
    folders; the held-out folder may also be named `val/`, `valid/` or `validation/`, or anything
    given as `test_folder`); "cifar10", "mnist" and "fashion_mnist" use torchvision's datasets, downloaded into
    `root` when missing. `classes` picks a subset (cifar2 = airplane, automobile) in that order.

    Storage: "memory" holds the decoded images as one uint8 tensor per split; "stream" decodes a
    folder once into LitData chunks under `cache_dir` and streams the training split from them
    (validation and test are read from their chunks exactly, every image once); "auto" takes
    memory when the decoded images fit `memory_budget_gb`, else stream, and says which in the
    table of inferred settings. Both paths give the same splits, statistics and batches.

    Settings left null are worked out from the training files and shown in that table: channels
    (1 when every file is grayscale), image size (when the files differ in size: the median longer
    side, at most 224, or 64 when `training_device` is "cpu"; a pretrained net's `input_size` when
    set), crop padding (1/8 of the side) and horizontal flip (off for 1-channel images such as
    digits and documents, whose mirror image is another glyph or none).

    Batches are moved to the training device as uint8 and only there converted to floats,
    augmented (random crop with padding, horizontal flip, drawn per image), resized to
    `input_size` when set, and normalised with the training split's channel statistics, or with
    `mean` and `std` when given (a pretrained net's: `net=timm net.pretrained=true` fills in its
    own input size, mean and std). Statistics, class names and sizes are saved in checkpoints.

    Args:
        root: Folder of the images (or of the torchvision dataset files).
        source: "folder", "cifar10", "mnist" or "fashion_mnist".
        test_folder: The folder under `root` whose images are the test split; None: the first of
            `TEST_FOLDERS` that exists (recorded in the inferred table). Validation images are always
            `val_fraction` of `train/`.
        classes: Class names to use, in order; None means all.
        image_size: Resize images to image_size × image_size; None: keep them when they share one
            size, else inferred.
        channels: 3 (RGB) or 1 (grayscale); images are converted to it. None: from the files.
        val_fraction: Share of the training images held out for validation (stratified).
        crop_padding: Random-crop augmentation padding in pixels; 0 disables it. None: size / 8.
        horizontal_flip: Random horizontal-flip augmentation. None: on for colour images only.
        skip_corrupt: Skip (and count) images that cannot be decoded instead of stopping.
        cache_dir: Where decoded folders are cached (and chunks written); None decodes every run
            and keeps everything in memory.
        download: Download torchvision datasets when missing.
        storage: "auto", "memory" or "stream" (folders only), see above.
        memory_budget_gb: What "auto" lets the decoded images take; None: a quarter of the RAM.
        batch_size: Images per batch.
        input_size: Resize each batch to input_size × input_size on the device, after augmentation
            (e.g. 224 for an ImageNet backbone fed 32×32 images); None keeps the images' size.
        mean, std: Per-channel normalisation (a pretrained net's); None: the training split's statistics.
            Three values for a 1-channel image are averaged.
        num_workers: DataLoader workers; 0 is fastest for in-memory tensors.
        on_device: see `TensorDataModule`.
        split_seed: Seed of the validation split (and of the streamed shuffle).
    """

    collate_fn = staticmethod(whole_batch)  # __getitems__ serves whole batches
    input_kind = "images"  # what a serve request holds (`dltemplate.data.protocols.PredictsInputs`)

    def __init__(
        self,
        root: str,
        source: Literal["folder", "cifar10", "mnist", "fashion_mnist"] = "folder",
        test_folder: str | None = None,
        classes: Sequence[str] | None = None,
        image_size: int | None = None,
        channels: Literal[1, 3] | None = None,
        val_fraction: float = 0.1,
        crop_padding: int | None = None,
        horizontal_flip: bool | None = None,
        skip_corrupt: bool = False,
        cache_dir: str | None = None,
        download: bool = True,
        storage: Literal["auto", "memory", "stream"] | None = "auto",
        memory_budget_gb: float | None = None,
        batch_size: int = 128,
        input_size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        num_workers: int = 0,
        on_device: bool | None = None,
        split_seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, split_seed, on_device=on_device)
        if source != "folder" and source not in TORCHVISION_SOURCES:
            raise ConfigError(f"data.source must be 'folder' or one of {sorted(TORCHVISION_SOURCES)}, got {source!r}")
        if channels not in (1, 3, None):
            raise ConfigError(f"data.channels must be 1, 3 or null (from the files), got {channels}")
        if storage not in ("auto", "memory", "stream", None):
            raise ConfigError(f"data.storage must be auto, memory or stream, got {storage!r}")
        if storage == "stream" and source != "folder":
            raise ConfigError(
                f"data.storage=stream streams image folders; torchvision holds {source} in memory itself: "
                "use data.storage=memory (or auto)"
            )
        if storage == "stream" and cache_dir is None:
            raise ConfigError("data.storage=stream writes its chunks into data.cache_dir: set it (or storage=memory)")
        if (mean is None) != (std is None):
            raise ConfigError("data.mean and data.std are given together (or both null: the training statistics)")
        self.save_hyperparameters(logger=False)
        if storage == "auto":
            self.hparams.storage = None  # decided in setup, recorded with `infer`
        self.classes: list[str] | None = None
        self.mean: list[float] | None = None
        self._affine_cache: tuple[tuple, Tensor, Tensor] | None = None  # normalisation on the last device used
        self.std: list[float] | None = None
        self.size: list[int] | None = None  # (H, W) of the training images
        self.input_size: int | None = input_size  # what the net is fed, when it differs from `size`
        self.predict_input: str | Sequence[str] | None = None  # set by `use_predict_input`
        self.predict_files: list[Path] = []
        self.streamed: Path | None = None  # the training split's chunk folder when streaming

    def augment(self, images: Tensor) -> Tensor:
        """Random crop with padding and horizontal flip of a uint8 (B, C, H, W) batch, drawn per image."""
        return random_crop_and_flip(images, self.hparams.crop_padding or 0, bool(self.hparams.horizontal_flip))

    # ---- reading -------------------------------------------------------------------------------

    def fetch_data(self) -> None:
        if self.hparams.source != "folder":
            for train in (True, False):
                self._torchvision(train)  # downloads once, before any process reads

    def _torchvision(self, train: bool):
        hp = self.hparams
        try:
            return TORCHVISION_SOURCES[hp.source](hp.root, train=train, download=hp.download)
        except (RuntimeError, OSError) as error:
            raise MissingFileError(
                f"{hp.source} not found under {hp.root} and not downloadable ({error}); "
                f"put torchvision's {hp.source} files there, or set DATA_DIR to a folder that has them"
            ) from None

    def _read_torchvision(self, split: str) -> tuple[Tensor, Tensor, list[str]]:
        """(uint8 images (N, C, H, W) as stored, labels (N,), class names) of the "train" or "test" split."""
        hp = self.hparams
        data = self._torchvision(split == "train")
        images = torch.as_tensor(data.data)
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)  # (N, C, H, W)
        labels, names = torch.as_tensor(data.targets), list(data.classes)
        if hp.classes is not None:
            unknown = [c for c in hp.classes if c not in names]
            if unknown:
                raise ConfigError(f"{hp.source} has no class(es) {unknown}; its classes are {names}: fix data.classes")
            wanted = torch.tensor([names.index(c) for c in hp.classes])
            keep = torch.isin(labels, wanted)
            images, labels = images[keep], (labels[keep][:, None] == wanted).int().argmax(dim=1)
            names = list(hp.classes)
        return images, labels, names

    def _convert(self, images: Tensor) -> Tensor:
        """Match the configured channels and size."""
        hp = self.hparams
        if images.shape[1] != hp.channels:
            images = images.expand(-1, 3, -1, -1) if hp.channels == 3 else TF.rgb_to_grayscale(images)
        if hp.image_size is not None and images.shape[-2:] != (hp.image_size, hp.image_size):
            images = TF.resize(images, [hp.image_size, hp.image_size], antialias=True)
        return images.contiguous()

    # ---- settings from the data ----------------------------------------------------------------

    def _infer_channels(self, channels: Tensor, where: str) -> None:
        """`channels` (N,): each training file's channel count from its header (0: unreadable)."""
        readable = channels[channels > 0]
        if len(readable) and bool((readable == 1).all()):
            self.infer("channels", 1, f"every training image in {where} is 1-channel (grayscale)")
        else:
            colour = int((readable == 3).sum())
            self.infer("channels", 3, f"{colour} of {len(readable)} training images in {where} are colour")

    def _infer_image_size(self, sizes: Tensor, test_sizes: Tensor) -> None:
        """`sizes`, `test_sizes` (N, 2): (H, W) of each file. Nothing is inferred when all share one size."""
        every = torch.cat([sizes, test_sizes])
        every = every[every.min(dim=1).values > 0]
        distinct = sorted({tuple(s) for s in every.tolist()})
        sides = sizes[sizes.min(dim=1).values > 0].max(dim=1).values.tolist()
        if len(distinct) <= 1 or not sides:
            return
        side = int(statistics.median(sides))
        found = f"images have {len(distinct)} sizes, {_hw(distinct[0])} to {_hw(distinct[-1])}"
        if self.input_size:  # a pretrained net's own size (net=timm net.pretrained=true sets data.input_size)
            reason = f"{found}; resized once to the net's input size (data.input_size={self.input_size})"
            self.infer("image_size", int(self.input_size), reason)
            return
        on_cpu = self.training_device == "cpu"  # None (unknown): capped as for an accelerator
        cap = MAX_INFERRED_SIZE_CPU if on_cpu else MAX_INFERRED_SIZE
        capped = min(side, cap)
        reason = f"{found}; the training images' median longer side is {side}"
        if capped < side and on_cpu:
            pixels = (side / capped) ** 2
            reason += (
                f", capped at {cap} for training on a CPU (an epoch at {side} px costs ~{pixels:.0f}× as much); "
                "set data.image_size, or train on a GPU (trainer=gpu) for up to 224"
            )
        elif capped < side:
            reason += f", capped at {cap}"
        self.infer("image_size", capped, reason)

    def _infer_augmentation(self, side: int) -> None:
        """Crop padding and flip from the image side and channels (after those are settled)."""
        self.infer("crop_padding", max(1, round(side / 8)), f"1/8 of the {side}-pixel image side (4 for 32×32)")
        if self.hparams.channels == 1:
            self.infer("horizontal_flip", False, "1-channel images (digits, documents): a mirrored glyph is another")
        else:
            self.infer("horizontal_flip", True, "colour images: a mirrored photo shows the same class")

    def _choose_storage(self, decoded_bytes: int, files: int) -> str:
        """Memory when the decoded images fit the budget (or cannot be streamed), else stream."""
        hp = self.hparams
        if hp.source != "folder":
            return self.infer("storage", "memory", f"torchvision holds {hp.source} in memory itself")
        fits, reason = memory_fits(decoded_bytes, hp.memory_budget_gb, f"{files} decoded images")
        if fits:
            return self.infer("storage", "memory", reason)
        if hp.cache_dir is None:
            return self.infer("storage", "memory", f"{reason}, but data.cache_dir is null")
        return self.infer("storage", "stream", f"{reason}: LitData chunks")

    # ---- Lightning hooks -----------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        if stage == "predict":
            self._setup_predict()
            return
        if self.train_set is not None or (self.test_set is not None and stage == "test"):
            return
        if stage == "test" and self._scores_another_folder():
            self._setup_test_folder()
        elif self.hparams.source == "folder":
            self._setup_folder()
        else:
            self._setup_torchvision()

    def _check_classes(self, names: list[str], test_names: list[str]) -> None:
        hp = self.hparams
        if len(names) < 2:
            where = Path(hp.root) / "train" if hp.source == "folder" else f"{hp.source} with data.classes={names}"
            raise DataError(
                f"{where} has a single class {names}: classification needs at least two classes; "
                "add a folder for each class"
            )
        if test_names != names:
            raise DataError(
                f"train and test splits of {hp.root} have different classes: {names} vs {test_names}; "
                "give both the same class folders, or set data.classes"
            )
        if self.classes is not None and names != self.classes:
            raise DataError(f"the classes {names} of {hp.root} are not the checkpoint's {self.classes}")

    def _split(self, labels: list[int], where: object) -> Tensor:
        hp = self.hparams
        val_mask = self.validation_mask(labels, len(labels), hp.val_fraction)
        sizes = {"training": int((~val_mask).sum()), "validation": int(val_mask.sum())}
        require_split(sizes, where, "training images", f"data.val_fraction={hp.val_fraction}")
        return val_mask

    def _fit_statistics(self, names: list[str], shape: Sequence[int], statistics_of) -> None:
        """Classes, size and normalisation from the training split, unless restored from a checkpoint."""
        hp = self.hparams
        if self.mean is not None:
            return
        self.classes, self.size = names, list(shape[-2:])
        if hp.mean is not None:
            self.mean, self.std = _per_channel(hp.mean, hp.channels), _per_channel(hp.std, hp.channels)
        else:
            self.mean, self.std = statistics_of()

    def _setup_torchvision(self) -> None:
        hp = self.hparams
        images, labels, names = self._read_torchvision("train")
        test_images, test_labels, test_names = self._read_torchvision("test")
        self._check_classes(names, test_names)
        where = f"{hp.source} under {hp.root}"
        self._infer_channels(torch.full((len(images),), images.shape[1]), where)
        side = hp.image_size or min(images.shape[-2:])
        self._infer_augmentation(side)
        self._choose_storage(images[0].numel() * (len(images) + len(test_images)), len(images) + len(test_images))
        images, test_images = self._convert(images), self._convert(test_images)
        val_mask = self._split(labels.tolist(), where)
        train_images = images[~val_mask]
        self._fit_statistics(names, images.shape, lambda: channel_statistics(train_images.split(256)))
        self.train_set = ImageTensors(train_images, labels[~val_mask])
        self.val_set = ImageTensors(images[val_mask], labels[val_mask])
        self.test_set = ImageTensors(test_images, test_labels)

    def _setup_folder(self) -> None:
        hp = self.hparams
        root = Path(hp.root)
        files, labels, names = list_image_folder(root / "train", self.classes or hp.classes)
        test_dir = self._test_folder(root)
        test_files, test_labels, test_names = list_image_folder(test_dir, self.classes or hp.classes)
        self._check_classes(names, test_names)
        cache = Path(hp.cache_dir) if hp.cache_dir else None
        headers, test_headers = cached_headers(files, cache), cached_headers(test_files, cache)
        self._infer_channels(headers[:, 0], str(root / "train"))
        self._infer_image_size(headers[:, 1:], test_headers[:, 1:])
        every = torch.cat([headers, test_headers])[:, 1:]
        readable = every[every.min(dim=1).values > 0]  # (0, 0): a header that could not be read
        largest = readable.max(dim=0).values.tolist() if len(readable) else [1, 1]
        shape = [hp.image_size] * 2 if hp.image_size else largest
        self._infer_augmentation(min(shape))
        pixels = len(every) * shape[0] * shape[1] if hp.image_size else int(every.prod(dim=1).sum())
        storage = self._choose_storage(pixels * hp.channels, len(every))
        val_mask = self._split(labels, root / "train")
        if storage == "stream":
            self._setup_chunks(files, labels, test_files, test_labels, val_mask, names, cache)
            return
        # memory: the split is drawn over the listed files; a skipped (undecodable) file leaves its split
        images, kept = cached_decode(files, cache, hp.channels, hp.image_size, hp.skip_corrupt)
        kept = torch.tensor(kept)
        val_kept, labels_kept = val_mask[kept], torch.tensor(labels)[kept]
        self.val_positions = kept[val_kept]
        train_images = images[~val_kept]
        require_split(
            {"training": len(train_images), "validation": int(val_kept.sum())},
            root / "train",
            "decodable training images",
            f"data.val_fraction={hp.val_fraction}",
        )
        test_images, test_kept = cached_decode(test_files, cache, hp.channels, hp.image_size, hp.skip_corrupt)
        self._check_shapes(images.shape, test_images.shape)
        self._fit_statistics(names, images.shape, lambda: channel_statistics(train_images.split(256)))
        self.train_set = ImageTensors(train_images, labels_kept[~val_kept])
        self.val_set = ImageTensors(images[val_kept], labels_kept[val_kept])
        self.test_set = ImageTensors(test_images, torch.tensor(test_labels)[test_kept])

    def _test_folder(self, root: Path) -> Path:
        """The folder of test images: `test_folder`, else the first of `TEST_FOLDERS` under `root`."""
        hp = self.hparams
        if hp.test_folder is not None:
            folder = root / hp.test_folder
            if not folder.is_dir():
                there = sorted(d.name for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
                raise MissingFileError(
                    f"data.test_folder={hp.test_folder}: {folder} is not a folder; {root} has {there}: "
                    "name one of them, or data.test_folder=null to look for test/, val/, valid/, validation/"
                )
            return folder
        found = [name for name in TEST_FOLDERS if (root / name).is_dir()]
        if not found:
            there = sorted(d.name for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
            raise MissingFileError(
                f"{root} has no test folder ({', '.join(f'{n}/' for n in TEST_FOLDERS)}); it has {there}: "
                "expected layout <root>/{train,test}/<class>/*.jpg|png; add one, or set data.test_folder=<name>"
            )
        others = [f"{n}/" for n in found[1:]]
        reason = f"{root}/{found[0]} holds the held-out images" + (
            f" ({', '.join(others)} not used: validation is data.val_fraction of train/)" if others else ""
        )
        return root / self.infer("test_folder", found[0], reason)

    def _setup_chunks(self, files, labels, test_files, test_labels, val_mask, names, cache: Path) -> None:
        """The stream path: each split decoded once into its own chunk folder, keyed by its files."""
        hp = self.hparams
        held_out = val_mask.tolist()
        parts = {
            "train": [i for i, v in enumerate(held_out) if not v],
            "val": [i for i, v in enumerate(held_out) if v],
        }
        splits = {name: ([files[i] for i in rows], [labels[i] for i in rows]) for name, rows in parts.items()}
        splits["test"] = (test_files, test_labels)
        folders = {}
        for split, (split_files, split_labels) in splits.items():
            statistics = split == "train"  # in the key: the same files validate one fold and train another
            key = files_key(
                split_files, CACHE_FORMAT, hp.channels, hp.image_size, hp.skip_corrupt, split_labels, statistics
            )
            folder = cache / f"chunks-{key}"
            summary = write_chunks(
                split_files, split_labels, folder, hp.channels, hp.image_size, hp.skip_corrupt, statistics
            )
            folders[split] = (folder, summary)
        (train_folder, train), (val_folder, val), (test_folder, test) = folders.values()
        self.val_positions = val_mask.nonzero().squeeze(1)[val["positions"]]
        self._check_shapes(train["shape"], test["shape"])
        self._fit_statistics(names, train["shape"], lambda: (train["mean"], train["std"]))
        self.streamed = train_folder
        self.train_set = ChunkedImages(train_folder, train["labels"])
        self.val_set = ChunkedImages(val_folder, val["labels"])
        self.test_set = ChunkedImages(test_folder, test["labels"])

    def _check_shapes(self, train_shape: Sequence[int], test_shape: Sequence[int]) -> None:
        if list(train_shape)[-3:] != list(test_shape)[-3:]:
            raise DataError(
                f"train images of {self.hparams.root} are {tuple(train_shape)[-3:]}, "
                f"test images {tuple(test_shape)[-3:]}; set data.image_size to resize both"
            )

    def train_dataloader(self):
        if self.streamed is not None:
            return streaming_loader(self.streamed, self.batch_size, self.num_workers, self.split_seed)
        return super().train_dataloader()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """On the training device: uint8 → float, augmentation (training only), normalisation."""
        images, rest = (batch[0], batch[1:]) if isinstance(batch, (tuple, list)) else (batch, ())
        if self.trainer is not None and self.trainer.training:
            images = self.augment(images)  # batched, a random draw per image
        if self.input_size is not None and tuple(images.shape[-2:]) != (self.input_size, self.input_size):
            images = TF.resize(images, [self.input_size, self.input_size], antialias=True)  # uint8 on the device
        images = self.normalize(images)
        return (images, *rest) if rest else images

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 (B, C, H, W) → float normalised with the training statistics, channels-last in memory.

        One multiply-add with (C, 1, 1) tensors kept on the images' device: torchvision's `normalize`
        builds them from the lists on every call and checks `std == 0` on the host, which waits for
        the device. Channels-last makes convolutions markedly faster (1.7× for the ResNet on a CPU).
        """
        scale, shift = self._affine(images.device)
        images = torch.addcmul(shift, images.float(), scale)  # (x / 255 - mean) / std
        return images.contiguous(memory_format=torch.channels_last)

    def _affine(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """(scale, shift), each (C, 1, 1) on `device`, with x · scale + shift = (x / 255 - mean) / std."""
        key = (device, tuple(self.mean), tuple(self.std))
        if self._affine_cache is None or self._affine_cache[0] != key:
            mean = torch.tensor(self.mean, dtype=torch.float32)[:, None, None]
            std = torch.tensor(self.std, dtype=torch.float32)[:, None, None]
            if bool((std <= 0).any()):
                raise DataError(f"image statistics: std {self.std} must be positive in every channel (data.std)")
            self._affine_cache = (key, (1 / (255 * std)).to(device), (-mean / std).to(device))
        return self._affine_cache[1], self._affine_cache[2]

    # ---- prediction ----------------------------------------------------------------------------

    def _scores_another_folder(self) -> bool:
        """Testing a restored model on a folder without a `train` split (evaluate.py data.root=<folder>):
        its classes, size and statistics are the checkpoint's, so only the labelled images are read."""
        hp = self.hparams
        return hp.source == "folder" and self.mean is not None and not (Path(hp.root) / "train").is_dir()

    def _setup_test_folder(self) -> None:
        """The test split alone: `<root>/test/<class>/*` or, without `test`, `<root>/<class>/*`, each image
        converted to the checkpoint's channels and size (as for predictions)."""
        hp = self.hparams
        root = Path(hp.root)
        folder = root / "test" if (root / "test").is_dir() else root
        if not folder.is_dir():
            raise MissingFileError(
                f"data.root={root} does not exist; to score the model on other labelled images give a folder "
                f"<root>/<class>/*.jpg|png (or <root>/test/<class>/...) with the classes {self.classes}"
            )
        files, labels, _ = list_image_folder(folder, self.classes)
        if not files:
            raise DataError(f"no images in the class folders {self.classes} of {folder}")
        images, kept = decode_files(files, hp.channels, self.size, hp.skip_corrupt)
        self.test_set = ImageTensors(images, torch.tensor(labels)[torch.tensor(kept)])

    def use_predict_input(self, inputs: str | Path | Sequence[str | Path]) -> None:
        """The images the next `setup("predict")` reads: image files, folders of them, or a mix."""
        self.predict_input = inputs

    def _setup_predict(self) -> None:
        if self.mean is None:
            raise RuntimeError("the data module has no fitted statistics: restore it from a checkpoint first")
        if self.predict_input is None:
            raise RuntimeError("call use_predict_input (image files or a folder) before predicting")
        sources = [self.predict_input] if isinstance(self.predict_input, (str, Path)) else self.predict_input
        files: list[Path] = []
        for source in map(Path, sources):
            if source.is_dir():
                files += sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            elif source.is_file():
                files.append(source)
            else:
                raise MissingFileError(f"input={source}: {source} is neither an image file nor a folder")
        if not files:
            raise DataError(
                f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {sources}: give image files or folders of them"
            )
        # each file converted on its own to the checkpoint's channels and size, whatever its mode and size
        images, kept = decode_files(files, self.hparams.channels, self.size, self.hparams.skip_corrupt)
        self.predict_files = [files[i] for i in kept]
        self.predict_set = ImageTensors(images, torch.zeros(len(kept), dtype=torch.long))

    def format_predictions(self, predictions: Tensor) -> pd.DataFrame:
        """file, predicted class and one probability column per class."""
        files = pd.DataFrame({"file": [str(f) for f in self.predict_files]})
        return pd.concat([files, class_table(predictions, self.classes)], axis=1)

    # ---- what nets and checkpoints need --------------------------------------------------------

    @property
    def class_names(self) -> list[str] | None:
        return self.classes

    @property
    def example_input_array(self) -> Tensor:
        return self.train_set.__getitems__([0, 1])[0]  # raw uint8: the graph is traced after on_after_batch_transfer

    target_kind = "classification"  # what its targets ask of a module (checked when the run is built)

    @property
    def dims(self) -> dict[str, Any]:
        k = len(self.classes)
        return {
            "in_channels": self.hparams.channels,
            "image_size": self.input_size or self.size[0],
            "num_classes": k,
            "out_features": 1 if k == 2 else k,
            # module.class_weights='${dims.class_weights}': balanced on the training split
            **({} if self.train_set is None else {"class_weights": balanced_class_weights(self.train_set.labels, k)}),
        }

    def state_dict(self) -> dict[str, Any]:
        if self.mean is None:
            return {}
        return {
            "classes": self.classes,
            "mean": self.mean,
            "std": self.std,
            "size": self.size,
            "input_size": self.input_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.classes, self.mean, self.std, self.size = state["classes"], state["mean"], state["std"], state["size"]
            self.input_size = state.get("input_size")


def _per_channel(values: Sequence[float], channels: int) -> list[float]:
    """`values` for `channels` channels: three (RGB) statistics averaged for a grayscale image."""
    values = [float(v) for v in values]
    if len(values) == channels:
        return values
    if channels == 1:
        return [sum(values) / len(values)]
    raise ConfigError(f"data.mean and data.std need {channels} values, got {values}")


def _hw(size: Sequence[int]) -> str:
    return f"{size[0]}×{size[1]}"
