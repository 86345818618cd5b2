"""Experiment tracking: what TensorBoard, MLflow, W&B and CSV receive, read back from their files."""

import re
from pathlib import Path

import pytest
import torch

from dltemplate.callbacks.media import markdown_table, plain_text
from dltemplate.callbacks.summary import COLUMNS, HPARAMS
from dltemplate.checkpoint import load_checkpoint
from dltemplate.config import compose_config
from dltemplate.loggers import MLFlowLogger, metric_name
from dltemplate.resolvers import run_label
from dltemplate.train import train
from tests.helpers import CONFIG_DIR

ALL_LOGGERS = "logger=[tensorboard,mlflow,wandb,csv]"
FEW_BATCHES = ["trainer.limit_train_batches=5", "trainer.limit_val_batches=4", "trainer.limit_test_batches=4"]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """Rings for 3 epochs with lr=0, so the best epoch (0) is not the last (2), logged by all four loggers."""
    tmp = tmp_path_factory.mktemp("tracked")
    overrides = ["task=rings", f"paths.log_dir={tmp}", ALL_LOGGERS, "trainer.max_epochs=3", "module.optimizer.lr=0"]
    cfg = compose_config(CONFIG_DIR, [*overrides, *FEW_BATCHES], output_dir=tmp / "run")
    return train(cfg), tmp


def event_steps(run_dir: Path, plugin: str) -> dict[str, set[int]]:
    """Steps at which each tag of a TensorBoard plugin ("images", "scalars", ...) was written."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps: dict[str, set[int]] = {}
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == plugin:
                    steps.setdefault(value.tag, set()).add(event.step)
    return steps


def hparams_records(run_dir: Path) -> tuple:
    """(experiment definition, session start info) of a run's HPARAMS records."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import metadata

    found = {}
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                found[value.tag] = value.metadata.plugin_data.content
    return (
        metadata.parse_experiment_plugin_data(found[metadata.EXPERIMENT_TAG]),
        metadata.parse_session_start_info_plugin_data(found[metadata.SESSION_START_INFO_TAG]),
    )


@pytest.mark.slow  # several seconds: CI runs it, `pytest` alone skips it
def test_figures_are_drawn_at_the_best_and_last_epochs_and_on_the_test_set(tracked_run):
    result, _ = tracked_run
    images = event_steps(Path(result.output_dir), "images")
    assert load_checkpoint(result.best_checkpoint)["epoch"] == 0 and result.trainer.current_epoch == 3
    val_steps = event_steps(Path(result.output_dir), "scalars")["val/acc"]
    assert val_steps == {4, 9, 14}  # Lightning writes epoch n's validation at step 5(n + 1) - 1
    for figure in ("confusion_matrix", "roc", "precision_recall"):
        assert images[f"val/{figure}"] == {4, 14}  # the best epoch (0) and the last (2), beside their metrics
        assert images[f"test/{figure}"] == {15}


@pytest.mark.slow  # seconds each (whole runs, or every net or family): CI runs the slow tests too
def test_hparams_columns_are_the_same_for_runs_of_different_tasks(make_cfg):
    runs = [
        train(make_cfg("task=rings", "debug=limit_batches", run="rings")),
        train(make_cfg("task=linear_regression", "debug=limit_batches", "trainer.max_epochs=1", run="linear")),
    ]
    (rings_exp, rings_start), (linear_exp, linear_start) = (hparams_records(Path(r.output_dir)) for r in runs)
    # whichever run TensorBoard takes the definition from, the columns match; each run's own come first
    assert rings_exp.hparam_infos == linear_exp.hparam_infos
    assert [h.name for h in rings_exp.hparam_infos] == list(HPARAMS)
    for run, experiment in zip(runs, (rings_exp, linear_exp), strict=True):
        columns = [m.name.tag for m in experiment.metric_infos]
        assert sorted(columns) == sorted(COLUMNS)
        shown = columns[:5]  # what TensorBoard shows before the user picks other columns
        assert all(run.metrics.get(c) == run.metrics.get(c) and c in run.metrics for c in shown), shown
        assert any(c.endswith("_best") for c in shown) and any(c.startswith("test/") for c in shown)
    assert "test/mse" not in [m.name.tag for m in rings_exp.metric_infos][:5]  # a classifier has none
    assert [m.name.tag for m in linear_exp.metric_infos][:2] == ["val/mse_best", "test/mse"]  # its monitored metric
    assert rings_start.group_name.startswith("rings · ")  # the row is named by its run directory's name first
    assert rings_start.hparams["task"].string_value == "rings"
    assert linear_start.hparams["net"].string_value == "Linear"
    assert rings_start.hparams["size"].string_value == "hidden=32,32"
    assert rings_start.hparams["lr"].number_value == pytest.approx(0.01)
    assert rings_start.hparams["params"].number_value == 1185
    # the columns read scalars the run wrote: the tested epoch's val metrics, the test metrics
    scalars = event_steps(Path(runs[0].output_dir), "scalars")
    assert {"val/acc_best", "val/loss_best", "test/acc"} <= set(scalars)
    assert runs[0].metrics["val/acc_best"] == pytest.approx(runs[0].metrics["val/acc"])  # the last epoch here


@pytest.mark.slow  # several seconds: CI runs it, `pytest` alone skips it
def test_mlflow_run_has_params_metrics_and_png_artifacts(tracked_run):
    from mlflow.tracking import MlflowClient

    _, tmp = tracked_run
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db")
    (experiment,) = [e for e in client.search_experiments() if e.name == "rings"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # not the GenAI view
    assert run.data.params["task"] == "rings" and run.data.params["optimizer"] == "AdamW"
    assert {"train/loss", "train/lr", "val/acc", "val/acc_best", "test/acc"} <= set(run.data.metrics)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")] == [4, 9, 14]
    artifacts = Path(experiment.artifact_location.removeprefix("file://")) / run.info.run_id / "artifacts"
    assert (artifacts / "config.yaml").is_file()
    pngs = sorted(p.name for p in (artifacts / "images").glob("*.png"))
    assert any(name.startswith("test~confusion_matrix+step+15+") for name in pngs), pngs
    assert any(name.startswith("val~roc+step+4+") for name in pngs), pngs


@pytest.mark.slow  # several seconds: CI runs it, `pytest` alone skips it
def test_wandb_offline_run_holds_metrics_and_media(tracked_run):
    result, _ = tracked_run
    (run_dir,) = (Path(result.output_dir) / "wandb").glob("offline-run-*")
    records = next(run_dir.glob("*.wandb")).read_bytes()  # W&B's protobuf log: keys are plain strings
    for key in (b"train/loss", b"val/acc", b"test/acc", b"val/acc_best", b"task"):
        assert key in records, key
    pngs = list((run_dir / "files" / "media").rglob("*.png"))  # named <tag>_<W&B step>_<hash>.png
    media = {p.parent.name + "/" + p.name.rsplit("_", 2)[0] for p in pngs}
    assert {"test/confusion_matrix", "val/roc", "test/precision_recall"} <= media
    # the run's final trainer/global_step is the trainer's, not that of the last record (the best epoch's, 4)
    assert _last_wandb_value(records, "trainer/global_step") == str(result.trainer.global_step) == "15"


def _last_wandb_value(records: bytes, key: str) -> str | None:
    """The last value written for `key` as a summary item of a W&B log (protobuf: key, then value_json)."""
    name = key.encode()
    item = re.compile(rb"\n" + bytes([len(name)]) + re.escape(name) + rb"\x82\x01(.)", re.S)
    found = [records[m.end() : m.end() + m.group(1)[0]] for m in item.finditer(records)]
    return found[-1].decode() if found else None


@pytest.mark.slow  # several seconds: CI runs it, `pytest` alone skips it
def test_csv_logger_keeps_metrics_and_figure_files(tracked_run):
    result, _ = tracked_run
    csv = Path(result.output_dir) / "csv"
    header = (csv / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "train/lr", "train/epoch", "val/acc", "test/acc"} <= set(header)
    assert (csv / "media" / "test_confusion_matrix" / "step000015.png").is_file()
    assert "task: rings" in (csv / "hparams.yaml").read_text()


def test_lightning_metric_names_become_consistent_tags():
    assert metric_name("train/loss_epoch") == "train/loss"
    assert metric_name("train/loss_step") == "train/loss_step"
    assert metric_name("epoch") == "train/epoch"
    assert metric_name("lr-AdamW") == "train/lr"
    assert metric_name("lr-SGD-momentum") == "train/momentum"
    assert metric_name("lr-AdamW/pg2") == "train/lr/pg2"
    assert metric_name("lr-AdamW/backbone/decayed") == "train/lr/backbone/decayed"
    assert metric_name("lr-SGD/decayed-momentum") == "train/momentum/decayed"
    assert metric_name("train/lr_pg2") == "train/lr/pg2"  # an earlier version's name
    assert metric_name("train/lr") == "train/lr"
    assert metric_name("train/lr/decayed") == "train/lr/decayed"
    assert metric_name("val/acc") == "val/acc"


def test_hparams_rows_are_named_by_what_tells_runs_apart_first():
    from dltemplate.callbacks.summary import session_name

    logs = Path("/data/logs")
    run = logs / "titanic" / "runs" / "2026-12-07_10-00-00_123456_lr=0.01_hidden=64,64"
    assert session_name(run, logs) == "lr=0.01_hidden=64,64 · 2026-12-07 10:00:00.123456 · titanic/runs"
    assert (
        session_name(run.with_name("2026-12-07_10-00-00_123456"), logs) == "2026-12-07 10:00:00.123456 · titanic/runs"
    )
    job = logs / "rings" / "multiruns" / "2026-12-07_10-00-00_123456" / "3_lr=0.1"
    assert session_name(job, logs) == "lr=0.1 · job 3 · rings/multiruns/2026-12-07_10-00-00_123456"


def test_run_labels_say_what_a_command_line_changes():
    overrides = ["task=rings", "paths.log_dir=/tmp/x", "module.optimizer.lr=0.01", "net.hidden=[64,64]"]
    assert run_label(overrides) == "_lr=0.01_hidden=64,64"
    assert run_label(["task=titanic", "data.train_file=data/churn.csv"]) == "_train_file=churn.csv"
    assert run_label(["task=rings"]) == ""
    assert run_label(["module.optimizer.lr=0.0012345678"]) == "_lr=0.00123"  # an Optuna suggestion


def test_runs_of_a_sweep_share_an_mlflow_experiment(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a file store: creating an SQLite store takes seconds
    uri = (tmp_path / "mlruns").as_uri()
    logger = MLFlowLogger(group="sweep_2026", experiment_name="rings", tracking_uri=uri)
    assert logger._experiment_name == "rings/sweep_2026"
    assert MLFlowLogger(experiment_name="rings", tracking_uri=uri)._experiment_name == "rings"


def test_text_tables_are_plain_readable_markdown():
    import pandas as pd

    assert plain_text("Great film.<br /><br />Really &amp; truly") == "Great film. Really & truly"
    table = pd.DataFrame({"P(true class)": [0.0123], "true": ["pos"], "text": ["a | b<br />c"]})
    markdown = markdown_table(table, text_column="text")
    assert markdown.startswith("1. P(true class): **0.012** · true: **pos**")
    assert "<br" not in markdown and "a / b c" in markdown


def test_a_multirun_job_names_its_sweep_as_its_group():
    from hydra.conf import HydraConf
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from dltemplate.resolvers import sweep_group

    assert sweep_group() is None  # a single run
    hydra = OmegaConf.structured(HydraConf)
    hydra.mode, hydra.sweep.dir = RunMode.MULTIRUN, "logs/rings/multiruns/2026-11-25_10-00-00_1"
    HydraConfig.instance().set_config(OmegaConf.create({"hydra": hydra}))
    try:
        assert sweep_group() == "sweep_2026-11-25_10-00-00_1"  # MLflow experiment rings/sweep_..., W&B group
    finally:
        HydraConfig.instance().cfg = None


def test_gradient_norms_are_each_layers_norm_averaged_over_the_steps(monkeypatch):
    from types import SimpleNamespace

    from dltemplate.callbacks import histograms

    logged = {}
    monkeypatch.setattr(histograms, "log_scalars", lambda trainer, values, step: logged.update(values))
    monkeypatch.setattr(histograms, "log_histogram", lambda *args: None)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    trainer = SimpleNamespace(is_global_zero=True, current_epoch=0, max_epochs=1, should_stop=False, global_step=0)
    callback = histograms.ParameterHistograms()
    callback.on_train_epoch_start(trainer, net)
    expected = {"0": 0.0, "2": 0.0}
    for seed in range(3):
        torch.manual_seed(seed)
        net.zero_grad()
        net(torch.randn(5, 3)).pow(2).mean().backward()
        for layer in expected:
            grads = [p.grad for p in net[int(layer)].parameters()]
            expected[layer] += torch.sqrt(sum(g.pow(2).sum() for g in grads)).item() / 3
        callback.on_before_optimizer_step(trainer, net, None)
    callback.on_train_epoch_end(trainer, net)
    assert logged.keys() == {"weights/0/grad_norm", "weights/2/grad_norm"}
    for layer, value in expected.items():
        assert logged[f"weights/{layer}/grad_norm"] == pytest.approx(value, rel=1e-5)


# One process of test_runs_starting_together_into_a_new_mlflow_store_are_all_recorded: waits for the
# common start time, then sets the logger up, logs a metric and ends the run.
_CONCURRENT_RUN = """
import sys, time
from dltemplate.loggers import MLFlowLogger
store, name, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
time.sleep(max(0.0, start - time.time()))
logger = MLFlowLogger(experiment_name="rings", run_name=name, tracking_uri=f"sqlite:///{store}/mlflow.db",
                      artifact_location=f"{store}/mlartifacts")
logger.log_metrics({"val/acc": 0.5}, step=0)
logger.finalize("success")
"""


@pytest.mark.slow  # several seconds: starts processes that import MLflow
@pytest.mark.parametrize("runs", [2, 4])
def test_runs_starting_together_into_a_new_mlflow_store_are_all_recorded(tmp_path, runs):
    import os
    import subprocess
    import sys
    import time

    from mlflow.tracking import MlflowClient

    from tests.helpers import ROOT

    store = tmp_path / "logs"  # does not exist yet: the first run creates the store
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    start = time.time() + 8  # after every process has imported MLflow
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _CONCURRENT_RUN, str(store), f"run{i}", str(start)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(runs)
    ]
    outcomes = [(p.wait(timeout=240), p.stderr.read()) for p in processes]
    assert all(code == 0 for code, _ in outcomes), [err[-2000:] for code, err in outcomes if code]
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name("rings")
    recorded = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in recorded) == [f"run{i}" for i in range(runs)]
    assert all(r.data.metrics["val/acc"] == 0.5 for r in recorded)


def test_the_learning_rate_is_one_train_lr_tag_whatever_the_parameter_groups(tmp_path):
    import pandas as pd
    from lightning.pytorch import LightningModule, Trainer
    from torch.utils.data import DataLoader, TensorDataset

    from dltemplate.callbacks.learning_rate import LearningRateMonitor
    from dltemplate.loggers import CSVLogger

    class Grouped(LightningModule):  # the groups parameter_groups makes with weight decay and a backbone
        def __init__(self):
            super().__init__()
            self.backbone, self.head = torch.nn.Linear(2, 4), torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.head(self.backbone(x)).squeeze(1), y)

        def configure_optimizers(self):
            groups = [
                {"params": [self.head.weight], "name": "decayed"},
                {"params": [self.head.bias], "name": "not_decayed", "weight_decay": 0.0},
                {"params": [self.backbone.weight], "name": "backbone/decayed", "lr": 1e-3},
                {"params": [self.backbone.bias], "name": "backbone/not_decayed", "lr": 1e-3, "weight_decay": 0.0},
            ]
            optimizer = torch.optim.AdamW(groups, lr=1e-2, weight_decay=0.1)
            return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.5)}

    data = DataLoader(TensorDataset(torch.randn(8, 2), torch.randn(8)), batch_size=4)
    logger = CSVLogger(save_dir=tmp_path, name="csv", version="")
    trainer = Trainer(
        max_epochs=3,
        logger=logger,
        callbacks=[LearningRateMonitor(logging_interval="epoch")],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(Grouped(), data)
    table = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    lr_columns = sorted(c for c in table.columns if "lr" in c)
    assert lr_columns == ["train/lr", "train/lr/backbone/decayed", "train/lr/backbone/not_decayed"]
    assert table["train/lr"].dropna().tolist() == pytest.approx([1e-2, 5e-3, 2.5e-3])  # the head's, as scheduled
    assert table["train/lr/backbone/decayed"].dropna().tolist() == pytest.approx([1e-3, 5e-4, 2.5e-4])
    assert not any(key.startswith("lr-") for key in trainer.callback_metrics)
    assert float(trainer.callback_metrics["train/lr"]) == pytest.approx(2.5e-3)


def test_metrics_csv_keeps_lightnings_epoch_and_step_columns(tmp_path):
    import pandas as pd
    from lightning.pytorch import LightningModule, Trainer
    from torch.utils.data import DataLoader, TensorDataset

    from dltemplate.loggers import CSVLogger

    class Tiny(LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            loss = torch.nn.functional.mse_loss(self.layer(batch[0]).squeeze(1), batch[1])
            self.log("train/loss", loss, on_step=True, on_epoch=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = DataLoader(TensorDataset(torch.randn(12, 2), torch.randn(12)), batch_size=4)
    trainer = Trainer(
        max_epochs=3,
        logger=CSVLogger(save_dir=tmp_path, name="csv", version=""),
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Tiny(), data)
    table = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    assert {"epoch", "step", "train/epoch", "train/loss", "train/loss_step"} <= set(table.columns)
    per_epoch = table.groupby("epoch")["train/loss"].last()
    assert per_epoch.index.tolist() == [0, 1, 2] and per_epoch.notna().all()
    assert (table["epoch"] == table["train/epoch"]).all()
    assert table.groupby("epoch")["step"].max().tolist() == [2, 5, 8]  # 3 steps per epoch


def test_show_figures_lets_a_tall_figure_fill_its_cell_width(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from torch.utils.tensorboard import SummaryWriter

    from dltemplate import api

    with SummaryWriter(str(tmp_path)) as writer:  # a square confusion matrix beside a tall forecast
        writer.add_image("test/confusion_matrix", torch.rand(3, 100, 100), 5)
        writer.add_image("test/forecast", torch.rand(3, 140, 100), 5)
    figure = api.show_figures(tmp_path, "test")
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    width_px = figure.get_size_inches()[0] * figure.dpi
    for ax in (ax for ax in figure.axes if ax.images):
        drawn = ax.images[0].get_window_extent(renderer).width
        cell = ax.get_subplotspec().get_position(figure).width * width_px  # the grid cell, before the aspect shrink
        assert drawn >= 0.9 * cell, (ax.images[0].get_array().shape, drawn / cell)


def test_only_a_local_mlflow_store_is_set_up_under_a_file_lock(tmp_path):
    from filelock import FileLock

    from dltemplate.loggers import _store_lock

    sqlite = _store_lock(f"sqlite:///{tmp_path}/new/mlflow.db")
    assert isinstance(sqlite, FileLock) and sqlite.lock_file == f"{tmp_path}/new/mlflow.db.lock"
    assert (tmp_path / "new").is_dir()  # SQLite needs the folder before it creates the file
    assert _store_lock((tmp_path / "mlruns").as_uri()).lock_file == f"{tmp_path}/mlruns.lock"
    for server in ("http://127.0.0.1:5000", "databricks", ""):
        assert not isinstance(_store_lock(server), FileLock)
