"""Seconds per epoch on cifar2 with the book's CNN: three pipelines side by side, same images and net.

    DATA_DIR=../shared/data python bench/image_speed.py [--epochs 4] [--batch-size 50] [--device cuda]

1. book:      a plain PyTorch loop over torchvision ImageFolder + ToTensor (JPEGs decoded every epoch),
              DataLoader with num_workers=3 as in the book
2. template:  `train.py task=cifar2 net=simple_cnn` with the same batch size and no augmentation
              (the book had none), with everything the task does: metrics, TensorBoard, figures,
              checkpoints
3. plain:     a plain PyTorch loop over the template's cached uint8 tensors: the template's overhead
4. bare:      the template with its logger and callbacks switched off: Lightning's own overhead

All three train on the template's training split and validate on its validation split, with AdamW
at the task's learning rate. An epoch is training plus validation. The machine's speed drifts by
±10% within minutes, so the pipelines run in interleaved rounds (--rounds) and each reports the
median over all its epochs but the first of each round (warm-up).
"""

import argparse
import statistics
import time
from datetime import datetime
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torchmetrics.classification import BinaryAccuracy
from torchvision import datasets, transforms

from dltemplate.callbacks.timing import EpochTimer
from dltemplate.config import compose_config
from dltemplate.image.data.images import ImageDataModule
from dltemplate.image.nets.simple_cnn import SimpleCNN
from dltemplate.train import train

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


def run_epochs(epochs: int, train_batches, val_batches, lr: float, device: torch.device) -> list[float]:
    """A plain training loop; returns each epoch's seconds (training and validation)."""
    torch.manual_seed(0)
    net = SimpleCNN().to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    accuracy, seconds = BinaryAccuracy().to(device), []
    for _ in range(epochs):
        start = time.perf_counter()
        net.train()
        for x, y in train_batches():
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)  # no-ops when already there
            logits = net(x).squeeze(1)
            loss = F.binary_cross_entropy_with_logits(logits, y.float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            accuracy.update(logits.detach().sigmoid(), y)
        accuracy.compute(), accuracy.reset()
        net.eval()
        with torch.no_grad():
            for x, y in val_batches():
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                accuracy.update(net(x).squeeze(1).sigmoid(), y)
        accuracy.compute(), accuracy.reset()  # (reads the device: the epoch's work is done)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per pipeline and round")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the three pipelines")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--book-workers", type=int, default=3, help="DataLoader workers of the book's pipeline")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: the plain loops' tensors live there too")
    args = parser.parse_args()
    device = torch.device(args.device)

    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    overrides = [
        "task=cifar2",
        "net=simple_cnn",
        f"data.batch_size={args.batch_size}",
        "data.crop_padding=0",
        "data.horizontal_flip=false",
        "data.storage=memory",
        f"trainer.max_epochs={args.epochs}",
        "test=false",
        *(["trainer=gpu", "trainer.precision=32-true"] if device.type == "cuda" else []),
    ]
    probe = compose_config(CONFIG_DIR, overrides)
    lr = probe.module.optimizer.lr

    # the template's own split, reused by the two plain loops
    datamodule = ImageDataModule(**{k: v for k, v in probe.data.items() if k != "_target_"})
    datamodule.setup("fit")
    train_set, val_set = datamodule.train_set, datamodule.val_set

    # 1. the book's pipeline: decode JPEGs every epoch
    folder = datasets.ImageFolder(str(Path(probe.data.root) / "train"), transform=transforms.ToTensor())
    split = torch.zeros(len(folder), dtype=torch.bool)  # same files, same order: same split
    split[datamodule.val_positions] = True
    train_idx, val_idx = (~split).nonzero().squeeze(1).tolist(), split.nonzero().squeeze(1).tolist()

    def folder_batches(indices, shuffle):
        return lambda: DataLoader(
            Subset(folder, indices), batch_size=args.batch_size, shuffle=shuffle, num_workers=args.book_workers
        )

    def tensor_batches(dataset, shuffle):
        """A plain loop over the same cached tensors, on the device (uint8 → normalised floats per batch, as
        the template)."""
        images, labels = dataset.images.to(device), dataset.labels.to(device)

        def batches():
            order = torch.randperm(len(labels), device=device) if shuffle else torch.arange(len(labels), device=device)
            for chunk in order.split(args.batch_size):
                yield datamodule.normalize(images[chunk]), labels[chunk]

        return batches

    features_off = [
        "~logger",
        *(f"callbacks.{name}=null" for name in probe.callbacks),
        "trainer.enable_progress_bar=false",
        "trainer.enable_checkpointing=false",
        "+callbacks.timer._target_=dltemplate.callbacks.timing.EpochTimer",
    ]

    def template_epochs(extra: list[str], name: str) -> list[float]:
        output_dir = Path(probe.paths.log_dir) / "bench" / "image_speed" / name
        result = train(compose_config(CONFIG_DIR, [*overrides, *extra], output_dir=output_dir))
        return next(c for c in result.trainer.callbacks if isinstance(c, EpochTimer)).durations[1:]

    book, plain, template, bare = [], [], [], []
    for round_ in range(args.rounds):
        steady = slice(1, None)  # drop each round's first epoch
        plain += run_epochs(args.epochs, tensor_batches(train_set, True), tensor_batches(val_set, False), lr, device)[
            steady
        ]
        template += template_epochs([], f"{stamp}_round{round_}")
        bare += template_epochs(features_off, f"{stamp}_round{round_}_bare")
        book += run_epochs(args.epochs, folder_batches(train_idx, True), folder_batches(val_idx, False), lr, device)[
            steady
        ]

    b, t, p, r = (statistics.median(x) for x in (book, template, plain, bare))
    print(
        f"\ncifar2, SimpleCNN, batch {args.batch_size}, {len(train_set)} training + {len(val_set)} validation images, "
        f"{torch.get_num_threads()} threads, {stamp[:10]}"
    )
    print(f"| pipeline | s/epoch (median of {len(book)} epochs in {args.rounds} rounds) | ratio |")
    print("| --- | --- | --- |")
    book_name = f"book: ImageFolder + ToTensor, plain loop, {args.book_workers} workers"
    print(f"| {book_name} | {b:.2f} | book / template = {b / t:.2f}× |")
    print(f"| template: train.py task=cifar2 net=simple_cnn | {t:.2f} | 1.00 |")
    print(f"| plain loop over the template's cached tensors | {p:.2f} | template / plain = {t / p:.2f} |")
    print(f"| template, logger and callbacks off (Lightning itself) | {r:.2f} | bare / plain = {r / p:.2f} |")


if __name__ == "__main__":
    main()
