"""The template against a plain PyTorch loop on one CUDA GPU: cifar2, a generated 224-px image folder, IMDB.

    DATA_DIR=../shared/data python bench/gpu.py                      # every workload (about 6 min)
    DATA_DIR=../shared/data python bench/gpu.py --only cifar2 img224
    python bench/gpu.py --device cpu --quick                         # a smoke run on tiny generated data

One row per run: s/epoch (median of epochs 2..N, training and validation), train samples/s, GPU busy
% (NVML, sampled every 100 ms while training), peak GPU memory, host synchronisations per training
step (CUDA's sync debug mode over training steps 20-60; "n/a" on a CPU) and test accuracy. Each
workload runs the template (`trainer=gpu`: bf16-mixed) in fp32 and bf16, with `compile=true`, and
the same net in a plain PyTorch loop: the same device-resident tensors, augmentation, loss,
optimizer and batch size, no Lightning. cifar2 and IMDB are read from DATA_DIR (cifar2/,
imdb/); the image folder (`--images` training images of 224×224, two classes) is generated once
under the cache. Runs go to logs/bench/gpu/.
"""

import argparse
import os
import statistics
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch import Callback
from PIL import Image

from dltemplate.build import build_datamodule, build_module
from dltemplate.callbacks.timing import EpochTimer
from dltemplate.config import compose_config
from dltemplate.data.batches import DeviceBatches, rows_of
from dltemplate.image.data.images import ImageDataModule
from dltemplate.train import train

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"

WORKLOADS = {  # name → overrides of the template run (the plain loop builds the same data and net)
    "cifar2": ["task=cifar2", "trainer.max_epochs=6"],
    "img224": ["task=images", "net=timm", "net.model_name=resnet18", "trainer.max_epochs=4"],
    "imdb": ["task=imdb"],
}
VARIANTS = {  # name → overrides on top of trainer=gpu (bf16-mixed)
    "bf16": [],
    "fp32": ["trainer.precision=32-true"],
    "bf16+compile": ["compile=true"],
}


# ---- what is measured ----------------------------------------------------------------------------


class Busy:
    """GPU utilisation (%) sampled every `every` seconds in a thread, through NVML."""

    def __init__(self, device: torch.device, every: float = 0.1) -> None:
        self.device, self.every, self.samples = device, every, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.samples.append(torch.cuda.utilization(self.device))  # NVML (the nvidia-ml-py package)
            except Exception:  # no NVML: the column says n/a
                return

    def __enter__(self) -> "Busy":
        if self.device.type == "cuda":
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    @property
    def percent(self) -> str:
        return f"{statistics.fmean(self.samples):.0f}" if self.samples else "n/a"


class CudaSyncs(Callback):
    """Host synchronisations per training step over steps `first`..`last`, from CUDA's sync debug mode."""

    def __init__(self, first: int = 20, last: int = 60) -> None:
        self.first, self.last, self.count, self.steps = first, last, 0, 0
        self._caught: warnings.catch_warnings | None = None
        self._records: list | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not torch.cuda.is_available():
            return
        step = trainer.global_step
        if step == self.first and self._caught is None:
            self._caught = warnings.catch_warnings(record=True)
            self._records = self._caught.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        elif step >= self.last:
            self._close(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._close(trainer)

    def _close(self, trainer) -> None:
        if self._caught is None:
            return
        torch.cuda.set_sync_debug_mode(0)
        self._caught.__exit__(None, None, None)
        self.count = sum("synchroniz" in str(r.message) for r in self._records or [])
        self.steps, self._caught = max(trainer.global_step - self.first, 1), None

    @property
    def per_step(self) -> str:
        return f"{self.count / self.steps:.2f}" if self.steps else "n/a"


def peak_memory(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB" if device.type == "cuda" else "n/a"


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


# ---- the two ways to train -----------------------------------------------------------------------


def template_run(overrides: list[str], device: torch.device, out: Path) -> dict[str, str]:
    """train.py with `overrides`, in this process; the row of its figures."""
    cfg = compose_config(CONFIG_DIR, overrides, output_dir=out)
    syncs = CudaSyncs()
    reset_peak(device)
    with Busy(device) as busy:
        result = train(cfg, callbacks=[syncs])
    timer = next(c for c in result.trainer.callbacks if isinstance(c, EpochTimer))
    steady = statistics.median(timer.durations[1:] or timer.durations)
    samples = len(result.datamodule.train_set)
    return {
        "s/epoch": f"{steady:.3f}",
        "samples/s": f"{samples / steady:,.0f}",
        "busy %": busy.percent,
        "peak mem": peak_memory(device),
        "syncs/step": syncs.per_step,
        "test acc": f"{result.metrics.get('test/acc', float('nan')):.4f}",
    }


def plain_run(
    overrides: list[str], device: torch.device, bf16: bool, epochs: int, out: Path, max_batches: int | None = None
) -> dict[str, str]:
    """The same data, net, loss, optimizer and batch size in a plain loop over device-resident tensors."""
    cfg = compose_config(CONFIG_DIR, overrides, output_dir=out)
    torch.manual_seed(0)
    dm = build_datamodule(cfg)
    module = build_module(cfg, dm).to(device)
    train_rows, val_rows = rows_of(dm.train_set).to(device), rows_of(dm.val_set).to(device)
    optimizer = instantiate(cfg.module.optimizer)(module.parameters())
    prepare: Callable = (lambda x: dm.normalize(dm.augment(x))) if isinstance(dm, ImageDataModule) else (lambda x: x)
    evaluate: Callable = dm.normalize if isinstance(dm, ImageDataModule) else (lambda x: x)
    if isinstance(dm, ImageDataModule):
        module = module.to(memory_format=torch.channels_last)
    batch = cfg.data.batch_size
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=bf16)
    seconds = []
    reset_peak(device)
    with Busy(device) as busy:
        for epoch in range(epochs):
            start = time.perf_counter()
            module.train()
            for i, (x, y) in enumerate(DeviceBatches(train_rows, batch, shuffle=True, seed=epoch)):
                if max_batches is not None and i >= max_batches:
                    break
                with autocast:
                    loss = module.loss_fn(module(prepare(x)), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            module.eval()
            with torch.no_grad(), autocast:
                for x, _ in DeviceBatches(val_rows, batch, shuffle=False):
                    module(evaluate(x))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds.append(time.perf_counter() - start)
    steady = statistics.median(seconds[1:] or seconds)
    return {
        "s/epoch": f"{steady:.3f}",
        "samples/s": f"{len(train_rows) / steady:,.0f}",
        "busy %": busy.percent,
        "peak mem": peak_memory(device),
        "syncs/step": "0 by design",
        "test acc": "-",
    }


# ---- data ------------------------------------------------------------------------------------------


def image_folder(root: Path, n_train: int, n_test: int, size: int) -> Path:
    """Two classes of generated JPEGs (stripes and rings with noise), written once."""
    done = root / ".complete"
    if done.exists():
        return root
    yy, xx = np.mgrid[0:size, 0:size] / size
    for split, count, offset in (("train", n_train, 0), ("test", n_test, 10**6)):
        for i in range(count):
            rng = np.random.default_rng(i + offset)
            label = "stripes" if i % 2 else "rings"
            grid = xx if label == "stripes" else np.hypot(xx - 0.5, yy - 0.5)
            freq, phase = rng.uniform(2, 9, 3), rng.uniform(0, 6.3, 3)
            image = np.stack([np.sin(freq[k] * grid * 6.3 + phase[k]) for k in range(3)], -1)
            image = image + rng.normal(0, 0.3, image.shape)
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip((image + 1) * 110, 0, 255).astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)
    done.touch()
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=sorted(WORKLOADS), help="workloads to run (default: all)")
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu for a smoke run")
    parser.add_argument("--images", type=int, default=4000, help="training images of the generated 224-px folder")
    parser.add_argument("--quick", action="store_true", help="tiny data and 2 epochs: checks that every stage runs")
    args, extra = parser.parse_known_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here: pass --device cpu for a smoke run")

    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    cache = Path(os.environ.get("DLTEMPLATE_BENCH_CACHE", Path(tempfile.gettempdir()) / "dltemplate-bench"))
    images = args.images if not args.quick else 64
    folder = image_folder(cache / f"img224-{images}", images, max(images // 10, 16), 224 if not args.quick else 32)
    trainer = ["trainer=gpu"] if device.type == "cuda" else ["trainer=cpu"]
    limits = ["trainer.limit_train_batches=8", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]
    quick = ["trainer.max_epochs=2", "data.batch_size=16", *limits] if args.quick else []
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        print(f"{name}, torch {torch.__version__}")
    rows = []
    tasks = {p.stem for p in (CONFIG_DIR / "task").glob("*.yaml")}  # a generated project may lack one
    for workload in args.only or [w for w in WORKLOADS if WORKLOADS[w][0][5:] in tasks]:
        base = [*WORKLOADS[workload], *trainer, *extra]
        if workload == "img224":
            base.append(f"data.root={folder}")
        for variant, settings in VARIANTS.items():
            if device.type == "cpu" and variant != "fp32":
                continue  # bf16 autocast and compile are GPU measurements
            out = Path("logs/bench/gpu") / f"{stamp}_{workload}_{variant}"
            try:
                rows.append((workload, f"template {variant}", template_run([*base, *settings, *quick], device, out)))
            except Exception as error:  # one failing stage does not hide the others' figures
                rows.append((workload, f"template {variant}", {"error": f"{type(error).__name__}: {error}"[:200]}))
        epochs = 2 if args.quick else 4
        for bf16 in [True, False] if device.type == "cuda" else [False]:
            out = Path("logs/bench/gpu") / f"{stamp}_{workload}_plain"
            label = f"plain {'bf16' if bf16 else 'fp32'}"
            try:
                limit = 8 if args.quick else None
                rows.append((workload, label, plain_run([*base, *quick], device, bf16, epochs, out, limit)))
            except Exception as error:
                rows.append((workload, label, {"error": f"{type(error).__name__}: {error}"[:200]}))
    columns = ["s/epoch", "samples/s", "busy %", "peak mem", "syncs/step", "test acc"]
    print("| workload | run | " + " | ".join(columns) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in columns) + " |")
    for workload, label, row in rows:
        cells = [row.get(c, "") for c in columns] if "error" not in row else [row["error"]] + [""] * (len(columns) - 1)
        print(f"| {workload} | {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
