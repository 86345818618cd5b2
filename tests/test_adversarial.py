"""Crafted checkpoints, damaged files, failed resumes and races: each case that once went wrong stays here.

A crafted checkpoint must be refused with a message, and its payload must neither run nor write a
file; a run's records must change only when that run itself succeeds or resumes.
"""

import io
import json
import pickle
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
import torch

from dltemplate import registry
from dltemplate.checkpoint import load_checkpoint, restore
from dltemplate.cli import run_entry_point
from dltemplate.config import compose_config
from dltemplate.errors import CheckpointError, ConfigError, DataError, OutputExistsError
from dltemplate.evaluate import evaluate
from dltemplate.export import export_checkpoint
from dltemplate.modules.classification import ClassificationModule
from dltemplate.predict import main as predict_main
from dltemplate.predict import predict
from dltemplate.rundir import RESULT_FILE, claim, write_result
from dltemplate.sweeps import summarise
from dltemplate.train import main as train_main
from dltemplate.train import train
from tests.datasets import titanic_frame, write_titanic
from tests.helpers import CONFIG_DIR, run_script


class Payload:
    """Pickled, it touches `marker` when unpickled: proof that a checkpoint ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def nested_torch_load(marker: Path) -> dict:
    """A config value that would unpickle `Payload` if anything instantiated it recursively."""
    blob = list(pickle.dumps(Payload(marker)))
    return {
        "_target_": "torch.load",
        "f": {"_target_": "io.BytesIO", "_args_": [{"_target_": "builtins.bytes", "_args_": [blob]}]},
        "weights_only": False,
    }


@pytest.fixture(scope="module")
def titanic_run(tmp_path_factory):
    """A tiny Titanic run (derived columns, a tabular net) with its checkpoints."""
    tmp = tmp_path_factory.mktemp("titanic")
    write_titanic(tmp / "data" / "titanic", n_train=120, n_test=40)
    cfg = compose_config(
        CONFIG_DIR,
        ["task=titanic", f"paths.data_dir={tmp / 'data'}", f"paths.log_dir={tmp / 'logs'}", "debug=limit_batches"],
        output_dir=tmp / "run",
    )
    result = train(cfg)
    return result, tmp


def crafted(checkpoint_path: Path, out: Path, edit) -> Path:
    """A copy of a checkpoint with `edit(checkpoint)` applied, saved as plain data like the original."""
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, out)
    return out


def predict_cfg(ckpt: Path, tmp: Path, name: str = "predict"):
    frame = titanic_frame(5, seed=9).drop(columns="Survived")
    frame.to_csv(tmp / f"{name}.csv", index=False)
    return compose_config(
        CONFIG_DIR,
        [f"ckpt_path={ckpt}", f"input={tmp / f'{name}.csv'}", f"paths.data_dir={tmp / 'data'}"],
        output_dir=tmp / name,
        config_name="predict",
    )


# ---- checkpoints are data ------------------------------------------------------------------------


def test_a_nested_target_in_the_net_hyperparameters_runs_nothing(titanic_run, tmp_path):
    result, tmp = titanic_run
    marker = tmp_path / "pwned"

    def edit(checkpoint):
        checkpoint["hyper_parameters"]["net"]["dropout"] = nested_torch_load(marker)
        checkpoint["config"]["net"]["dropout"] = nested_torch_load(marker)

    bad = crafted(Path(result.best_checkpoint), tmp_path / "bad.ckpt", edit)
    with pytest.raises(ConfigError, match=r"torch.load.*not an allowed layer"):
        ClassificationModule.load_from_checkpoint(bad, weights_only=True)
    with pytest.raises(CheckpointError, match=r"torch.load"):
        predict(predict_cfg(bad, tmp))
    evaluate_cfg = compose_config(
        CONFIG_DIR, [f"ckpt_path={bad}", f"paths.data_dir={tmp / 'data'}"], tmp_path / "e", "evaluate"
    )
    with pytest.raises(CheckpointError, match=r"torch.load"):
        evaluate(evaluate_cfg)
    export_cfg = compose_config(CONFIG_DIR, [f"ckpt_path={bad}", "format=onnx"], tmp_path / "x", "export")
    with pytest.raises(CheckpointError, match=r"torch.load"):
        export_checkpoint(export_cfg)
    assert not marker.exists()


def test_a_nested_target_in_a_derived_column_runs_nothing(titanic_run, tmp_path):
    result, tmp = titanic_run
    marker = tmp_path / "pwned"

    def edit(checkpoint):
        checkpoint["config"]["data"]["derived"]["Title"]["pattern"] = nested_torch_load(marker)

    bad = crafted(Path(result.best_checkpoint), tmp_path / "bad.ckpt", edit)
    with pytest.raises(ConfigError, match=r"data\.derived\.Title\.pattern: nothing may be built here"):
        predict(predict_cfg(bad, tmp))
    assert not marker.exists()


def test_a_feature_name_that_only_starts_like_the_project_is_refused(titanic_run, tmp_path):
    result, tmp = titanic_run
    written = tmp_path / "written.pth"

    def edit(checkpoint):
        checkpoint["config"]["data"]["derived"]["Title"] = {
            "_target_": "dltemplate.data.tabular.pd.DataFrame.to_csv",
            "path_or_buf": str(written),
        }

    bad = crafted(Path(result.best_checkpoint), tmp_path / "bad.ckpt", edit)
    with pytest.raises(ConfigError, match="not an allowed feature"):
        predict(predict_cfg(bad, tmp))
    assert not written.exists()


def test_a_module_outside_the_allowlist_is_never_imported(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "evil_module.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\nclass Net:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for kind in ("net", "module", "datamodule", "optimizer", "scheduler", "feature"):
        with pytest.raises(ConfigError, match=r"evil_module.Net"):
            registry.resolve("evil_module.Net", kind)
    assert not marker.exists() and "evil_module" not in sys.modules


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        ("os.system", "net"),
        ("builtins.eval", "feature"),
        ("torch.load", "layer"),
        ("torch.nn.functional.relu", "net"),  # a function, not a layer class
        ("dltemplate.nets.mlp.nn.Module", "net"),  # a re-export, not defined there
        ("dltemplate.data.tabular.pd.read_csv", "feature"),
        ("torch.optim.Optimizer.zero_grad", "optimizer"),
        ("dltemplate.modules.classification.ClassificationModule", "net"),  # the wrong kind
    ],
)
def test_names_outside_their_kind_are_refused(target, kind):
    with pytest.raises(ConfigError, match="not an allowed"):
        registry.resolve(target, kind)


def test_the_allowlist_accepts_what_the_configs_name():
    assert registry.resolve("dltemplate.nets.mlp.MLP", "net").__name__ == "MLP"
    assert registry.resolve("torch.nn.Linear", "net") is torch.nn.Linear
    assert registry.resolve("torch.optim.AdamW", "optimizer") is torch.optim.AdamW
    assert registry.resolve("torch.optim.lr_scheduler.OneCycleLR", "scheduler") is torch.optim.lr_scheduler.OneCycleLR
    assert registry.resolve("dltemplate.data.features.regex_extract", "feature").__name__ == "regex_extract"
    net = registry.instantiate({"_target_": "torch.nn.Sequential", "_args_": [{"_target_": "torch.nn.ReLU"}]}, "net")
    assert isinstance(net[0], torch.nn.ReLU)


def test_a_module_target_in_the_checkpoint_config_is_checked(titanic_run, tmp_path):
    result, _ = titanic_run

    def edit(checkpoint):
        checkpoint["config"]["module"]["_target_"] = "subprocess.run"

    bad = crafted(Path(result.best_checkpoint), tmp_path / "bad.ckpt", edit)
    with pytest.raises(CheckpointError, match=r"subprocess.run.*not an allowed module"):
        restore(bad)


def test_a_checkpoint_chooses_no_folder_to_write_and_no_url_to_fetch(titanic_run, tmp_path):
    result, tmp = titanic_run
    elsewhere = tmp_path / "elsewhere"

    def edit(checkpoint):
        checkpoint["config"]["paths"]["cache_dir"] = str(elsewhere)
        checkpoint["config"]["data"]["train_file"] = str(elsewhere / "fetched.csv")
        checkpoint["config"]["data"]["download"] = {"train_file": {"url": "http://127.0.0.1:9/x.csv", "md5": None}}

    bad = crafted(Path(result.best_checkpoint), tmp_path / "bad.ckpt", edit)
    table = predict(predict_cfg(bad, tmp, "paths"))
    assert len(table) == 5 and not elsewhere.exists()


# ---- damaged checkpoints -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: raw[: len(raw) // 2], "cannot be read as a checkpoint"),
        (lambda raw: b"", "cannot be read as a checkpoint"),
        (lambda raw: b"not a checkpoint at all" * 10, "cannot be read as a checkpoint"),
        (lambda raw: _pickled_object(), "refused, since loading it could run code"),
    ],
    ids=["truncated", "empty", "garbage", "pickled-object"],
)
def test_damaged_checkpoints_are_one_clear_message(titanic_run, tmp_path, capsys, damage, message):
    result, tmp = titanic_run
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(damage(Path(result.best_checkpoint).read_bytes()))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(bad)
    with pytest.raises(SystemExit) as exit_info:
        run_entry_point(predict_main, predict_cfg(bad, tmp, "damaged"))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("error: ") and message in err and "Traceback" not in err and err.count("\n") == 1


def _pickled_object() -> bytes:
    buffer = io.BytesIO()
    torch.save({"state_dict": {}, "hook": Payload(Path("/nonexistent/never"))}, buffer)
    return buffer.getvalue()


def test_a_run_directory_is_a_valid_checkpoint_path_for_predict(titanic_run, tmp_path):
    result, tmp = titanic_run
    table = predict(predict_cfg(Path(result.output_dir), tmp, "by_dir"))
    assert list(table.columns[:2]) == ["PassengerId", "prediction"]


# ---- nothing lost --------------------------------------------------------------------------------


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture
def finished_run(make_cfg):
    cfg = make_cfg("task=linear_regression", "debug=limit_batches", run="original")
    train_main(cfg)
    return Path(cfg.paths.output_dir)


def test_a_mismatched_resume_leaves_the_original_run_as_it_was(finished_run, make_cfg):
    before = _snapshot(finished_run)
    with pytest.raises(CheckpointError, match=r"task 'linear_regression' .this run: 'rings'"):
        train_main(make_cfg("task=rings", f"ckpt_path={finished_run}", run="resume_attempt"))
    assert _snapshot(finished_run) == before


def test_a_truncated_last_checkpoint_leaves_the_original_run_as_it_was(finished_run, make_cfg):
    last = finished_run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    before = _snapshot(finished_run)
    with pytest.raises(CheckpointError, match="cannot be read as a checkpoint"):
        train_main(make_cfg("task=linear_regression", f"ckpt_path={last}", run="resume_attempt"))
    assert _snapshot(finished_run) == before


def test_testing_a_checkpoint_scores_its_weights_in_a_directory_of_its_own(finished_run, make_cfg):
    before = _snapshot(finished_run)
    original = json.loads((finished_run / RESULT_FILE).read_text())
    cfg = make_cfg(
        "task=linear_regression", "debug=limit_batches", "train=false", f"ckpt_path={finished_run}", run="retest"
    )
    train_main(cfg)
    again = json.loads((Path(cfg.paths.output_dir) / RESULT_FILE).read_text())
    assert again["metrics"]["test/mse"] == pytest.approx(original["metrics"]["test/mse"], rel=1e-5)
    assert _snapshot(finished_run) == before


def test_a_run_refused_its_directory_does_not_touch_that_run(finished_run, make_cfg):
    before = _snapshot(finished_run)
    cfg = make_cfg("task=linear_regression", "debug=limit_batches", run="original")
    with pytest.raises(OutputExistsError, match="already holds results of another run"):
        train_main(cfg)
    assert _snapshot(finished_run) == before


def test_claiming_a_run_directory_is_atomic(tmp_path):
    run_dir, outcomes, start = tmp_path / "shared", [], threading.Barrier(8)

    def contender():
        start.wait()
        try:
            claim(run_dir)
            outcomes.append("claimed")
        except OutputExistsError:
            outcomes.append("refused")

    threads = [threading.Thread(target=contender) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["claimed"] + ["refused"] * 7


def test_a_full_disk_leaves_the_previous_result_and_the_summary_survives(tmp_path, monkeypatch):
    job = tmp_path / "sweep" / "0"
    write_result(job, "ok", {"val/loss": 1.0})
    before = (job / RESULT_FILE).read_bytes()

    def full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(Path, "write_text", full)
        with pytest.raises(OSError, match="No space left"):
            write_result(job, "failed", {})
    assert (job / RESULT_FILE).read_bytes() == before and not list(job.glob("*.part"))
    (tmp_path / "sweep" / "1").mkdir()
    (tmp_path / "sweep" / "1" / RESULT_FILE).write_text("")  # what a full disk left before
    table = summarise(tmp_path / "sweep", "val/loss", "min")
    assert list(table["status"]) == ["ok", "unreadable"] and table["best"].tolist() == [True, False]


def test_tensorboard_shows_each_step_once_after_resuming_from_an_earlier_checkpoint(make_cfg, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = train(make_cfg("task=linear_regression", "trainer.max_epochs=2", "test=false", run="tb"))
    run_dir = Path(first.output_dir)
    early = run_dir / "checkpoints" / "early.ckpt"
    early.write_bytes((run_dir / "checkpoints" / "last.ckpt").read_bytes())  # what a kill leaves behind:
    train(make_cfg("task=linear_regression", "trainer.max_epochs=4", f"ckpt_path={early}", "test=false", run="tb2"))
    # events of epochs 3-4 exist; resuming from the epoch-2 checkpoint replays them
    train(make_cfg("task=linear_regression", "trainer.max_epochs=4", f"ckpt_path={early}", "test=false", run="tb3"))
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    for tag in ("val/loss", "train/loss_step"):
        steps = [event.step for event in accumulator.Scalars(tag)]
        assert len(steps) == len(set(steps)), (tag, steps)
    assert len(accumulator.Scalars("val/loss")) == 4


@pytest.mark.slow  # two train.py processes
def test_a_command_refused_a_finished_runs_directory_leaves_its_hydra_files_and_log(tmp_path):
    run_dir = tmp_path / "finished"
    command = ["train.py", "task=linear_regression", "debug=limit_batches", f"paths.log_dir={tmp_path / 'logs'}"]
    first = run_script([*command, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"])
    assert first.returncode == 0, first.stderr[-3000:]
    records = [run_dir / ".hydra" / name for name in ("config.yaml", "hydra.yaml", "overrides.yaml")]
    records.append(run_dir / "train.log")
    before = {path: path.read_bytes() for path in records}
    everything = _snapshot(run_dir)

    refused = run_script([*command, "trainer.max_epochs=2", f"hydra.run.dir={run_dir}"])
    assert refused.returncode == 2
    error_lines = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert error_lines == [
        f"error: {run_dir} already holds results of another run (checkpoints, result.json, TensorBoard events); "
        "choose a new hydra.run.dir, or pass ckpt_path=<that run> to resume it"
    ]
    assert "Traceback" not in refused.stderr
    assert {path: path.read_bytes() for path in records} == before
    assert "max_epochs=2" not in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert _snapshot(run_dir) == everything


def test_a_copied_run_directory_predicts_with_its_own_checkpoint(finished_run, tmp_path, caplog):
    import logging
    import shutil

    from dltemplate.checkpoint import default_paths, find_checkpoint

    copy = tmp_path / "elsewhere" / "copied_run"
    shutil.copytree(finished_run, copy)
    recorded = Path(json.loads((copy / RESULT_FILE).read_text())["best_checkpoint"])
    assert recorded.is_relative_to(finished_run)  # the record names the original's file
    with caplog.at_level(logging.INFO, logger="dltemplate.checkpoint"):
        chosen = find_checkpoint(copy)
    assert chosen == copy / "checkpoints" / recorded.name
    assert str(chosen) in caplog.text  # it says which file it uses
    shutil.rmtree(finished_run)  # the original gone: the copy restores from its own file alone
    module, _, _ = restore(copy, paths=default_paths(str(tmp_path / "data")))
    assert module is not None


def test_a_checkpoint_with_nan_weights_is_refused_for_prediction_and_export(finished_run, tmp_path, capsys):
    from dltemplate.export import main as export_main

    best = Path(json.loads((finished_run / RESULT_FILE).read_text())["best_checkpoint"])
    checkpoint = torch.load(best, weights_only=True)
    name = next(k for k, v in checkpoint["state_dict"].items() if v.is_floating_point())
    checkpoint["state_dict"][name] = torch.full_like(checkpoint["state_dict"][name], float("nan"))
    diverged = tmp_path / "diverged.ckpt"
    torch.save(checkpoint, diverged)
    with pytest.raises(CheckpointError, match=rf"not finite numbers \(NaN or infinity\) in {name}"):
        restore(diverged)
    cfg = compose_config(
        CONFIG_DIR,
        [f"ckpt_path={diverged}", f"output={tmp_path / 'model.onnx'}", f"paths.data_dir={tmp_path / 'data'}"],
        output_dir=tmp_path / "export",
        config_name="export",
    )
    with pytest.raises(SystemExit) as exit_info:
        run_entry_point(export_main, cfg)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {diverged} holds weights that are not finite")
    assert not (tmp_path / "model.onnx").exists()


def test_a_huge_finite_input_is_an_error_not_a_class(titanic_run, tmp_path):
    result, _ = titanic_run
    cfg = predict_cfg(Path(result.best_checkpoint), tmp_path)
    frame = pd.read_csv(cfg.input)
    frame.loc[1, "Age"] = 1e300  # finite, but far outside what the model saw
    frame.to_csv(cfg.input, index=False)
    with pytest.raises(DataError, match=r"input row\(s\) 2 \(counting from 1\) give outputs that are not numbers"):
        predict(cfg)
    assert not Path(cfg.output).exists()
