"""Measure the HTTP server: requests per second and p50/p99 latency, with batching on and off.

    DATA_DIR=../shared/data python bench/serve.py titanic
    DATA_DIR=../shared/data python bench/serve.py imdb --train trainer.max_epochs=1
    DATA_DIR=../shared/data python bench/serve.py titanic --ckpt logs/titanic/runs/<run>

Without --ckpt, the task is trained first (with the overrides after --train). Requests are real
inputs, one per request: Titanic's test.csv rows, IMDB's test reviews. --clients threads send
--requests requests in all to `python serve.py` on 127.0.0.1, once with batching=true and once
with batching=false, after --warmup requests that are not counted. Prints one Markdown table.
"""

import argparse
import http.client
import json
import os
import platform
import statistics
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dltemplate.config import compose_config
from dltemplate.extras.serve import free_port, local_server
from dltemplate.text.data.text_files import read_aclimdb
from dltemplate.train import train

ROOT = Path(__file__).resolve().parents[1]


def payloads(task: str, data_dir: Path, count: int) -> list[bytes]:
    """`count` request bodies of one real input each, cycling through the test split."""
    if task == "titanic":
        frame = pd.read_csv(data_dir / "titanic" / "test.csv").drop(columns="Survived", errors="ignore")
        rows = json.loads(frame.to_json(orient="records"))
        bodies = [{"rows": [row]} for row in rows]
    elif task == "imdb":
        texts = read_aclimdb(data_dir / "imdb" / "aclImdb_v1.tar.gz", ["neg", "pos"])["test"][0]
        picks = np.random.default_rng(0).choice(len(texts), size=min(count, len(texts)), replace=False)
        bodies = [{"texts": [texts[i]]} for i in picks]
    else:
        raise SystemExit(f"bench/serve.py knows the inputs of titanic and imdb, not {task!r}")
    return [json.dumps(bodies[i % len(bodies)]).encode() for i in range(count)]


def load(port: int, bodies: list[bytes], clients: int) -> tuple[float, list[float]]:
    """Send `bodies` from `clients` threads (keep-alive connections); return wall seconds and latencies."""
    latencies: list[float] = []
    lock = threading.Lock()
    shares = [bodies[i::clients] for i in range(clients)]

    def client(share: list[bytes]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine = []
        for body in share:
            started = time.perf_counter()
            connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200:
                raise RuntimeError(f"status {response.status}: {answer[:300]!r}")
            mine.append(time.perf_counter() - started)
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(share,)) for share in shares]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies


def checkpoint(task: str, overrides: list[str]) -> str:
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    probe = compose_config(ROOT / "conf", [f"task={task}", *overrides])
    output_dir = Path(probe.paths.log_dir) / "bench" / f"serve_{task}" / stamp
    cfg = compose_config(ROOT / "conf", [f"task={task}", *overrides, "test=false"], output_dir=output_dir)
    return train(cfg).best_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=["titanic", "imdb"])
    parser.add_argument("--ckpt", help="a checkpoint or run directory; default: train the task first")
    parser.add_argument("--train", nargs="*", default=[], help="overrides for that training run")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=800, help="requests per measurement")
    parser.add_argument("--warmup", type=int, default=50, help="requests sent first, not counted")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout", type=float, default=0.01)
    args = parser.parse_args()

    data_dir = Path(os.environ.get("DATA_DIR", "data"))
    ckpt = args.ckpt or checkpoint(args.task, args.train)
    bodies = payloads(args.task, data_dir, args.requests + args.warmup)
    rows = []
    for batching in (True, False):
        port = free_port()
        command = [
            sys.executable,
            "serve.py",
            f"ckpt_path={ckpt}",
            f"port={port}",
            f"batching={str(batching).lower()}",
            f"max_batch_size={args.max_batch_size}",
            f"batch_timeout={args.batch_timeout}",
            f"paths.data_dir={data_dir.resolve()}",
            "hydra.run.dir=logs/bench/serve/${now:%Y-%m-%d_%H-%M-%S_%f}",
        ]
        with local_server(command, port, cwd=ROOT):
            load(port, bodies[: args.warmup], args.clients)
            wall, latencies = load(port, bodies[args.warmup :], args.clients)
        quantiles = statistics.quantiles(latencies, n=100)
        rows.append(
            {
                "task": args.task,
                "batching": f"on (≤{args.max_batch_size}, {args.batch_timeout * 1000:g} ms)" if batching else "off",
                "clients": args.clients,
                "requests": len(latencies),
                "req/s": f"{len(latencies) / wall:.1f}",
                "p50 ms": f"{quantiles[49] * 1000:.1f}",
                "p99 ms": f"{quantiles[98] * 1000:.1f}",
            }
        )
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    print(f"\n{datetime.now():%Y-%m-%d}, {machine}, checkpoint {ckpt}\n")
    print("| " + " | ".join(rows[0]) + " |")
    print("| " + " | ".join("---" for _ in rows[0]) + " |")
    for row in rows:
        print("| " + " | ".join(str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
