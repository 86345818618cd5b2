"""Robust losses on a regression target with outliers: the same run with module.loss=mse and =huber.

    DATA_DIR=../shared/data python bench/outliers.py --seeds 3

Takes a real table (default: the UCI bike-sharing daily counts, target `cnt`), holds out the last
20% of its rows as a clean test file, and in the training rows replaces a `--fraction` of the
targets by `--scale` times their value (gross recording errors). Then trains `task=tabular_regression`
on the contaminated training file once per loss and prints bench/run.py's row for each: the test
MAE is measured on the clean rows. Extra arguments are Hydra overrides for both runs.
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data_dir = Path(os.environ.get("DATA_DIR", "data"))
    parser.add_argument("--source", type=Path, default=data_dir / "byod" / "bike_sharing_day.csv")
    parser.add_argument("--target", default="cnt")
    parser.add_argument("--drop", default="instant,dteday,casual,registered", help="columns left out (ids, leaks)")
    parser.add_argument("--fraction", type=float, default=0.05, help="share of training targets corrupted")
    parser.add_argument("--scale", type=float, default=10.0, help="a corrupted target is this times the true one")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--losses", default="mse,huber")
    args, overrides = parser.parse_known_args()

    frame = pd.read_csv(args.source)
    cut = int(len(frame) * 0.8)
    train, test = frame.iloc[:cut].copy(), frame.iloc[cut:]
    rng = np.random.default_rng(0)
    corrupted = rng.choice(len(train), size=round(len(train) * args.fraction), replace=False)
    train.iloc[corrupted, train.columns.get_loc(args.target)] *= args.scale
    folder = Path("logs") / "bench" / "outlier_data"
    folder.mkdir(parents=True, exist_ok=True)
    train.to_csv(folder / "train.csv", index=False)
    test.to_csv(folder / "test.csv", index=False)
    print(f"{args.source}: {len(train)} training rows ({len(corrupted)} targets × {args.scale}), {len(test)} test rows")
    for loss in args.losses.split(","):
        command = [
            sys.executable, str(HERE / "run.py"), "--seeds", str(args.seeds), "task=tabular_regression",
            f"data.train_file={folder / 'train.csv'}", f"data.test_file={folder / 'test.csv'}",
            f"data.target={args.target}", f"data.drop=[{args.drop}]", f"module.loss={loss}", *overrides,
        ]  # fmt: skip
        rows = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        print("\n".join(line for line in rows.splitlines() if line.startswith("|")))


if __name__ == "__main__":
    main()
