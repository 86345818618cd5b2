"""Crafted checkpoints, damaged files, failed resumes and races: each case that once went wrong stays here.

A crafted checkpoint must be refused with a message, and its payload must neither run nor write a
file; a run's records must change only when that run itself succeeds or resumes.
"""

import io
import json
import os
import pickle
import re
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
import torch

from dltemplate import registry
from dltemplate.checkpoint import checkpoint_run_config, load_checkpoint, restore
from dltemplate.cli import run_entry_point
from dltemplate.config import compose_config
from dltemplate.errors import CheckpointError, ConfigError, DataError, OutputExistsError
from dltemplate.evaluate import evaluate
from dltemplate.evaluate import main as evaluate_main
from dltemplate.extras.export import export_checkpoint
from dltemplate.instantiate import instantiate
from dltemplate.modules.classification import ClassificationModule
from dltemplate.predict import main as predict_main
from dltemplate.predict import predict
from dltemplate.rundir import RESULT_FILE, claim, write_result
from dltemplate.sweeps import summarise
from dltemplate.train import main as train_main
from dltemplate.train import train
from tests.datasets import titanic_frame, write_titanic
from tests.helpers import CONFIG_DIR, ROOT, run_script

SRC_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}


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
            "_target_": "dltemplate.tabular.data.tabular.pd.DataFrame.to_csv",
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


def test_every_name_in_a_config_is_checked_before_any_is_imported(tmp_path):
    """An allowed net holding a refused layer: neither the net's file nor the layer's module is imported."""
    marker = tmp_path / "imported"
    (tmp_path / "evil_layer.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\nclass X: ...\n")
    script = f"""
import sys
sys.path.insert(0, {str(tmp_path)!r})
from dltemplate import registry
config = {{"_target_": "dltemplate.nets.mlp.MLP", "activation": {{"_target_": "evil_layer.X"}}}}
try:
    registry.check(config, "net")
except registry.ConfigError as error:
    print("refused:", error)
print("imported:", sorted(m for m in sys.modules if m in ("dltemplate.nets.mlp", "evil_layer")))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=SRC_ENV)
    assert "refused: config.activation names _target_='evil_layer.X'" in result.stdout, result.stderr[-2000:]
    assert "imported: []" in result.stdout and not marker.exists()


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        ("os.system", "net"),
        ("builtins.eval", "feature"),
        ("torch.load", "layer"),
        ("torch.nn.functional.relu", "net"),  # a function, not a layer class
        ("dltemplate.nets.mlp.nn.Module", "net"),  # a re-export, not defined there
        ("dltemplate.tabular.data.tabular.pd.read_csv", "feature"),
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
    config = {"_target_": "torch.nn.Sequential", "_args_": [{"_target_": "torch.nn.ReLU"}]}
    registry.check(config, "net")
    assert isinstance(instantiate(config, "net")[0], torch.nn.ReLU)


def test_a_module_target_in_the_checkpoint_config_is_checked(titanic_run, tmp_path):
    result, _ = titanic_run

    def edit(checkpoint):
        checkpoint["config"]["module"]["_target_"] = "subprocess.run"

    bad = crafted(Path(result.best_checkpoint), tmp_path / "bad.ckpt", edit)
    with pytest.raises(CheckpointError, match=r"subprocess.run.*not an allowed module"):
        restore(bad)


# `this` prints the Zen of Python when it is imported: a canary for "imported before it was refused"
CANARY = {"_target_": "this.Nothing"}
ZEN = "Beautiful is better than ugly"


def _deep_in_the_net(checkpoint):
    block = {"_target_": "torch.nn.Sequential", "_args_": [{"_target_": "torch.nn.ReLU"}, {"k": [CANARY]}]}
    checkpoint["hyper_parameters"]["net"]["block"] = block


@pytest.mark.parametrize(
    ("edit", "message", "module_argument"),
    [
        (
            _deep_in_the_net,
            r"hyper_parameters\.net\.block\._args_\[1\]\.k\[0\] names _target_='this.Nothing'.*allowed layer",
            True,
        ),
        (
            lambda c: c["hyper_parameters"].update(optimizer={"_target_": "torch.optim.AdamW", "betas": CANARY}),
            r"hyper_parameters\.optimizer\.betas: nothing may be built here",
            True,
        ),
        (
            lambda c: c["hyper_parameters"].update(finetune={"x": [CANARY]}),
            r"hyper_parameters\.finetune\.x\[0\]: nothing may be built here",
            True,
        ),
        # Lightning reads an older version's key too (here overridden by hyper_parameters' own loss)
        (
            lambda c: c.update(hparams={"loss": CANARY}),
            r"hparams\.loss names _target_='this.Nothing'.*allowed loss",
            False,
        ),
        (
            lambda c: c["config"]["module"].update(scheduler=CANARY),
            r"config\.module\.scheduler .*allowed scheduler",
            False,
        ),
        (
            lambda c: c["config"]["net"].update(extra={"inner": CANARY}),
            r"config\.net\.extra\.inner .*allowed layer",
            False,
        ),
        (
            lambda c: c["hyper_parameters"]["net"].update(dropout="${oc.decode:'{_target_: this.Nothing}'}"),
            r"hyper_parameters\.net\.dropout=.* is an interpolation",
            True,
        ),
    ],
    ids=[
        "layer-deep-in-the-net",
        "in-the-optimizer",
        "in-another-setting",
        "old-hparams-key",
        "module",
        "net",
        "decoded",
    ],
)
def test_a_refused_name_anywhere_in_a_checkpoint_is_never_imported(
    titanic_run, tmp_path, capsys, edit, message, module_argument
):
    """Every `_target_` of a checkpoint, at any depth and in any part it is built from, is checked against
    the allowlist before anything is imported; the run's own config is built with Hydra's instantiate."""
    result, _ = titanic_run
    bad = crafted(Path(result.best_checkpoint), tmp_path / "bad.ckpt", edit)
    sys.modules.pop("this", None)
    with pytest.raises(CheckpointError, match=message):
        restore(bad)
    if module_argument:  # what Lightning's own loading passes to the module is checked too
        with pytest.raises(ConfigError, match=r"this\.Nothing|interpolation"):
            ClassificationModule.load_from_checkpoint(bad, weights_only=True)
    assert "this" not in sys.modules and ZEN not in capsys.readouterr().out


@pytest.mark.slow  # a fresh interpreter per case: several seconds each
@pytest.mark.parametrize(
    ("edit", "refused"),
    [
        (lambda c: c["config"]["module"].update(_target_="evil_module.Module"), "evil_module.Module"),
        (lambda c: c["hyper_parameters"]["net"].update(activation={"_target_": "evil_module.X"}), "evil_module.X"),
        (lambda c: c["hyper_parameters"].update(optimizer={"_target_": "evil_module.Opt"}), "evil_module.Opt"),
    ],
    ids=["module", "layer-of-the-net", "optimizer"],
)
def test_a_checkpoint_with_one_refused_name_imports_nothing_it_names(titanic_run, tmp_path, edit, refused):
    result, _ = titanic_run
    bad = crafted(Path(result.best_checkpoint), tmp_path / "bad.ckpt", edit)
    marker = tmp_path / "imported"
    (tmp_path / "evil_module.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\n")
    script = f"""
import sys
sys.path.insert(0, {str(tmp_path)!r})
from dltemplate.checkpoint import restore
from dltemplate.errors import CheckpointError
try:
    restore({str(bad)!r})
except CheckpointError as error:
    print("refused:", error)
names = (
    "dltemplate.tabular.data.tabular",
    "dltemplate.modules.classification",
    "dltemplate.tabular.nets.tabular",
    "evil_module",
)
print("imported:", sorted(m for m in sys.modules if m in names))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=SRC_ENV)
    assert f"_target_={refused!r}" in result.stdout, result.stdout + result.stderr[-2000:]
    assert "imported: []" in result.stdout and not marker.exists(), result.stdout


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


def _secret_file(tmp_path: Path) -> Path:
    """A file outside every data folder, whose first line must never be shown."""
    secret = tmp_path / "private" / "passwd"
    secret.parent.mkdir()
    secret.write_text("SECRET-FIRST-LINE:x:0:0\nroot:x:0:0\n")
    return secret


def test_a_checkpoint_chooses_no_file_to_read(titanic_run, tmp_path, capsys):
    result, tmp = titanic_run
    secret = _secret_file(tmp_path)

    def edit(checkpoint):
        checkpoint["config"]["data"]["test_file"] = str(secret)
        checkpoint["config"]["data"]["train_file"] = "../" * 20 + str(secret)

    bad = crafted(Path(result.best_checkpoint), tmp_path / "bad.ckpt", edit)
    cfg = compose_config(CONFIG_DIR, [f"ckpt_path={bad}", f"paths.data_dir={tmp / 'data'}"], tmp_path / "e", "evaluate")
    with pytest.raises(SystemExit):
        run_entry_point(evaluate_main, cfg)
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "not read" in err and "+data.test_file=<file>" in err and "SECRET-FIRST-LINE" not in err
    # the files passed by the user are read: the checkpoint's own choice is only withheld
    data = tmp / "data" / "titanic"
    given = [f"+data.test_file={data / 'test.csv'}", f"+data.train_file={data / 'train.csv'}"]
    cfg = compose_config(
        CONFIG_DIR, [f"ckpt_path={bad}", f"paths.data_dir={tmp / 'data'}", *given], tmp_path / "e2", "evaluate"
    )
    assert "test/acc" in evaluate(cfg)
    # predicting reads neither setting
    assert len(predict(predict_cfg(bad, tmp, "withheld"))) == 5


@pytest.mark.parametrize("value", ["${oc.env:DLTEMPLATE_SECRET}", "${oc.env:HOME}/.bashrc", "${paths.data_dir}${x}"])
def test_interpolations_in_a_checkpoint_are_not_resolved(titanic_run, tmp_path, monkeypatch, capsys, value):
    result, tmp = titanic_run
    monkeypatch.setenv("DLTEMPLATE_SECRET", "hunter2-secret-value")

    def edit(checkpoint):
        checkpoint["config"]["data"]["test_file"] = value
        checkpoint["config"]["task_name"] = "${oc.env:DLTEMPLATE_SECRET}"

    bad = crafted(Path(result.best_checkpoint), tmp_path / "bad.ckpt", edit)
    assert checkpoint_run_config(load_checkpoint(bad), bad).task_name == "${oc.env:DLTEMPLATE_SECRET}"
    cfg = compose_config(CONFIG_DIR, [f"ckpt_path={bad}", f"paths.data_dir={tmp / 'data'}"], tmp_path / "e", "evaluate")
    with pytest.raises(SystemExit):
        run_entry_point(evaluate_main, cfg)
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "is an interpolation" in err
    assert "hunter2" not in err and str(Path.home()) + "/.bashrc" not in err


def test_a_checkpoint_path_under_the_data_folder_is_followed(titanic_run, tmp_path):
    result, tmp = titanic_run
    stored = torch.load(result.best_checkpoint, weights_only=True)["config"]["data"]
    assert stored["test_file"] == "${paths.data_dir}/titanic/test.csv"  # as train.py writes it
    with_dots = crafted(
        Path(result.best_checkpoint),
        tmp_path / "dots.ckpt",
        lambda c: c["config"]["data"].update(test_file="${paths.data_dir}/../../titanic/test.csv"),
    )
    cfg = compose_config(
        CONFIG_DIR, [f"ckpt_path={with_dots}", f"paths.data_dir={tmp / 'data'}"], tmp_path / "e", "evaluate"
    )
    with pytest.raises(CheckpointError, match=r"test_file='\$\{paths.data_dir\}/\.\./\.\./titanic/test.csv'"):
        evaluate(cfg)


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


def test_a_damaged_last_checkpoint_names_its_cause_and_the_checkpoints_beside_it(titanic_run, tmp_path):
    result, _ = titanic_run
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "epoch001.ckpt").write_bytes(Path(result.best_checkpoint).read_bytes())
    last = folder / "last.ckpt"
    for data, cause in [
        (Path(result.best_checkpoint).read_bytes()[:1000], "a damaged or truncated checkpoint archive (1000 bytes"),
        (b"", "it is empty (0 bytes)"),
        (pickle.dumps({"state_dict": 1})[:5], "a damaged or truncated legacy checkpoint"),
        (b"garbage" * 10, "it is not a checkpoint"),
    ]:
        last.write_bytes(data)
        with pytest.raises(CheckpointError) as refused:
            load_checkpoint(last)
        message = str(refused.value)
        assert cause in message and "use another checkpoint beside it (epoch001.ckpt)" in message, message
        assert "weights_only" not in message and "last.ckpt" not in message.replace(str(last), "")
        assert "garb" not in message  # nothing of the file's contents is shown


def _crafted_state(checkpoint, value):
    checkpoint["TabularDataModule"]["encoder"] = value


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["hyper_parameters"]["net"].update(_args_=5), r"net\._args_ must be a list of positional"),
        (lambda c: c["hyper_parameters"]["net"].update(_args_="abc"), r"net\._args_ must be a list of positional"),
        (lambda c: c["hyper_parameters"]["net"].update(hidden=[-4]), r"net settings .* cannot build .*negative"),
        (lambda c: c["hyper_parameters"]["net"].update(hidden=["wide"]), r"net settings .* cannot build its net"),
        (
            lambda c: c["hyper_parameters"]["net"].update(hidden=[10**12, 32]),
            r"net settings .* do not fit its weights: net\.mlp\.layers\.0\.bias is \[64\] in the weights and "
            r"\[1000000000000\] as the settings build it",
        ),
        (lambda c: _crafted_state(c, "garbage"), r"its fitted preprocessing \(the TabularDataModule state"),
        (lambda c: _crafted_state(c, {"a": 1}), r"its fitted preprocessing .* is damaged or not this data module's"),
        (lambda c: c["hyper_parameters"].update(num_classes="two"), r"num_classes='two', not a whole number"),
        (lambda c: c["hyper_parameters"].update(num_classes=10**9), r"num_classes=1000000000, but .* 2 classes"),
        (lambda c: c["hyper_parameters"].update(class_weights="x"), r"its module settings \(hyper_parameters\)"),
    ],
    ids=[
        "args-int",
        "args-text",
        "negative-size",
        "text-size",
        "huge-size",
        "encoder-text",
        "encoder-dict",
        "classes-text",
        "classes-huge",
        "module-setting",
    ],
)
def test_a_crafted_checkpoint_is_one_line_naming_the_part_at_fault(titanic_run, tmp_path, capsys, edit, message):
    result, tmp = titanic_run
    bad = crafted(Path(result.best_checkpoint), tmp_path / "bad.ckpt", edit)
    with pytest.raises(SystemExit) as exit_info:
        run_entry_point(predict_main, predict_cfg(bad, tmp, "crafted"))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(message, err) and "does not fit this version" not in err, err


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

    steps = "trainer.log_every_n_steps=4"  # step values of every half epoch (8 batches)
    first = train(make_cfg("task=linear_regression", "trainer.max_epochs=2", "test=false", steps, run="tb"))
    run_dir = Path(first.output_dir)
    early = run_dir / "checkpoints" / "early.ckpt"
    early.write_bytes((run_dir / "checkpoints" / "last.ckpt").read_bytes())  # what a kill leaves behind:
    resume = ["task=linear_regression", "trainer.max_epochs=4", f"ckpt_path={early}", "test=false", steps]
    train(make_cfg(*resume, run="tb2"))
    # events of epochs 3-4 exist; resuming from the epoch-2 checkpoint replays them
    train(make_cfg(*resume, run="tb3"))
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
    from dltemplate.extras.export import main as export_main

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


def test_a_folder_name_under_another_setting_is_followed_only_inside_it(tmp_path):
    """`test_folder` is a name under `root`: a checkpoint cannot walk it out of root, or out of the data folder."""
    from dltemplate.checkpoint import data_settings

    data = tmp_path / "data"
    paths = {"data_dir": str(data), "cache_dir": str(tmp_path / "cache")}
    stored = {"root": str(data / "pets"), "test_folder": "val"}
    settings, withheld = data_settings(stored, {}, paths, "config.data")
    assert settings["test_folder"] == "val" and not withheld
    for escape in ("../../etc", "/etc", "../pets2"):
        settings, withheld = data_settings({**stored, "test_folder": escape}, {}, paths, "config.data")
        assert settings["test_folder"] is None and withheld == {"test_folder": escape}, escape
    outside = {"root": "/srv/photos", "test_folder": "val"}  # the root itself is withheld, and so its test folder
    settings, withheld = data_settings(outside, {}, paths, "config.data")
    assert settings["root"] is None and settings["test_folder"] is None
    settings, _ = data_settings(outside, {"root": "/srv/photos"}, paths, "config.data")  # the user names the root
    assert settings["test_folder"] == "val"
