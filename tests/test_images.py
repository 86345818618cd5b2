"""Image task: folders and torchvision sources, the decode-once cache, device-side batches, predict, bad input."""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision import datasets
from torchvision.io import ImageReadMode, decode_image

from dltemplate.config import compose_config
from dltemplate.errors import ConfigError, DataError
from dltemplate.image.data import image_files
from dltemplate.image.data.image_chunks import ChunkedImages
from dltemplate.image.data.images import ImageDataModule, ImageTensors
from dltemplate.predict import predict
from dltemplate.selection import Split
from dltemplate.train import train
from tests.datasets import write_fake_cifar10_archive, write_fake_mnist, write_image_folder
from tests.helpers import CONFIG_DIR, assert_balanced_class_weights, tensorboard_tags
from tests.test_tabular import serve_folder


def folder_module(root: Path, tmp_path: Path, **kwargs) -> ImageDataModule:
    return ImageDataModule(root=str(root), cache_dir=str(tmp_path / "cache"), val_fraction=0.25, **kwargs)


def test_folder_is_decoded_once_and_cached(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "imgs")
    first = folder_module(root, tmp_path)
    first.setup("fit")
    assert first.class_names == ["airplane", "automobile"]
    assert first.train_set.images.dtype == torch.uint8 and first.train_set.images.shape[1:] == (3, 16, 16)
    assert len(first.train_set) + len(first.val_set) == 24 and len(first.test_set) == 12

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache was valid")

    monkeypatch.setattr(image_files, "decode_files", no_decoding)
    second = folder_module(root, tmp_path)
    second.setup("fit")  # served from the cache
    assert torch.equal(second.train_set.images, first.train_set.images)


def test_a_changed_folder_is_decoded_again(tmp_path):
    root = write_image_folder(tmp_path / "imgs")
    folder_module(root, tmp_path).setup("fit")
    (root / "train" / "airplane" / "2.png").unlink()
    changed = folder_module(root, tmp_path)
    changed.setup("fit")
    assert len(changed.train_set) + len(changed.val_set) == 23


def test_batches_become_normalised_channels_last_floats_on_the_device(tmp_path):
    dm = folder_module(write_image_folder(tmp_path / "imgs"), tmp_path)
    dm.setup("fit")
    images, _ = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert images.dtype == torch.float32 and images.is_contiguous(memory_format=torch.channels_last)
    everything = dm.normalize(dm.train_set.images)
    assert everything.mean(dim=(0, 2, 3)).abs().max() < 1e-4  # statistics of the training split
    assert (everything.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-3


def test_augmentation_draws_per_image(tmp_path):
    dm = folder_module(write_image_folder(tmp_path / "imgs"), tmp_path)
    dm.setup("fit")
    same = dm.train_set.images[:1].expand(16, -1, -1, -1)
    out = dm.augment(same)
    assert out.shape == same.shape and out.dtype == torch.uint8
    assert len({tuple(o.flatten().tolist()) for o in out}) > 1


def test_batched_augmentation_matches_torchvision_crop_and_flip():
    from torchvision.transforms.v2 import functional as TF

    from dltemplate.image.data.augment import random_crop_and_flip

    images = torch.randint(0, 256, (64, 3, 6, 5), dtype=torch.uint8)
    torch.manual_seed(0)
    out = random_crop_and_flip(images, padding=2, flip=True)
    padded = TF.pad(images, [2, 2, 2, 2])
    for image, source in zip(out, padded, strict=True):  # each output is one crop of its own padded image
        crops = [source[:, y : y + 6, x : x + 5] for y in range(5) for x in range(5)]
        assert any(torch.equal(image, c) or torch.equal(image, c.flip(-1)) for c in crops)
    assert torch.equal(random_crop_and_flip(images, 0, False), images)  # both off: unchanged
    flips = random_crop_and_flip(images, padding=0, flip=True)
    mirrored = [torch.equal(f, i.flip(-1)) for f, i in zip(flips, images, strict=True)]
    assert 10 < sum(mirrored) < 54  # about half, drawn per image


def test_grayscale_and_resize(tmp_path):
    dm = folder_module(write_image_folder(tmp_path / "imgs"), tmp_path, channels=1, image_size=8)
    dm.setup("fit")
    assert dm.train_set.images.shape[1:] == (1, 8, 8)
    assert dm.dims == {
        "in_channels": 1,
        "image_size": 8,
        "num_classes": 2,
        "out_features": 1,
        "class_weights": [1.0, 1.0],
    }


@pytest.mark.slow  # seconds each (whole runs, or every net or family): CI runs the slow tests too
def test_cifar2_trains_logs_its_images_and_predicts_files(make_cfg, tmp_path):
    write_image_folder(tmp_path / "data" / "cifar2")
    result = train(make_cfg("task=cifar2", "trainer.max_epochs=2", "net=simple_cnn", "data.batch_size=8"))
    tags = tensorboard_tags(Path(result.output_dir))
    assert {"train/inputs"} <= tags["images"] and "graph_def" in tags["graphs"]
    assert {"val/confusion_matrix", "val/roc"} <= tags["images"]

    test_dir = tmp_path / "data" / "cifar2" / "test"
    cfg = compose_config(
        CONFIG_DIR,
        [f"ckpt_path={result.best_checkpoint}", f"input={test_dir}", f"output={tmp_path / 'p.csv'}"],
        output_dir=tmp_path,
        config_name="predict",
    )
    predict(cfg)
    table = pd.read_csv(tmp_path / "p.csv")
    assert list(table.columns) == ["file", "prediction", "prob_airplane", "prob_automobile"]
    assert len(table) == 12 and set(table["prediction"]) <= {"airplane", "automobile"}
    truth = [Path(f).parent.name for f in table["file"]]
    accuracy = (table["prediction"] == truth).mean()
    assert accuracy == pytest.approx(result.metrics["test/acc"], abs=1e-6)  # same preprocessing as in training


@pytest.mark.slow  # seconds each (whole runs, or every net or family): CI runs the slow tests too
def test_balanced_class_weights_reach_the_image_loss(make_cfg, tmp_path):
    root = write_image_folder(tmp_path / "data" / "pets", per_class=8)
    for file in sorted((root / "train" / "automobile").iterdir())[4:]:  # 8 airplanes, 4 automobiles
        file.unlink()
    overrides = [f"data.root={root}", "net=simple_cnn", "data.batch_size=8", "data.val_fraction=0.25"]
    result = train(
        make_cfg("task=images", "trainer.max_epochs=1", "module.class_weights=${dims.class_weights}", *overrides)
    )
    assert_balanced_class_weights(result)


@pytest.mark.slow  # seconds each (whole runs, or every net or family): CI runs the slow tests too
def test_misclassified_images_are_drawn_when_there_are_some(make_cfg, tmp_path):
    write_image_folder(tmp_path / "data" / "cifar2")
    result = train(make_cfg("task=cifar2", "trainer.max_epochs=1", "net=simple_cnn", "module.optimizer.lr=1e-9"))
    assert "val/misclassified" in tensorboard_tags(Path(result.output_dir))["images"]


@pytest.fixture
def fake_cifar10(tmp_path, monkeypatch):
    """torchvision's CIFAR10 pointed at a tiny archive on a loopback HTTP server."""
    archive = write_fake_cifar10_archive(tmp_path / "public")
    shutil.rmtree(tmp_path / "public" / "cifar-10-batches-py")
    base, stop = serve_folder(archive.parent)
    monkeypatch.setattr(datasets.CIFAR10, "url", f"{base}/{archive.name}")
    monkeypatch.setattr(datasets.CIFAR10, "tgz_md5", hashlib.md5(archive.read_bytes()).hexdigest())
    monkeypatch.setattr(datasets.CIFAR10, "train_list", [[f"data_batch_{i}", None] for i in range(1, 6)])
    monkeypatch.setattr(datasets.CIFAR10, "test_list", [["test_batch", None]])
    monkeypatch.setattr(datasets.CIFAR10, "meta", {**datasets.CIFAR10.meta, "md5": None})
    yield tmp_path / "cifar10"
    stop()


def test_cifar10_classes_are_downloaded_and_filtered(fake_cifar10):
    dm = ImageDataModule(root=str(fake_cifar10), source="cifar10", classes=["automobile", "airplane"], val_fraction=0.2)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.class_names == ["automobile", "airplane"]
    assert len(dm.train_set) + len(dm.val_set) == 5 * 2 * 6 and len(dm.test_set) == 12
    assert dm.train_set.labels.unique().tolist() == [0, 1]
    assert dm.train_set.images.shape[1:] == (3, 32, 32)


def test_a_class_cifar10_does_not_have_is_refused(fake_cifar10):
    dm = ImageDataModule(root=str(fake_cifar10), source="cifar10", classes=["airplane", "unicorn"])
    dm.prepare_data()
    with pytest.raises(ValueError, match=r"cifar10 has no class\(es\) \['unicorn'\]"):
        dm.setup("fit")


def test_offline_torchvision_source_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.CIFAR10, "url", "http://127.0.0.1:9/cifar.tar.gz")
    dm = ImageDataModule(root=str(tmp_path / "nothing"), source="cifar10")
    with pytest.raises(FileNotFoundError, match=r"cifar10 not found under .*nothing"):
        dm.prepare_data()


def test_mnist_through_torchvision(tmp_path):
    dm = ImageDataModule(root=str(write_fake_mnist(tmp_path)), source="mnist", channels=1, download=False)
    dm.setup("fit")
    assert len(dm.class_names) == 10 and dm.train_set.images.shape[1:] == (1, 28, 28)


def test_corrupt_images_stop_the_run_or_are_skipped_and_counted(tmp_path, caplog):
    root = write_image_folder(tmp_path / "imgs")
    (root / "train" / "airplane" / "broken.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match=r"cannot decode image .*broken\.jpg"):
        folder_module(root, tmp_path).setup("fit")
    dm = folder_module(root, tmp_path, skip_corrupt=True)
    dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) == 24
    assert "skipped 1 image(s)" in caplog.text


def png_claiming(width: int, height: int) -> bytes:
    """A tiny grey PNG whose header says it is `width`×`height`: what a decompression bomb looks like
    before decoding (its pixel data is that of a 1×1 image, so decoding it would fail, not explode)."""
    import struct
    import zlib

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + header
    ihdr = struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    data = b"IDAT" + zlib.compress(b"\x00\x00")
    idat = struct.pack(">I", len(data) - 4) + data + struct.pack(">I", zlib.crc32(data))
    end = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + ihdr + idat + end


def test_an_image_too_large_is_refused_from_its_header_before_decoding(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(30000, 30000))  # 3.6 GB decoded as RGBA, a few hundred bytes on disk
    assert image_files.image_pixels(bomb) == (900_000_000, "900000000")  # over twice PIL's limit
    decoded = []
    monkeypatch.setattr(image_files, "decode_image", lambda *a, **k: decoded.append(a))
    with pytest.raises(DataError, match=r"bomb\.png is 900000000 pixels, more than 89478485"):
        image_files.decode_one(bomb, 3, None)
    bomb.write_bytes(png_claiming(10000, 10000))  # over the limit, under twice it: PIL only warns
    with pytest.raises(DataError, match=r"is 10000×10000 pixels"):
        image_files.decode_one(bomb, 3, None)
    assert decoded == []  # refused before anything was decoded


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda root: [p.unlink() for p in (root / "train" / "automobile").iterdir()], "holds no images"),
        (lambda root: shutil.rmtree(root / "test" / "automobile"), r"different classes: .* vs \['airplane'\]"),
        (lambda root: (root / "test" / "boat").mkdir(), "different classes"),
        (lambda root: shutil.rmtree(root / "train"), r"train does not exist; expected layout"),
    ],
    ids=["empty-class", "class-missing-in-test", "extra-class-in-test", "no-train-folder"],
)
def test_bad_folders_get_one_clear_error(tmp_path, damage, message):
    root = write_image_folder(tmp_path / "imgs")
    damage(root)
    if (root / "test" / "boat").exists():  # an empty extra class folder still counts as a class
        write_image_folder(tmp_path / "extra", classes=("boat",))
        shutil.copytree(tmp_path / "extra" / "test" / "boat", root / "test" / "boat", dirs_exist_ok=True)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        folder_module(root, tmp_path).setup("fit")


def test_a_damaged_cache_is_decoded_again_with_a_warning(tmp_path, caplog):
    root = write_image_folder(tmp_path / "imgs")
    first = folder_module(root, tmp_path)
    first.setup("fit")
    caches = sorted((tmp_path / "cache").glob("images-*.pt"))
    assert len(caches) == 2  # train and test
    for cache in caches:
        cache.write_bytes(b"not a torch file")
    second = folder_module(root, tmp_path)
    second.setup("fit")
    assert torch.equal(second.train_set.images, first.train_set.images)
    assert caplog.text.count("is unreadable") == 2 and "checkpoint" not in caplog.text
    assert torch.load(caches[0], weights_only=True)["images"].dtype == torch.uint8  # written again


def write_png16(path: Path, image: torch.Tensor) -> None:
    """A 16-bit grayscale PNG holding the uint8 (1, H, W) `image` scaled to 0..65535."""
    Image.fromarray(image[0].numpy().astype(np.uint16) * 257).save(path)


def test_16_bit_pngs_are_scaled_like_8_bit_ones_and_mix_with_them(tmp_path):
    root = write_image_folder(tmp_path / "imgs")
    gray = root / "train" / "airplane" / "0_gray.png"
    eight_bit = decode_image(str(gray), mode=ImageReadMode.GRAY)
    write_png16(root / "train" / "airplane" / "0_gray16.png", eight_bit)
    assert decode_image(str(root / "train" / "airplane" / "0_gray16.png")).dtype == torch.uint16
    images, _ = image_files.decode_files([gray, root / "train" / "airplane" / "0_gray16.png"], 3, None)
    assert images.dtype == torch.uint8 and torch.equal(images[0], images[1])  # not divided by 257, not cut
    dm = folder_module(root, tmp_path)
    dm.setup("fit")  # 8- and 16-bit files in one training set
    assert len(dm.train_set) + len(dm.val_set) == 25 and dm.train_set.images.dtype == torch.uint8


def test_an_animated_gif_gives_its_first_frame_in_the_configured_channels(tmp_path):
    colours = [(200, 40, 40), (40, 60, 200), (40, 180, 60)]
    frames = [Image.fromarray(np.full((16, 16, 3), c, np.uint8)) for c in colours]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    rgb, _ = image_files.decode_files([tmp_path / "a.gif"], 3, None)
    gray, _ = image_files.decode_files([tmp_path / "a.gif"], 1, None)
    assert rgb.shape == (1, 3, 16, 16) and rgb[0, :, 0, 0].tolist() == [200, 40, 40]
    assert gray.shape == (1, 1, 16, 16)


def test_a_folder_with_a_single_class_is_refused(tmp_path):
    root = write_image_folder(tmp_path / "imgs", classes=("cat",))
    with pytest.raises(DataError, match=r"imgs/train has a single class \['cat'\]: .*needs at least two classes"):
        folder_module(root, tmp_path).setup("fit")


def test_a_split_left_empty_by_few_images_is_named_with_its_fraction(tmp_path):
    root = write_image_folder(tmp_path / "imgs", per_class=2)
    dm = ImageDataModule(root=str(root), val_fraction=0.1)
    with pytest.raises(DataError, match=r"imgs/train: 4 training images with data\.val_fraction=0\.1 leave the valid"):
        dm.setup("fit")


# ---- storage: memory and stream give the same data --------------------------------------------


def all_batches(loader, dm) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (uint8 image, label) a loader serves, in its order."""
    pairs = list(loader)
    return torch.cat([b[0] for b in pairs]), torch.cat([torch.as_tensor(b[1]) for b in pairs])


def by_content(images: torch.Tensor, labels: torch.Tensor) -> list[tuple]:
    """The (image bytes, label) pairs, sorted: equal for two loaders that serve the same samples in any order."""
    return sorted((bytes(i.flatten().numpy()), int(y)) for i, y in zip(images, labels, strict=True))


@pytest.fixture(scope="module")
def both_paths(tmp_path_factory):
    """One folder set up in memory and streamed from chunks (each with its own cache)."""
    tmp = tmp_path_factory.mktemp("storage")
    root = write_image_folder(tmp / "imgs", per_class=20)
    modules = {}
    for storage in ("memory", "stream"):
        dm = ImageDataModule(
            root=str(root), cache_dir=str(tmp / storage), val_fraction=0.25, storage=storage, batch_size=8
        )
        dm.setup("fit")
        modules[storage] = dm
    return modules


def test_stream_and_memory_give_the_same_statistics_splits_and_batches(both_paths):
    memory, stream = both_paths["memory"], both_paths["stream"]
    assert isinstance(stream.train_set, ChunkedImages) and stream.streamed is not None
    assert stream.mean == pytest.approx(memory.mean, abs=1e-9) and stream.std == pytest.approx(memory.std, abs=1e-9)
    assert stream.class_names == memory.class_names and stream.size == memory.size and stream.dims == memory.dims
    assert torch.equal(stream.val_positions, memory.val_positions)
    for split in ("val", "test"):  # evaluation: the same images in the same order, each once
        ours, theirs = (all_batches(getattr(dm, f"{split}_dataloader")(), dm) for dm in (stream, memory))
        assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    streamed, held = all_batches(stream.train_dataloader(), stream), all_batches(memory.train_dataloader(), memory)
    assert len(streamed[1]) == len(memory.train_set) == 30  # one epoch: every training image once
    assert by_content(*streamed) == by_content(*held)
    again = all_batches(stream.train_dataloader(), stream)[1]
    assert torch.equal(again.sort().values, streamed[1].sort().values)
    assert torch.equal(stream.example_input_array, memory.example_input_array)
    batch = stream.on_after_batch_transfer(next(iter(stream.train_dataloader())), 0)
    assert batch[0].dtype == torch.float32 and batch[0].shape[1:] == (3, 16, 16)


def test_channel_statistics_in_chunks_equal_those_of_the_whole_set(both_paths):
    memory = both_paths["memory"]
    whole = memory.train_set.images.float().div(255)
    assert memory.mean == pytest.approx(whole.mean(dim=(0, 2, 3)).tolist(), abs=1e-6)
    assert memory.std == pytest.approx(whole.std(dim=(0, 2, 3)).tolist(), abs=1e-6)
    mean, std = image_files.channel_statistics(memory.train_set.images.split(7))  # uneven batches
    assert mean == pytest.approx(memory.mean, abs=1e-9) and std == pytest.approx(memory.std, abs=1e-9)


def test_chunks_are_written_once(both_paths, tmp_path, monkeypatch):
    stream = both_paths["stream"]
    import litdata

    monkeypatch.setattr(litdata, "optimize", lambda *a, **k: pytest.fail("decoded again"))
    again = ImageDataModule(
        root=stream.hparams.root, cache_dir=stream.hparams.cache_dir, val_fraction=0.25, storage="stream"
    )
    again.setup("fit")
    assert again.streamed == stream.streamed and again.mean == stream.mean


def test_auto_storage_takes_memory_within_the_budget_and_streams_beyond_it(tmp_path):
    root = write_image_folder(tmp_path / "imgs")
    fits = folder_module(root, tmp_path)
    fits.setup("fit")
    assert fits.hparams.storage == "memory" and isinstance(fits.train_set, ImageTensors)
    assert "36 decoded images take 0.00 GB, within the memory budget" in fits.inferred["storage"].reason
    tight = folder_module(root, tmp_path, memory_budget_gb=1e-6)
    tight.setup("fit")
    assert tight.hparams.storage == "stream" and isinstance(tight.train_set, ChunkedImages)
    assert "over the memory budget 0.0 GB (data.memory_budget_gb): LitData chunks" in tight.inferred["storage"].reason
    explicit = folder_module(root, tmp_path, memory_budget_gb=1e-6, storage="memory")
    explicit.setup("fit")
    assert explicit.hparams.storage == "memory" and "storage" not in explicit.inferred


def test_stream_needs_a_folder_and_a_cache(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.storage=stream streams image folders"):
        ImageDataModule(root=str(tmp_path), source="mnist", storage="stream", cache_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"writes its chunks into data\.cache_dir"):
        ImageDataModule(root=str(tmp_path), storage="stream")


@pytest.mark.slow  # two chunk builds, each forking decoding workers
def test_a_corrupt_image_stops_the_stream_path_or_is_skipped(tmp_path, caplog):
    root = write_image_folder(tmp_path / "imgs")
    (root / "test" / "airplane" / "broken.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=r"cannot decode image .*broken\.jpg.*data\.skip_corrupt=true"):
        folder_module(root, tmp_path, storage="stream").setup("fit")
    dm = folder_module(root, tmp_path, storage="stream", skip_corrupt=True)
    dm.setup("fit")
    assert len(dm.test_set) == 12 and "skipped 1 image(s)" in caplog.text


@pytest.mark.slow  # optimize starts worker processes; about 10 s
def test_a_streamed_run_trains_checkpoints_and_predicts_like_a_memory_run(make_cfg, tmp_path):
    write_image_folder(tmp_path / "data" / "cifar2")
    common = ["task=cifar2", "trainer.max_epochs=1", "net=simple_cnn", "data.batch_size=8"]
    result = train(make_cfg(*common, "data.storage=stream"))
    assert (
        0 <= result.metrics["test/acc"] <= 1
        and "val/confusion_matrix" in tensorboard_tags(Path(result.output_dir))["images"]
    )
    cfg = compose_config(
        CONFIG_DIR,
        [
            f"ckpt_path={result.best_checkpoint}",
            f"input={tmp_path / 'data' / 'cifar2' / 'test'}",
            f"output={tmp_path / 'p.csv'}",
        ],
        output_dir=tmp_path,
        config_name="predict",
    )
    predict(cfg)
    table = pd.read_csv(tmp_path / "p.csv")
    truth = [Path(f).parent.name for f in table["file"]]
    assert (table["prediction"] == truth).mean() == pytest.approx(result.metrics["test/acc"], abs=1e-6)


# ---- settings inferred from the files ---------------------------------------------------------


def write_sized_folder(root: Path, sizes: dict[str, list[tuple[int, int]]], mode: str = "RGB") -> Path:
    """`root/{train,test}/{a,b}/<i>.png` in PIL `mode`, one file per (H, W) listed for the split."""
    rng = np.random.default_rng(0)
    for split, shapes in sizes.items():
        for label, name in enumerate("ab"):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i, (h, w) in enumerate(shapes):
                pixels = rng.integers(0, 60, (h, w, 3)) + 150 * label
                Image.fromarray(pixels.astype(np.uint8)).convert(mode).save(root / split / name / f"{i}.png")
    return root


def test_a_grayscale_folder_is_read_as_one_channel_without_flips(tmp_path):
    root = write_sized_folder(tmp_path / "digits", {"train": [(8, 8)] * 6, "test": [(8, 8)] * 2}, mode="L")
    dm = folder_module(root, tmp_path)
    dm.setup("fit")
    assert dm.hparams.channels == 1 and dm.train_set.images.shape[1:] == (1, 8, 8) and dm.dims["in_channels"] == 1
    assert dm.hparams.horizontal_flip is False and dm.hparams.crop_padding == 1  # 8 / 8
    assert "every training image in" in dm.inferred["channels"].reason and "image_size" not in dm.inferred
    assert "1-channel images" in dm.inferred["horizontal_flip"].reason
    assert dm.inferred["crop_padding"].reason.startswith("1/8 of the 8-pixel image side")


def test_one_colour_file_makes_a_folder_colour_with_flips_and_crops_scaled_to_the_size(tmp_path):
    root = write_sized_folder(tmp_path / "imgs", {"train": [(48, 48)] * 4, "test": [(48, 48)] * 2}, mode="L")
    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(root / "train" / "a" / "colour.png")
    dm = folder_module(root, tmp_path)
    dm.setup("fit")
    assert dm.hparams.channels == 3 and dm.hparams.horizontal_flip is True and dm.hparams.crop_padding == 6
    assert dm.inferred["channels"].reason.startswith("1 of 9 training images")


def test_mixed_sizes_are_resized_to_the_median_longer_side(tmp_path):
    sizes = {"train": [(10, 12), (16, 16), (16, 20), (30, 30), (16, 16)], "test": [(40, 8), (16, 16)]}
    root = write_sized_folder(tmp_path / "imgs", sizes)
    dm = folder_module(root, tmp_path)
    dm.setup("fit")
    assert dm.hparams.image_size == 16 and dm.train_set.images.shape[-2:] == (16, 16) and dm.size == [16, 16]
    assert dm.inferred["image_size"].reason == (
        "images have 5 sizes, 10×12 to 40×8; the training images' median longer side is 16"
    )
    assert dm.hparams.crop_padding == 2


@pytest.mark.parametrize(
    ("device", "input_size", "size", "why"),
    [
        ("cpu", None, 64, "capped at 64 for training on a CPU (an epoch at 120 px costs ~4× as much)"),
        ("gpu", None, 120, "the training images' median longer side is 120"),
        ("cpu", 96, 96, "resized once to the net's input size (data.input_size=96)"),
    ],
    ids=["cpu", "gpu", "pretrained-net"],
)
def test_photos_of_mixed_sizes_get_a_size_that_fits_the_device_or_the_net(tmp_path, device, input_size, size, why):
    sizes = {"train": [(90, 120), (120, 100), (100, 80), (150, 150), (120, 120)], "test": [(100, 100), (80, 60)]}
    root = write_sized_folder(tmp_path / "photos", sizes)
    dm = folder_module(root, tmp_path, input_size=input_size)
    dm.training_device = device  # as build_datamodule sets it from the trainer
    dm.setup("fit")
    assert dm.hparams.image_size == size and dm.train_set.images.shape[-2:] == (size, size)
    assert why in dm.inferred["image_size"].reason


def test_the_training_device_comes_from_the_trainer():
    from dltemplate.build import training_device

    assert training_device({"accelerator": "cpu"}) == "cpu" and training_device({"accelerator": "gpu"}) == "gpu"
    assert training_device({"accelerator": "auto"}) == ("gpu" if torch.cuda.is_available() else "cpu")


def test_explicit_settings_win_over_the_files(tmp_path):
    root = write_sized_folder(tmp_path / "digits", {"train": [(8, 8), (12, 12)] * 3, "test": [(8, 8)]}, mode="L")
    dm = folder_module(root, tmp_path, channels=3, image_size=10, crop_padding=0, horizontal_flip=True)
    dm.setup("fit")
    assert dm.train_set.images.shape[1:] == (3, 10, 10) and dm.hparams.crop_padding == 0
    assert set(dm.inferred) == {"storage", "test_folder"}  # the test folder: found, not set


def test_prediction_converts_each_image_to_the_checkpoints_channels_and_size(tmp_path):
    root = write_sized_folder(tmp_path / "digits", {"train": [(8, 8)] * 6, "test": [(8, 8)] * 2}, mode="L")
    dm = folder_module(root, tmp_path)
    dm.setup("fit")
    inputs = write_sized_folder(tmp_path / "inputs", {"x": [(20, 30), (8, 8), (64, 40)]}, mode="RGB")
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(inputs / "x" / "a" / "gray.png")
    dm.use_predict_input(str(inputs))
    dm.setup("predict")
    assert dm.predict_set.images.shape == (7, 1, 8, 8) and len(dm.predict_files) == 7


@pytest.mark.slow  # two DDP processes on the CPU
def test_a_streamed_ddp_run_tests_every_image_once(tmp_path):
    import json

    from lightning.pytorch import Trainer

    from dltemplate.checkpoint import restore
    from tests.helpers import run_script

    write_image_folder(tmp_path / "data" / "cifar2", per_class=14)  # 7 + 7 test images: odd for two ranks
    (tmp_path / "data" / "cifar2" / "test" / "airplane" / "0_gray.png").unlink()  # 13 test images
    paths = [f"paths.data_dir={tmp_path / 'data'}", f"paths.cache_dir={tmp_path / 'cache'}"]
    result = run_script(
        ["train.py", "task=cifar2", "net=simple_cnn", "trainer=ddp_cpu", "trainer.max_epochs=1", "data.batch_size=4",
         "data.storage=stream", *paths, f"hydra.run.dir={tmp_path / 'run'}"]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    module, datamodule, _ = restore(
        record["best_checkpoint"], paths={"data_dir": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache")}
    )
    assert datamodule.hparams.storage == "stream"
    single = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False).test(module, datamodule)[0]
    assert len(datamodule.test_set) == 13
    assert record["metrics"]["test/acc"] == pytest.approx(single["test/acc"], abs=1e-6)


@pytest.mark.slow  # six chunk builds
def test_two_streamed_folds_each_fit_statistics_on_their_own_training_images(tmp_path):
    root = write_image_folder(tmp_path / "imgs", per_class=10)
    for fold in (0, 1):  # fold 0 validates on exactly the images fold 1 trains on
        kwargs = {"root": str(root), "batch_size": 8}
        stream = ImageDataModule(cache_dir=str(tmp_path / "stream"), storage="stream", **kwargs)
        memory = ImageDataModule(cache_dir=str(tmp_path / "memory"), storage="memory", **kwargs)
        for dm in (stream, memory):
            dm.use_split(Split(folds=2, fold=fold))
            dm.setup("fit")
        assert stream.mean == pytest.approx(memory.mean, abs=1e-9) and stream.std == pytest.approx(memory.std, abs=1e-9)


def test_mistakes_keep_each_class_most_confident_errors_across_batches():
    from dltemplate.image.callbacks.images import Mistakes

    torch.manual_seed(0)
    mistakes = Mistakes(max_images=4, to_view=lambda images: images.cpu())
    seen = []
    for _ in range(3):
        images, probs = torch.rand(10, 1, 2, 2), torch.softmax(torch.randn(10, 3) * 3, dim=1)
        target = torch.randint(0, 3, (10,))
        mistakes.update(images, probs, target)
        confidence, predicted = probs.max(dim=1)
        seen += [
            (float(c), img, int(p), int(t))
            for c, img, p, t in zip(confidence, images, predicted, target, strict=True)
            if p != t
        ]
    expected_by_class = {c: sorted((m for m in seen if m[3] == c), key=lambda m: -m[0]) for c in range(3)}
    expected, queues = [], [list(expected_by_class[c]) for c in range(3)]
    while len(expected) < 4 and any(queues):
        for queue in queues:
            if queue and len(expected) < 4:
                expected.append(queue.pop(0))
    got = mistakes.compute()
    assert [(round(c, 5), p, t) for c, _, p, t in got] == [(round(c, 5), p, t) for c, _, p, t in expected]
    for (_, image, _, _), (_, want, _, _) in zip(got, expected, strict=True):
        torch.testing.assert_close(image, want)


@pytest.mark.parametrize("name", ["val", "valid", "validation"])
def test_a_train_and_val_folder_without_test_uses_val_as_the_test_split(tmp_path, name):
    root = write_image_folder(tmp_path / "pets", per_class=8)
    (root / "test").rename(root / name)
    dm = folder_module(root, tmp_path)
    dm.setup("fit")
    assert (
        dm.hparams.test_folder == name
        and f"{root}/{name} holds the held-out images" in dm.inferred["test_folder"].reason
    )
    assert len(dm.test_set) == 8  # 4 per class, from <root>/<name>


def test_the_test_folder_can_be_named_and_a_root_without_one_says_how(tmp_path):
    root = write_image_folder(tmp_path / "pets", per_class=8)
    shutil.copytree(root / "test", root / "holdout")
    (root / "test").rename(root / "val")
    dm = folder_module(root, tmp_path, test_folder="holdout")
    dm.setup("fit")
    assert "test_folder" not in dm.inferred and len(dm.test_set) == 8  # explicit: nothing inferred
    shutil.rmtree(root / "val")
    shutil.rmtree(root / "holdout")
    with pytest.raises(
        FileNotFoundError,
        match=r"has no test folder \(test/, val/, valid/, validation/\); it has \['train'\].*data.test_folder=<name>",
    ):
        folder_module(root, tmp_path).setup("fit")
    with pytest.raises(FileNotFoundError, match=r"data.test_folder=holdout: .* is not a folder"):
        folder_module(root, tmp_path, test_folder="holdout").setup("fit")


def test_training_inputs_are_a_class_balanced_sample_titled_with_their_classes():
    from dltemplate.image.callbacks.images import balanced_indices, labelled_grid

    targets = torch.tensor([0, 0, 0, 0, 0, 0, 1, 0, 1, 0])  # a batch mostly of class 0
    chosen = balanced_indices(targets, 4)
    assert chosen == [0, 6, 1, 8]  # classes in turn while both last
    assert targets[chosen].tolist() == [0, 1, 0, 1]
    assert balanced_indices(targets, 32) == [0, 6, 1, 8, 2, 3, 4, 5, 7, 9]  # then the rest
    figure = labelled_grid(torch.rand(4, 3, 8, 8), ["cat", "dog", "cat", "dog"], "training inputs")
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert titles == ["cat", "dog", "cat", "dog"]


@pytest.mark.slow  # seconds each (whole runs, or every net or family): CI runs the slow tests too
@pytest.mark.parametrize("layout", ["classes", "test"])
def test_evaluating_on_another_labelled_folder_needs_no_train_split(make_cfg, tmp_path, layout):
    import shutil

    from dltemplate.evaluate import evaluate

    write_image_folder(tmp_path / "data" / "cifar2")
    result = train(make_cfg("task=cifar2", "trainer.max_epochs=1", "net=simple_cnn", "data.batch_size=8", "test=false"))
    other = tmp_path / "data" / "other"  # <other>/<class>/* or <other>/test/<class>/*, no train split
    shutil.copytree(tmp_path / "data" / "cifar2" / "test", other / "test" if layout == "test" else other)
    cfg = compose_config(
        CONFIG_DIR,
        [f"ckpt_path={result.best_checkpoint}", f"paths.data_dir={tmp_path / 'data'}", f"+data.root={other}"],
        output_dir=tmp_path / "evaluate",
        config_name="evaluate",
    )
    metrics = evaluate(cfg)
    assert 0 <= metrics["test/acc"] <= 1 and not (other / "train").exists()
