"""Benchmark one task configuration on real data and print one table row.

    DATA_DIR=../shared/data python bench/run.py task=rings
    DATA_DIR=../shared/data python bench/run.py --seeds 3 task=titanic net=mlp_seed

Options before the overrides: --seeds N (mean ± sd over seeds 1..N), --csv PATH (append the
results, one line per value).
Seconds per epoch are wall-clock, training plus validation: the median over epochs 2..N; train
samples/s is the training split's size over that (so it includes the validation time).
Works under trainer=ddp too (Lightning re-runs this script in the other processes; rank 0 prints).
Everything else is a Hydra override, exactly as for train.py. Runs go to logs/bench/.
"""

import argparse
import csv
import os
import platform
import statistics
import time
from datetime import datetime
from pathlib import Path

import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only

from dltemplate.callbacks.timing import EpochTimer
from dltemplate.config import compose_config
from dltemplate.train import train

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


def run_once(overrides: list[str], seed: int, stamp: str) -> dict[str, float]:
    """Train with `overrides` and `seed`; return test metrics plus epochs and seconds per epoch."""
    probe = compose_config(CONFIG_DIR, overrides)
    output_dir = Path(probe.paths.log_dir) / "bench" / probe.task_name / f"{stamp}_seed{seed}"
    cfg = compose_config(CONFIG_DIR, [*overrides, f"seed={seed}"], output_dir=output_dir)
    result = train(cfg)
    timer = next((c for c in result.trainer.callbacks if isinstance(c, EpochTimer)), None)
    if timer is None:
        raise RuntimeError("bench needs the epoch_timer callback (conf/callbacks/default.yaml)")
    epochs = result.trainer.current_epoch
    # the best validation value of the monitored metric: compare configurations on this, not on test
    row = {
        k: v for k, v in result.metrics.items() if (k.startswith("test/") and k != "test/loss") or k.endswith("_best")
    }
    steady = statistics.median(timer.durations[1:] or timer.durations)  # the first epoch includes warm-up
    samples = len(result.trainer.datamodule.train_set)  # all ranks together
    return {
        **row,
        "epochs": epochs,
        "s/epoch": steady,
        "train samples/s": samples / steady,
        "data s": result.data_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=1, help="runs with seeds 1..N; reports mean ± sd")
    parser.add_argument("--csv", type=Path, help="also append the row to this CSV file")
    args, overrides = parser.parse_known_args()

    # under trainer=ddp Lightning re-runs this script in the other processes: they inherit the stamp
    stamp = os.environ.setdefault("DLTEMPLATE_BENCH_STAMP", datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    started = time.perf_counter()
    runs = [run_once(overrides, seed, stamp) for seed in range(1, args.seeds + 1)]
    wall = time.perf_counter() - started
    if rank_zero_only.rank != 0:
        return

    def summary(key: str) -> str:
        values = [r[key] for r in runs]
        if all(isinstance(v, int) for v in values) and len(set(values)) == 1:
            return str(values[0])
        mean = statistics.fmean(values)
        return f"{mean:.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{mean:.4f}"

    metric_keys = sorted(k for k in runs[0] if k.endswith("_best")) + sorted(
        k for k in runs[0] if k.startswith("test/")
    )
    machine = f"{platform.machine()} {torch.get_num_threads()} threads" + (
        f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", CPU"
    )
    row = {
        "date": stamp[:10],
        "machine": machine,
        "config": " ".join(overrides) or "(defaults)",
        "seeds": args.seeds,
        "epochs": summary("epochs"),
        "s/epoch": summary("s/epoch"),
        "train samples/s": f"{statistics.fmean(r['train samples/s'] for r in runs):.0f}",
        # data preparation: the first run may fill a cache (decoding, tokenising) that later runs reuse
        "data s (1st / later)": f"{runs[0]['data s']:.1f} / "
        + (f"{statistics.fmean(r['data s'] for r in runs[1:]):.1f}" if len(runs) > 1 else "-"),
        **{k: summary(k) for k in metric_keys},
        "wall s": f"{wall:.1f}",
    }
    print("| " + " | ".join(row) + " |")
    print("| " + " | ".join("---" for _ in row) + " |")
    print("| " + " | ".join(str(v) for v in row.values()) + " |")
    if args.csv:  # long format, one line per value: rows of different tasks append to one file
        new = not args.csv.exists()
        with args.csv.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["date", "machine", "config", "seeds", "key", "value"])
            for key in ("epochs", "s/epoch", "train samples/s", "data s (1st / later)", *metric_keys, "wall s"):
                writer.writerow([row["date"], row["machine"], row["config"], row["seeds"], key, row[key]])


if __name__ == "__main__":
    main()
