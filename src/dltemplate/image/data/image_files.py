"""Read image folders into uint8 tensors, decoding each file once and caching the result on disk."""

import io
import logging
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

from dltemplate.errors import DataError, MissingFileError
from dltemplate.files import cached, files_key

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp")
CACHE_FORMAT = 2  # in the cache key: 2 = every image uint8 (16-bit files were cached as they decoded before)
# PIL modes of one-channel files (gray, gray + alpha, bilevel, 16/32-bit gray); any other mode is colour
GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def list_image_folder(split_dir: Path, classes: Sequence[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """Files, class indices and class names of `split_dir/<class>/*.<image extension>`.

    Classes are the sub-folder names in sorted order, or `classes` in the given order.
    """
    if not split_dir.is_dir():
        raise MissingFileError(f"{split_dir} does not exist; expected layout: <root>/{{train,test}}/<class>/*.jpg|png")
    folders = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes is None:
        classes = folders
    missing = [c for c in classes if c not in folders]
    if missing:
        raise MissingFileError(
            f"{split_dir} has no folder for class(es) {missing}; it has {folders}: add them, or change data.classes"
        )
    files, labels = [], []
    for index, name in enumerate(classes):
        found = sorted(p for p in (split_dir / name).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            raise DataError(
                f"class folder {split_dir / name} holds no images ({', '.join(IMAGE_EXTENSIONS)}): "
                "add some, or remove the folder"
            )
        files += found
        labels += [index] * len(found)
    return files, labels, list(classes)


def as_uint8_image(decoded: torch.Tensor, channels: int) -> torch.Tensor:
    """A decoded file as one uint8 (channels, H, W) image, whatever the file held.

    An animation (frames, C, H, W) gives its first frame; 16-bit values (PNG) are scaled to 0..255,
    not cut; GIFs decode as RGB whatever the mode asked for, so channels are matched here too.
    """
    image = decoded[0] if decoded.ndim == 4 else decoded
    if image.dtype != torch.uint8:
        image = TF.to_dtype(image, torch.uint8, scale=True)
    if image.shape[0] != channels:
        image = TF.rgb_to_grayscale(image) if channels == 1 else image.expand(3, -1, -1)
    return image


def image_pixels(source: str | Path | bytes) -> tuple[int, str] | None:
    """The pixels of an image file and its size in words ("640×480"), from its header only (nothing is
    decoded); None when PIL cannot read the header."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                width, height = image.size
                return width * height, f"{width}×{height}"
    except Image.DecompressionBombError as error:  # over twice PIL's limit: only the count is said
        found = re.search(r"\((\d+) pixels\)", str(error))
        pixels = int(found.group(1)) if found else 2 * (Image.MAX_IMAGE_PIXELS or 0) + 1
        return pixels, f"{pixels}"
    except (OSError, ValueError, SyntaxError):
        return None


def decode_one(path: Path, channels: int, size: int | Sequence[int] | None) -> torch.Tensor:
    """One file as a uint8 (channels, H, W) image, resized to `size` (a side or (H, W)) when given.

    Raises DataError, naming the file, when it cannot be decoded, or when its header says it holds more
    than PIL's `Image.MAX_IMAGE_PIXELS` pixels (checked before decoding: a small file can expand to
    gigabytes).
    """
    found = image_pixels(path)
    if found is not None and Image.MAX_IMAGE_PIXELS is not None and found[0] > Image.MAX_IMAGE_PIXELS:
        raise DataError(
            f"image {path} is {found[1]} pixels, more than {Image.MAX_IMAGE_PIXELS} (PIL.Image.MAX_IMAGE_PIXELS); "
            "resize it, or raise that limit if you trust the file"
        )
    mode = {3: ImageReadMode.RGB, 1: ImageReadMode.GRAY}[channels]
    try:
        image = as_uint8_image(decode_image(str(path), mode=mode), channels)
    except (RuntimeError, ValueError) as error:
        raise DataError(
            f"cannot decode image {path}: {error}; fix or remove it, or set data.skip_corrupt=true"
        ) from None
    if size is not None:
        size = [size, size] if isinstance(size, int) else list(size)
        if list(image.shape[-2:]) != size:
            image = TF.resize(image, size, antialias=True)
    return image


def decode_files(
    files: Sequence[Path], channels: int, size: int | Sequence[int] | None, skip_corrupt: bool = False
) -> tuple[torch.Tensor, list[int]]:
    """Decode `files` into one (N, channels, H, W) uint8 tensor; also return the indices kept.

    Every image is resized to `size` (a side, or (H, W)) when given; otherwise all must share one
    size. A file that cannot be decoded is an error naming it, or skipped and counted with
    `skip_corrupt`. The images are written into one tensor as they are decoded (no second copy).
    """
    images: torch.Tensor | None = None
    kept, skipped = [], []
    for i, path in enumerate(files):
        try:
            image = decode_one(path, channels, size)
        except DataError:
            if not skip_corrupt:
                raise
            skipped.append(path)
            continue
        if images is None:
            images = torch.empty((len(files), *image.shape), dtype=torch.uint8)
        elif image.shape != images.shape[1:]:
            raise DataError(
                f"images have different sizes: {files[kept[0]]} is {tuple(images.shape[-2:])}, "
                f"{path} is {tuple(image.shape[-2:])}; set data.image_size to resize them"
            )
        images[len(kept)] = image
        kept.append(i)
    if skipped:
        log.warning("skipped %d image(s) that could not be decoded, e.g. %s", len(skipped), skipped[0])
    if images is None:
        raise DataError(f"none of the {len(files)} images could be decoded, e.g. {files[0]}: are they images?")
    return images[: len(kept)], kept


def read_headers(files: Sequence[Path]) -> torch.Tensor:
    """(N, 3) int tensor: channels (1 or 3), height and width of each file, from its header only.

    A file whose header cannot be read gets (0, 0, 0); decoding it later says what is wrong.
    """
    found = torch.zeros((len(files), 3), dtype=torch.int64)
    for i, path in enumerate(files):
        try:
            with Image.open(path) as image:
                width, height = image.size
                found[i] = torch.tensor([1 if image.mode in GRAY_MODES else 3, height, width])
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    return found


def cached_headers(files: Sequence[Path], cache_dir: Path | None) -> torch.Tensor:
    """`read_headers`, cached like the decoded images (a changed folder is read again)."""
    cache = cache_dir / f"headers-{files_key(files, 'headers')}.pt" if cache_dir else None
    return cached(cache, lambda: read_headers(files), f"headers of {len(files)} images")


def channel_statistics(batches: Iterable[torch.Tensor]) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation (of values / 255) over uint8 (B, C, H, W) batches.

    Sums in float64 over one batch at a time, so memory stays one batch whatever the data's size;
    the same values as `images.float().div(255).mean/std(dim=(0, 2, 3))` of the whole set.
    """
    total = squares = None
    count = 0
    for batch in batches:
        values = batch.float().div_(255)  # one batch of float32, summed in float64
        sums = values.sum(dim=(0, 2, 3), dtype=torch.float64)
        sq = values.square_().sum(dim=(0, 2, 3), dtype=torch.float64)
        total, squares = (sums, sq) if total is None else (total + sums, squares + sq)
        count += values.numel() // values.shape[1]
    if total is None or count < 2:
        raise DataError("channel statistics need at least two pixels of training images")
    mean = total / count
    variance = ((squares - count * mean.square()) / (count - 1)).clamp(min=0)
    return mean.tolist(), variance.sqrt().clamp(min=1e-3).tolist()


def cached_decode(
    files: Sequence[Path], cache_dir: Path | None, channels: int, size: int | None, skip_corrupt: bool
) -> tuple[torch.Tensor, list[int]]:
    """`decode_files`, loaded from `cache_dir` when these files were decoded the same way before.

    The cache key covers every file's path, size and modification time and the decoding settings
    (`files_key`), so a changed folder is decoded again; see `files.cached` for the rest.
    """
    key = files_key(files, CACHE_FORMAT, channels, size, skip_corrupt)
    cache = cache_dir / f"images-{key}.pt" if cache_dir else None

    def decode() -> dict[str, Any]:
        images, kept = decode_files(files, channels, size, skip_corrupt)
        return {"images": images, "kept": kept}

    stored = cached(cache, decode, f"{len(files)} decoded images")
    return stored["images"], stored["kept"]
