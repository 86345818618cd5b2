"""Images beyond RAM: decoded once into LitData chunks on disk, streamed for training, read exactly for evaluation.

`write_chunks` decodes a split's files (in worker processes, with `litdata.optimize`) into uint8
chunks, once, under a lock, and reads them back once to record each sample's position and label
(and, for the training split, the channel statistics, a batch at a time). Training streams the
chunks with LitData's `StreamingDataset`/`StreamingDataLoader` (shuffled chunk by chunk; under DDP
each rank streams its share and the last samples are dropped to keep ranks even). Validation and
test read the same chunks as a map-style dataset (`ChunkedImages`), so the base class's
`UnrepeatedDistributedSampler` counts every sample exactly once.

Two LitData behaviours this relies on (0.2.76):
- `batch_decode="auto"` deserialises a window of 256 samples for every shuffled read, an order of
  magnitude slower than `batch_decode=0` for small images, so streaming sets `batch_decode=0`;
- `optimize` starts its workers with "spawn" by default (each imports torch again, which takes
  seconds), so it forks where the platform can.
"""

import logging
import multiprocessing
import os
import shutil
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from dltemplate.errors import DataError
from dltemplate.files import cached_folder
from dltemplate.image.data.image_files import channel_statistics, decode_one

log = logging.getLogger(__name__)

SUMMARY = "summary.pt"  # written last: a folder without it is unfinished
CHUNK_BYTES = "64MB"


def write_chunks(
    files: Sequence[Path],
    labels: Sequence[int],
    folder: Path,
    channels: int,
    size: int | None,
    skip_corrupt: bool,
    statistics: bool = False,
) -> dict[str, Any]:
    """Decode `files` into LitData chunks in `folder` unless done before; return its summary.

    The summary holds, in the chunks' order, each sample's `positions` (index into `files`) and
    `labels`, the image `shape`, and with `statistics` the channel `mean` and `std`.
    """

    def build(partial: Path) -> None:
        summary = _optimize(files, labels, partial, channels, size, skip_corrupt, statistics)
        torch.save(summary, partial / SUMMARY)  # last: marks the folder complete

    what = f"{len(files)} images decoded into chunks"
    cached_folder(folder, build, SUMMARY, what)
    try:
        return torch.load(folder / SUMMARY, weights_only=True)
    except Exception as error:
        log.warning("chunk summary %s is unreadable (%s); decoding again", folder / SUMMARY, type(error).__name__)
        shutil.rmtree(folder, ignore_errors=True)
    cached_folder(folder, build, SUMMARY, what)
    return torch.load(folder / SUMMARY, weights_only=True)


def _optimize(files, labels, folder: Path, channels, size, skip_corrupt, statistics) -> dict[str, Any]:
    import litdata

    failures = folder / "failures"
    failures.mkdir(parents=True)
    inputs = [(i, str(path), int(label)) for i, (path, label) in enumerate(zip(files, labels, strict=True))]
    fork = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    litdata.optimize(
        fn=partial(_decode_sample, channels=channels, size=size, failures=str(failures)),
        inputs=inputs,
        output_dir=str(folder),
        chunk_bytes=CHUNK_BYTES,
        num_workers=max(1, min(len(inputs), os.cpu_count() or 1)),
        reorder_files=False,
        keep_data_ordered=True,
        start_method=fork,
        verbose=False,
    )
    failed = sorted(p.read_text() for p in failures.iterdir())
    if failed and not skip_corrupt:
        raise DataError(failed[0])
    if len(failed) == len(files):
        raise DataError(f"none of the {len(files)} images could be decoded, e.g. {files[0]}: are they images?")
    if failed:
        log.warning("skipped %d image(s) that could not be decoded, e.g. %s", len(failed), failed[0].split(";")[0])
    shutil.rmtree(failures)
    # one read-back pass: positions and labels in the chunks' order, statistics a batch at a time
    reader = ChunkedImages(folder, torch.zeros(len(files) - len(failed), dtype=torch.long))
    positions, kept_labels, shapes = [], [], set()

    def batches():
        for start in range(0, len(reader), 256):
            samples = [reader.sample(i) for i in range(start, min(start + 256, len(reader)))]
            positions.extend(s["position"] for s in samples)
            kept_labels.extend(s["label"] for s in samples)
            shapes.update(tuple(s["image"].shape) for s in samples)
            if len(shapes) > 1:
                raise DataError(f"images have different sizes {sorted(shapes)[:3]}; set data.image_size to resize them")
            yield torch.stack([s["image"] for s in samples])

    summary: dict[str, Any] = {}
    if statistics:
        summary["mean"], summary["std"] = channel_statistics(batches())
    else:
        for _ in batches():
            pass
    summary.update(positions=torch.tensor(positions), labels=torch.tensor(kept_labels), shape=list(shapes.pop()))
    return summary


def _decode_sample(item: tuple[int, str, int], channels: int, size: int | None, failures: str) -> dict | None:
    """One input of `litdata.optimize`: the decoded sample, or None (recorded in `failures`) for a bad file."""
    position, path, label = item
    try:
        image = decode_one(Path(path), channels, size)
    except DataError as error:
        Path(failures, f"{position:012d}").write_text(str(error))
        return None
    return {"image": image, "label": label, "position": position}


class ChunkedImages(Dataset):
    """A chunk folder as a map-style dataset: item i is (uint8 image (C, H, W), label).

    The LitData reader is opened lazily in each process (and DataLoader worker) that reads.
    `__getitems__` serves a whole batch (the data module's collate passes it through).
    """

    def __init__(self, folder: str | Path, labels: Tensor) -> None:
        self.folder, self.labels = str(folder), labels
        self._reader = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_reader": None}  # workers open their own

    def __len__(self) -> int:
        return len(self.labels)

    def sample(self, index: int) -> dict[str, Any]:
        if self._reader is None:
            import litdata

            self._reader = litdata.StreamingDataset(self.folder, batch_decode=0)
        return self._reader[int(index)]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        sample = self.sample(index)
        return sample["image"], torch.tensor(sample["label"])

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        samples = [self.sample(i) for i in indices]
        return torch.stack([s["image"] for s in samples]), torch.tensor([s["label"] for s in samples])


def _as_pair(sample: dict[str, Any]) -> tuple[Tensor, int]:
    return sample["image"], sample["label"]


def streaming_loader(folder: str | Path, batch_size: int, num_workers: int, seed: int):
    """LitData's loader over a chunk folder: shuffled anew every epoch, (images, labels) batches.

    Built when the Trainer asks for it, so that under DDP LitData sees the process group and
    gives each rank its own share.
    """
    import litdata
    import torch.cuda

    dataset = litdata.StreamingDataset(str(folder), shuffle=True, seed=seed, batch_decode=0, transform=_as_pair)
    return litdata.StreamingDataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=num_workers > 0 and torch.cuda.is_available(),
    )
