"""Real multi-process launches on the CPU (gloo): Lightning's own DDP processes, torchrun, two "nodes".

Each produces one run directory, and its test metrics are exact: the 81 test rows do not divide by
the number of processes, and a padded sampler would count one row twice.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from lightning.pytorch import Trainer

from dltemplate.checkpoint import restore
from dltemplate.rundir import RESULT_FILE
from tests.datasets import write_titanic
from tests.helpers import ROOT, run_script

pytestmark = pytest.mark.slow

TITANIC = ["task=titanic", "trainer.max_epochs=2", "callbacks.figures=null", "callbacks.histograms=null"]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    write_titanic(tmp_path / "data" / "titanic", n_train=240, n_test=81)
    return tmp_path / "data"


def single_process_test_metrics(run_dir: Path, data_dir: Path) -> dict[str, float]:
    """The run's best checkpoint tested again in one process: each test row exactly once."""
    record = json.loads((run_dir / RESULT_FILE).read_text())
    module, datamodule, _ = restore(record["best_checkpoint"], paths={"data_dir": str(data_dir), "cache_dir": "x"})
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    return trainer.test(module, datamodule)[0]


def assert_one_exact_run(runs_root: Path, data_dir: Path) -> None:
    runs = [p.parent for p in runs_root.rglob(RESULT_FILE)]
    assert len(runs) == 1, runs
    record = json.loads((runs[0] / RESULT_FILE).read_text())
    assert record["status"] == "ok"
    single = single_process_test_metrics(runs[0], data_dir)
    for name in ("test/acc", "test/auroc", "test/f1"):
        assert record["metrics"][name] == pytest.approx(single[name], abs=1e-6), name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_lightning_ddp_processes_test_every_row_once(tmp_path, data_dir):
    result = run_script(
        ["train.py", *TITANIC, "trainer=ddp_cpu", f"paths.data_dir={data_dir}", f"hydra.run.dir={tmp_path / 'run'}"]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_one_exact_run(tmp_path / "run", data_dir)


def test_torchrun_with_two_processes(tmp_path, data_dir):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        str(ROOT / "train.py"), *TITANIC, "trainer=ddp_cpu", f"paths.data_dir={data_dir}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_one_exact_run(tmp_path / "run", data_dir)


def test_two_nodes_on_the_loopback_interface(tmp_path, data_dir):
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    nodes = [
        subprocess.Popen(
            [
                sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
                f"--node-rank={rank}", "--master-addr=127.0.0.1", f"--master-port={port}",
                str(ROOT / "train.py"), *TITANIC, "trainer=ddp_cpu", "trainer.devices=1", "trainer.num_nodes=2",
                f"paths.data_dir={data_dir}", f"hydra.run.dir={tmp_path / 'run'}",
            ],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in (0, 1)
    ]  # fmt: skip
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in outputs[1]  # the second node joined as the second process
    assert_one_exact_run(tmp_path / "run", data_dir)


@pytest.fixture(scope="module")
def slurm_cluster():
    """A one-node SLURM cluster on this machine, started by the repository's own script."""
    script = ROOT / ".ci" / "slurm-local.sh"
    started = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True, timeout=600)
    if started.returncode != 0:
        pytest.skip(f"no local SLURM cluster here (needs root and Debian's slurm-wlm): {started.stderr[-500:]}")
    conf = started.stdout.strip().splitlines()[-1].split("=", 1)[1]
    yield conf
    subprocess.run(["bash", str(script), "stop"], timeout=60)


def test_a_sweep_runs_as_slurm_jobs_through_the_submitit_launcher(tmp_path, slurm_cluster):
    env = {**os.environ, "SLURM_CONF": slurm_cluster, "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0",
        "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10",
        "task=rings", "trainer.max_epochs=1", "module.optimizer.lr=1e-3,1e-2", f"paths.log_dir={tmp_path}",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (summary,) = tmp_path.glob("rings/multiruns/*/summary.csv")
    lines = summary.read_text().splitlines()
    assert len(lines) == 3 and all(",ok," in line for line in lines[1:])
    assert len(list(summary.parent.glob(".submitit/*/*_log.out"))) == 2  # each job ran as its own SLURM job


def test_processes_that_prepare_data_together_fetch_one_at_a_time(tmp_path):
    """torchrun and SLURM start every rank themselves: each calls prepare_data before any process group exists."""
    import threading
    import time

    from dltemplate.data.tensors import TensorDataModule

    events: list[str] = []

    class Fetching(TensorDataModule):
        def fetch_data(self) -> None:
            events.append("start")
            time.sleep(0.2)
            if not (tmp_path / "file").exists():
                (tmp_path / "file").write_text("fetched")
                events.append("fetched")
            events.append("end")

    threads = [threading.Thread(target=Fetching(batch_size=7).prepare_data) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert events == ["start", "fetched", "end", "start", "end", "start", "end"]
