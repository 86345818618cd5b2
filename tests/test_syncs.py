"""Training steps that never wait for the device: host synchronisations counted on a CPU, per task family.

See `tests/sync_counter.py` for what counts. Each family trains with its task's own data module, net,
module and callbacks, with batches small enough that an epoch holds several steps; the counter
counts steps 20-60 between epoch boundaries. The text family runs with dense embedding gradients,
the path every accelerator takes (`dense_gradients_where_needed`); one process on a CPU keeps
sparse ones, whose flat bag and row sums depend on the data (harmless there: the CPU is the host).
"""

import pytest

from dltemplate.config import compose_config
from dltemplate.data.batches import DeviceBatches
from dltemplate.train import train
from tests.datasets import provide_task_data
from tests.helpers import CONFIG_DIR, TASKS
from tests.sync_counter import SyncCounter

MAX_PER_STEP = 0.1

# family → (task, overrides giving several steps per epoch). The reads allowed are every
# trainer.log_every_n_steps (50) steps: about 3 in the 40 steps counted, so epochs must hold enough
# whole steps (each epoch boundary leaves one step uncounted) for 3 reads to stay under the bar
FAMILIES = {
    "tabular": ("titanic", ["data.batch_size=32"]),
    "image": ("cifar2", ["data.batch_size=4", "net.widths=[8,16,32]"]),
    "text": ("imdb", ["data.batch_size=8", "net.sparse=false", "net.buckets=4096", "data.val_fraction=0.1"]),
    "series": ("covid", ["data.batch_size=4"]),
    "regression": ("linear_regression", ["data.batch_size=32"]),
}


def run_counted(
    task: str, overrides: list[str], tmp_path, counter: SyncCounter | None = None, steps: int = 62, callbacks=()
) -> tuple[SyncCounter, object]:
    """Train `task` for `steps` steps with `counter` (steps 20-60 by default) among its callbacks."""
    data = provide_task_data(task, tmp_path / "data")
    cfg = compose_config(
        CONFIG_DIR,
        [
            f"task={task}",
            f"paths.data_dir={tmp_path / 'data'}",
            f"paths.log_dir={tmp_path / 'logs'}",
            f"+trainer.max_steps={steps}",
            "trainer.max_epochs=1000",
            "test=false",
            *data,
            *overrides,
        ],
        output_dir=tmp_path / "run",
    )
    counter = counter or SyncCounter()
    result = train(cfg, callbacks=[counter, *callbacks])
    return counter, result


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_training_steps_do_not_wait_for_the_device(family, tmp_path):
    task, overrides = FAMILIES[family]
    if task not in TASKS:
        pytest.skip(f"task {task} is not in this project")
    counter, result = run_counted(task, overrides, tmp_path)
    assert counter.steps >= 20, f"only {counter.steps} whole training steps were counted"
    assert counter.per_step <= MAX_PER_STEP, counter.report()
    # the data that fits lives where the net trains, and its batches are drawn there
    loader = result.datamodule.train_dataloader()
    assert isinstance(loader, DeviceBatches)
    assert loader.device == result.module.device


def test_the_counter_sees_a_read_in_a_training_step(tmp_path):
    """The counter is not blind: a module that reads its loss every step is counted once per step."""
    from lightning.pytorch import Callback

    class ReadsLoss(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            outputs["loss"].item()

    available = [FAMILIES[f] for f in ("regression", "tabular", "series", "text", "image") if FAMILIES[f][0] in TASKS]
    if not available:
        pytest.skip("none of the families' reference tasks is in this project")
    task, overrides = available[0]  # several steps per epoch
    counter, _ = run_counted(task, overrides, tmp_path, SyncCounter(first=5, last=25), 30, [ReadsLoss()])
    assert counter.steps >= 10
    reads = sum(n for site, n in counter.sites.items() if "test_syncs.py" in site) / counter.steps
    assert reads == 1.0, counter.report()
