"""Memory and speed as the data grows: the in-memory path against the streamed one.

    python bench/scale.py [--images 20000,100000] [--image-size 32] [--texts 50000,250000] [--steps 200]
    python bench/scale.py --only images --images 5000,20000       (a quicker look)

Generates (once, under --workdir, default /tmp/dltemplate-scale) image folders of each size in
--images (small JPEGs, two classes told apart by colour) and text corpora of each size in --texts
(a CSV with text and label columns), then trains a fixed number of steps on each with
`data.storage=memory` and `data.storage=stream`, each run in its own child process:

    train.py task=images data.root=<folder> net=simple_cnn data.storage=memory|stream
    train.py task=text data.train_file=<csv> data.storage=memory|stream

Each case runs twice: "cold" decodes the data into its cache (memory: one uint8 tensor; stream:
LitData chunks) and "warm" reuses it. Reported per case: samples/s over the warm run's steps after
--warmup, and the training process's peak RSS (`ru_maxrss`, which counts the file pages of mapped
chunks too) and peak anonymous RSS (sampled every 0.1 s: the memory the kernel cannot drop), in the
cold and the warm run. What should hold: the
stream path's peak stays flat as the data grows, at >= 0.8× the memory path's samples/s.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = [f"w{i}" for i in range(2000)]


# ---- data ----------------------------------------------------------------------------------------


def _write_images(job: tuple[Path, int, int, int]) -> None:
    import torch
    from torchvision.io import write_jpeg

    folder, start, count, size = job
    generator = torch.Generator().manual_seed(start)
    base = torch.tensor([[200, 60, 40], [40, 80, 200]], dtype=torch.int16)
    for i in range(start, start + count):
        label = i % 2
        noise = torch.randint(-60, 60, (3, size, size), generator=generator, dtype=torch.int16)
        image = (base[label][:, None, None] + noise).clamp(0, 255).to(torch.uint8)
        split = "test" if i % 20 in (0, 1) else "train"
        write_jpeg(image, str(folder / split / f"c{label}" / f"{i:07d}.jpg"), quality=90)


def image_folder(workdir: Path, count: int, size: int) -> Path:
    """`<workdir>/images-<count>-<size>/{train,test}/{c0,c1}/*.jpg` (a tenth for test), made once."""
    folder = workdir / f"images-{count}-{size}"
    if (folder / ".complete").is_file():
        return folder
    for split in ("train", "test"):
        for label in ("c0", "c1"):
            (folder / split / label).mkdir(parents=True, exist_ok=True)
    from multiprocessing import Pool

    step = 2000
    jobs = [(folder, start, min(step, count - start), size) for start in range(0, count, step)]
    with Pool(os.cpu_count()) as pool:
        pool.map(_write_images, jobs)
    (folder / ".complete").touch()
    return folder


def text_corpus(workdir: Path, count: int) -> Path:
    """`<workdir>/texts-<count>.csv`: text (40 words) and label; a few words per class carry the signal."""
    import numpy as np
    import pandas as pd

    path = workdir / f"texts-{count}.csv"
    if path.is_file():
        return path
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, count)
    words = rng.integers(0, len(WORDS), (count, 40))
    words[:, :3] = rng.integers(0, 50, (count, 3)) + 50 * labels[:, None]  # w0..w49 vs w50..w99
    texts = [" ".join(WORDS[w] for w in row) for row in words]
    workdir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"text": texts, "label": np.where(labels == 1, "pos", "neg")}).to_csv(path, index=False)
    return path


# ---- one measured run (child process) ------------------------------------------------------------


def child(steps: int, warmup: int, overrides: list[str]) -> None:
    """Train `steps` steps with `overrides`; print one JSON line of what was measured."""
    from lightning.pytorch import Callback

    from dltemplate.config import compose_config
    from dltemplate.train import train

    class StepTimer(Callback):
        def __init__(self) -> None:
            self.start = self.end = 0.0
            self.samples = 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if trainer.global_step == warmup:
                self.start, self.samples = time.perf_counter(), 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.samples += len(batch[-1])
            self.end = time.perf_counter()

    peak_anon = [0.0]

    def sample_anonymous_rss() -> None:
        """Anonymous memory (not file pages the kernel can drop, such as mapped chunks), every 0.1 s."""
        while True:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    peak_anon[0] = max(peak_anon[0], int(line.split()[1]) / 1024)
            time.sleep(0.1)

    if Path("/proc/self/status").is_file():
        threading.Thread(target=sample_anonymous_rss, daemon=True).start()
    started = time.perf_counter()
    log_dir = next(o.split("=", 1)[1] for o in overrides if o.startswith("paths.log_dir="))
    cfg = compose_config(ROOT / "conf", overrides, output_dir=Path(log_dir) / f"run-{os.getpid()}")
    timer = StepTimer()
    train(cfg, callbacks=[timer])
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        "RESULT "
        + json.dumps(
            {
                "samples_per_s": timer.samples / max(timer.end - timer.start, 1e-9),
                "peak_rss_mb": own,
                "peak_anon_mb": peak_anon[0],
                "children_peak_rss_mb": children,
                "wall_s": time.perf_counter() - started,
            }
        ),
        flush=True,
    )


def run_case(steps: int, warmup: int, overrides: list[str]) -> dict:
    command = [sys.executable, __file__, "--child", "--steps", str(steps), "--warmup", str(warmup), "--", *overrides]
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(overrides)} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


# ---- the table ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default="20000,100000", help="image folder sizes (comma-separated)")
    parser.add_argument("--image-size", type=int, default=32, help="side of the generated JPEGs")
    parser.add_argument("--texts", default="50000,250000", help="text corpus sizes (comma-separated)")
    parser.add_argument("--only", choices=["images", "texts"], help="run one half only")
    parser.add_argument("--steps", type=int, default=200, help="training steps per run")
    parser.add_argument("--warmup", type=int, default=20, help="steps not timed")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dltemplate-scale"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.steps, args.warmup, args.overrides)
        return

    cases = []
    if args.only != "texts":
        for count in map(int, args.images.split(",")):
            folder = image_folder(args.workdir, count, args.image_size)
            task = ["task=images", f"data.root={folder}", "net=simple_cnn"]
            cases.append((f"images {count} ({args.image_size}×{args.image_size} JPEG)", task))
    if args.only != "images":
        for count in map(int, args.texts.split(",")):
            # the net's size fixed (by default it grows with the corpus): what grows is then the data's memory
            net = ["net.buckets=262144", "net.embedding_dim=16", "data.max_vocab=20000", "data.max_length=48"]
            cases.append((f"texts {count}", ["task=text", f"data.train_file={text_corpus(args.workdir, count)}", *net]))

    print("| data | storage | samples/s (warm) | peak RSS MB cold / warm | peak anon MB cold / warm | cold run s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, task in cases:
        for storage in ("memory", "stream"):
            overrides = [
                *task,
                f"data.storage={storage}",
                f"data.batch_size={args.batch_size}",
                f"+trainer.max_steps={args.steps}",
                "trainer.max_epochs=-1",
                "test=false",
                f"paths.cache_dir={args.workdir / 'cache'}",
                f"paths.log_dir={args.workdir / 'logs'}",
            ]
            cold = run_case(args.steps, args.warmup, overrides)
            warm = run_case(args.steps, args.warmup, overrides)
            print(
                f"| {name} | {storage} | {warm['samples_per_s']:.0f} | {cold['peak_rss_mb']:.0f} / "
                f"{warm['peak_rss_mb']:.0f} | {cold['peak_anon_mb']:.0f} / {warm['peak_anon_mb']:.0f} "
                f"| {cold['wall_s']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
