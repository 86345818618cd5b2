"""Mistakes that once ended in a traceback or a misleading message: each is now one `error:` line.

The line names the setting (or the file), the value and how to fix it; the command exits with
status 2 and leaves no run record behind for a run that never started.
"""

import errno
import math
import os
import re
import sys
from pathlib import Path

import pytest

from dltemplate.cli import check_command_line, run_entry_point, user_message
from dltemplate.errors import ConfigError
from dltemplate.files import write_atomically
from dltemplate.train import main as train_main
from dltemplate.train import train
from tests.helpers import CONFIG_DIR, ROOT, run_script


def one_error_line(capsys, call, cfg=None) -> str:
    """Run `call` as an entry point given `cfg` would; return its single `error:` line (exit status 2 checked)."""
    with pytest.raises(SystemExit) as stopped:
        run_entry_point(lambda _: call(), cfg)
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.slow  # seconds each (whole runs, or every net or family): CI runs the slow tests too
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task=rings", "net.hidden=[0]"], "net.hidden=[0] must be whole numbers of at least 1"),
        (["data.batch_size=0"], "data.batch_size=0 must be a whole number of at least 1"),
        (["module.optimizer.lr=-1"], "module.optimizer.lr=-1 must be a finite number of at least 0 (above 0 to learn)"),
        (
            ["module.optimizer.lr=nan"],
            "module.optimizer.lr=nan must be a finite number of at least 0 (above 0 to learn)",
        ),
        (
            ["module.optimizer.lr=abc"],
            "module.optimizer.lr='abc' must be a finite number of at least 0 (above 0 to learn)",
        ),
        (["task=rings", "net.dropout=2"], "net.dropout=2 must be a probability"),
        (["task=rings", "net.dropout=1.0"], "net.dropout=1.0 must be a probability"),
        (["module.optimizer.weight_decay=nan"], "module.optimizer.weight_decay=nan must be a finite number"),
        (["module.optimizer.weight_decay=-0.1"], "module.optimizer.weight_decay=-0.1 must be a finite number"),
        (["seed=-1"], "seed=-1 must be a whole number from 0 to 4294967295"),
        (["seed=4294967296"], "seed=4294967296 must be a whole number from 0"),
        (["seed=1.5"], "seed=1.5 must be a whole number"),
    ],
)
def test_a_common_setting_that_cannot_work_is_one_line_before_anything_is_written(
    make_cfg, tmp_path, capsys, overrides, message
):
    cfg = make_cfg(*overrides)
    with pytest.raises(ConfigError, match=re.escape(message)):
        train(cfg)
    assert not (tmp_path / "run").exists()  # refused before the run directory was claimed
    line = one_error_line(capsys, lambda: train_main(make_cfg(*overrides, run="again")))
    assert message in line and "on the command line" in line


@pytest.mark.parametrize(
    "overrides",
    [["seed=null"], ["seed=0"], ["task=rings", "net.hidden=[]", "net.dropout=0.5"], ["module.optimizer.lr=10"]],
)
def test_settings_at_the_edges_of_their_range_pass_the_check(make_cfg, overrides):
    from dltemplate.settings import check_settings

    check_settings(make_cfg(*overrides))


def test_the_shipped_configs_of_every_task_pass_the_check(make_cfg):
    from dltemplate.settings import check_settings
    from tests.helpers import TASKS

    for task in TASKS:
        check_settings(make_cfg(f"task={task}"))


def test_a_diverged_run_is_one_line_naming_the_learning_rate(make_cfg, capsys):
    cfg = make_cfg("module.optimizer.lr=1e30", "trainer.max_epochs=2", "logger=tensorboard")
    line = one_error_line(capsys, lambda: train_main(cfg))
    assert "the run diverged; lower module.optimizer.lr (now 1e+30)" in line


def _refused(code: int, filename: str | None = None):
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code), *([filename] if filename else []))

    return refuse


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (errno.ENOSPC, "no space left on the device holding {path}"),
        (errno.EROFS, "{path} is on a read-only file system; point paths.log_dir"),
        (errno.EACCES, "permission denied for {path}"),
        (errno.EPERM, "operation not permitted on {path}"),
    ],
)
def test_a_refused_write_is_one_line_naming_the_path(make_cfg, tmp_path, capsys, monkeypatch, code, message):
    cfg = make_cfg("trainer.max_epochs=1")
    target = tmp_path / "run" / "result.json"
    monkeypatch.setattr("dltemplate.run.claim_output_dir", _refused(code, str(target)))
    line = one_error_line(capsys, lambda: train_main(cfg))
    assert message.format(path=target) in line and os.strerror(code) in line


def test_a_full_disk_that_names_no_file_names_the_run_directory(make_cfg, tmp_path, capsys, monkeypatch):
    cfg = make_cfg("trainer.max_epochs=1")
    monkeypatch.setattr("dltemplate.run.claim_output_dir", _refused(errno.ENOSPC))
    line = one_error_line(capsys, lambda: train_main(cfg), cfg)
    assert f"no space left on the device holding the run directory {tmp_path / 'run'}" in line


def test_torch_save_on_a_full_disk_is_an_os_error_naming_the_file(tmp_path):
    def full(path):
        path.write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    target = tmp_path / "cache.pt"
    with pytest.raises(OSError) as raised:
        write_atomically(target, full)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []  # no partial file left
    assert user_message(raised.value).startswith(f"no space left on the device holding {target}")


def test_an_unexpected_error_keeps_its_traceback():
    assert user_message(RuntimeError("a bug")) is None
    assert user_message(OSError(errno.EIO, "I/O error", "x")) is None


def test_an_unset_environment_variable_in_a_command_line_value_is_one_line(capsys):
    with pytest.raises(SystemExit) as stopped:
        check_command_line(CONFIG_DIR, "train", ["trainer.max_epochs=${oc.env:DLTEMPLATE_UNSET_VARIABLE}"])
    assert stopped.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: trainer.max_epochs=${oc.env:DLTEMPLATE_UNSET_VARIABLE} reads the environment")
    assert "${oc.env:DLTEMPLATE_UNSET_VARIABLE,<default>}" in line and "\n" not in line
    check_command_line(CONFIG_DIR, "train", ["trainer.max_epochs=${oc.env:DLTEMPLATE_UNSET_VARIABLE,2}"])


@pytest.mark.parametrize(
    ("setting", "module", "path"),
    [
        ("cv.folds=2", "dltemplate.extras.cv", "src/dltemplate/extras/cv.py"),
        ("backtest.origins=2", "dltemplate.extras.backtest", "src/dltemplate/extras/backtest.py"),
    ],
)
def test_a_selection_in_a_project_without_that_extra_is_one_line(make_cfg, capsys, monkeypatch, setting, module, path):
    from dltemplate.train import run_metrics

    monkeypatch.setitem(sys.modules, module, None)  # what importing a deleted file does
    line = one_error_line(capsys, lambda: run_metrics(make_cfg(setting)))
    name = setting.split("=")[0]
    assert line == f"error: {name} needs {path}, which this project does not have; leave {name} unset"


def test_an_unset_environment_variable_in_a_config_value_is_one_line(make_cfg, capsys):
    cfg = make_cfg("trainer.max_epochs=1", "data.batch_size=${oc.env:DLTEMPLATE_UNSET_VARIABLE}")
    line = one_error_line(capsys, lambda: train_main(cfg))
    assert "reads the environment variable DLTEMPLATE_UNSET_VARIABLE, which is not set" in line


def _sys_refuses_folders() -> bool:
    try:
        os.mkdir("/sys/dltemplate-test")
    except OSError:
        return True
    os.rmdir("/sys/dltemplate-test")
    return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/sys").is_dir() or not _sys_refuses_folders(), reason="needs a folder no one may write")
@pytest.mark.parametrize("override", ["hydra.run.dir=/sys/dltemplate-test/run", "paths.log_dir=/sys/dltemplate-test"])
def test_a_run_directory_that_cannot_be_created_is_one_line(tmp_path, override):
    result = run_script([str(ROOT / "train.py"), override], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "/sys/dltemplate-test" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


@pytest.fixture
def search(tmp_path):
    """Compose a search config (rings, titanic's search) and run `tune` on it, as tune.py would."""
    from hydra import compose, initialize_config_dir

    tune = pytest.importorskip("dltemplate.extras.tune", reason="the search is an extra, not in this project").tune

    if not (CONFIG_DIR / "hparams_search" / "titanic_optuna.yaml").is_file():
        pytest.skip("the search config of the tabular family is not in this project")
    base = [
        f"paths.log_dir={tmp_path / 'logs'}",
        "task=rings",
        "hparams_search=titanic_optuna",
        "trainer.max_epochs=1",
        "optuna.pruner=null",
    ]

    def run(*overrides: str, params: dict | None = None):
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[*base, *overrides])
            cfg.paths.output_dir = str(tmp_path / "search")
            if params is not None:
                cfg.optuna.params = params
            return tune(cfg, base_overrides=base)

    return run


@pytest.mark.parametrize(
    ("overrides", "params", "message"),
    [
        (["optuna.n_trials=-3"], None, "optuna.n_trials=-3 must be a whole number of at least 1"),
        (["optuna.n_trials=0"], None, "optuna.n_trials=0 must be a whole number of at least 1"),
        (["optuna.n_jobs=0"], None, "optuna.n_jobs=0 must be a whole number of at least 1"),
        ([], {"net.dropout": {"type": "floot", "low": 0, "high": 1}}, "type must be float, int or categorical"),
        ([], {"net.dropout": {"type": "float", "low": 0.5, "high": 0.1}}, "is not a valid float search space"),
        ([], {"module.optimizer.lr": {"type": "float", "low": 0, "high": 1, "log": True}}, "not a valid float"),
        ([], {"net.hidden": {"type": "categorical", "choices": []}}, "choices is empty"),
        ([], {"net.dropout": {"type": "float", "low": 0}}, "missing ['high']"),
        ([], {"net.dropout": {"type": "float", "low": 0, "hihg": 1}}, "unknown keys ['hihg']"),
        ([], {}, "optuna.params is empty"),
    ],
)
def test_a_search_that_cannot_run_is_refused_before_the_study_is_opened(search, tmp_path, overrides, params, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        search(*overrides, params=params)
    assert not (tmp_path / "logs" / "rings" / "optuna.db").exists()


def test_a_search_whose_every_trial_fails_is_an_error_naming_the_first_cause(search, tmp_path):
    from dltemplate.errors import SearchFailedError

    params = {"net.dropout": {"type": "float", "low": 1.5, "high": 2.0}}  # Optuna accepts it, training does not
    with pytest.raises(SearchFailedError, match=r"every trial .* failed \(2 in this search\).*trial 0: net.dropout="):
        search("optuna.n_trials=2", params=params)


def test_a_search_whose_every_trial_returns_nan_is_one_line_saying_so(search, monkeypatch, capsys):
    import dltemplate.extras.tune

    # Optuna records a NaN objective as a failed trial without raising: the search must still fail
    monkeypatch.setattr(dltemplate.extras.tune, "_trial_metrics", lambda trial, cfg: {"val/loss_best": float("nan")})
    line = one_error_line(capsys, lambda: search("optuna.n_trials=2"))
    assert "every trial of study rings_search failed (2 in this search)" in line
    assert "trial 0: val/loss_best is NaN" in line


@pytest.mark.parametrize(
    ("damage", "cause"),
    [
        (lambda db: db.write_text("not a database\n"), "file is not a database"),
        (lambda db: db.mkdir(), "it is a folder"),
        (lambda db: db.write_bytes(b"SQLite format 3\x00" + bytes(200)), "cannot be used as an Optuna database"),
    ],
)
def test_a_storage_that_is_not_an_optuna_database_is_one_line_naming_it(search, tmp_path, capsys, damage, cause):
    db = tmp_path / "logs" / "rings" / "optuna.db"
    db.parent.mkdir(parents=True)
    damage(db)
    line = one_error_line(capsys, lambda: search("optuna.n_trials=1"))
    assert f"{db} cannot be used as an Optuna database" in line and cause in line and "move it aside" in line


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["steps=abc"], "steps='abc' must be a whole number of at least 1"),
        (["steps=2.5"], "steps=2.5 must be a whole number of at least 1"),
        (["steps=0"], "steps=0 must be a whole number of at least 1"),
        (["floor=abc"], "floor='abc' must be a number"),
    ],
)
def test_forecast_settings_that_cannot_work_are_one_line_before_the_checkpoint_is_read(
    tmp_path, capsys, overrides, message
):
    from dltemplate.config import compose_config
    from dltemplate.forecast import main as forecast_main

    cfg = compose_config(
        CONFIG_DIR, ["ckpt_path=no/such.ckpt", *overrides], output_dir=tmp_path / "forecast", config_name="forecast"
    )
    line = one_error_line(capsys, lambda: forecast_main(cfg))
    assert message in line
    assert not (tmp_path / "forecast").exists()


def _entry_point(name: str):
    """The function an entry point's Hydra task runs first (serve: the server it builds, not the serving)."""
    import importlib

    extras = {"serve", "export", "tune"}  # src/dltemplate/extras/
    if name in extras:
        module = pytest.importorskip(f"dltemplate.extras.{name}", reason=f"{name} is an extra, not in this project")
    else:
        module = importlib.import_module(f"dltemplate.{name}")
    return module.build_server if name == "serve" else module.main


@pytest.mark.parametrize(
    ("config_name", "overrides", "message"),
    [
        ("evaluate", ["+data.batch_size=0"], "data.batch_size=0 must be a whole number of at least 1"),
        ("evaluate", ["+data.data_seed=-1"], "data.data_seed=-1 must be a whole number from 0"),
        ("serve", ["max_batch_size=0"], "max_batch_size=0 must be a whole number of at least 1"),
        ("serve", ["workers=0"], "workers=0 must be a whole number of at least 1"),
        ("serve", ["port=70000"], "port=70000 must be a TCP port"),
        ("serve", ["batch_timeout=-1"], "batch_timeout=-1 must be a finite number of at least 0"),
        ("serve", ["timeout=0"], "timeout=0 must be a number of seconds above 0, or -1"),
        ("serve", ["max_items=abc"], "max_items='abc' must be a whole number of at least 1"),
        ("serve", ["max_payload_mb=0"], "max_payload_mb=0 must be a finite number above 0"),
        ("forecast", ["zero_below=nan"], "zero_below=nan must be a finite number"),
    ],
)
def test_the_other_entry_points_check_their_settings_in_one_line_before_the_checkpoint_is_read(
    tmp_path, capsys, config_name, overrides, message
):
    from dltemplate.config import compose_config

    entry_point = _entry_point(config_name)  # skips an extra the project does not have (its config goes with it)
    cfg = compose_config(
        CONFIG_DIR, ["ckpt_path=no/such.ckpt", *overrides], output_dir=tmp_path / "out", config_name=config_name
    )
    line = one_error_line(capsys, lambda: entry_point(cfg))
    assert message in line and "on the command line" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("overrides", [["timeout=-1"], ["timeout=false"], ["port=1"], ["batch_timeout=0"]])
def test_serve_settings_at_the_edges_of_their_range_pass_the_check(overrides):
    from dltemplate.config import compose_config
    from dltemplate.settings import check_settings

    _entry_point("serve")  # skips in a project without the extras (serve.yaml goes with them)

    check_settings(compose_config(CONFIG_DIR, overrides, config_name="serve"))


@pytest.fixture(scope="module")
def rings_checkpoint(tmp_path_factory) -> Path:
    """The best checkpoint of a tiny rings run: a model whose data module reads no input files."""
    from dltemplate.config import compose_config

    tmp = tmp_path_factory.mktemp("rings")
    cfg = compose_config(
        CONFIG_DIR,
        [
            "task=rings",
            f"paths.log_dir={tmp / 'logs'}",
            "debug=limit_batches",
            "trainer.max_epochs=1",
            "logger=tensorboard",
        ],
        output_dir=tmp / "run",
    )
    return Path(train(cfg).best_checkpoint)


def test_predicting_with_a_model_that_reads_no_files_is_one_line_naming_what_to_use(rings_checkpoint, tmp_path, capsys):
    from dltemplate.config import compose_config
    from dltemplate.predict import main as predict_main

    (tmp_path / "rows.csv").write_text("x1,x2\n0.1,0.2\n")
    cfg = compose_config(
        CONFIG_DIR,
        [f"ckpt_path={rings_checkpoint}", f"input={tmp_path / 'rows.csv'}"],
        output_dir=tmp_path / "predict",
        config_name="predict",
    )
    line = one_error_line(capsys, lambda: predict_main(cfg))
    assert "(RingsDataModule) reads no input files, so predict.py cannot use it" in line
    assert "evaluate.py ckpt_path=" in line
    assert not (tmp_path / "predict" / "predictions.csv").exists()


def _export_config(ckpt: Path, tmp_path: Path, *overrides: str):
    from dltemplate.config import compose_config

    return compose_config(
        CONFIG_DIR,
        [f"ckpt_path={ckpt}", "format=torchscript", *overrides],
        output_dir=tmp_path / "export",
        config_name="export",
    )


@pytest.mark.parametrize(
    ("difference", "message"), [(1.0, "differs from the checkpoint by 1.00e+00"), (math.nan, "NaN")]
)
def test_an_export_beyond_the_tolerance_is_one_line_and_leaves_no_file(
    rings_checkpoint, tmp_path, capsys, monkeypatch, difference, message
):
    exporting = pytest.importorskip("dltemplate.extras.export", reason="export is an extra, not in this project")

    real = exporting.export

    def off(*args, **kwargs):
        path, _ = real(*args, **kwargs)
        assert path.is_file()  # written, then refused
        return path, difference

    monkeypatch.setattr(exporting, "export", off)
    cfg = _export_config(rings_checkpoint, tmp_path)
    line = one_error_line(capsys, lambda: exporting.main(cfg))
    assert message in line and f"not written to {tmp_path / 'export' / 'model.torchscript'}" in line
    assert list((tmp_path / "export").iterdir()) == []  # neither the refused model nor its staging folder


def test_an_export_within_the_tolerance_is_written(rings_checkpoint, tmp_path):
    export_checkpoint = pytest.importorskip("dltemplate.extras.export", reason="export is an extra").export_checkpoint

    path, difference = export_checkpoint(_export_config(rings_checkpoint, tmp_path))
    assert path == tmp_path / "export" / "model.torchscript" and path.is_file() and difference <= 1e-4
    assert [p.name for p in (tmp_path / "export").iterdir()] == ["model.torchscript"]


@pytest.mark.parametrize("tolerance", ["-1", "abc", "nan"])
def test_a_tolerance_that_is_not_a_number_of_at_least_0_is_refused(rings_checkpoint, tmp_path, tolerance):
    export_checkpoint = pytest.importorskip("dltemplate.extras.export", reason="export is an extra").export_checkpoint

    with pytest.raises(ConfigError, match="must be a number of at least 0"):
        export_checkpoint(_export_config(rings_checkpoint, tmp_path, f"tolerance={tolerance}"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "victim", ["http server", "http server as it starts", "model worker", "first forked (LitServe's manager)"]
)
def test_a_serve_whose_process_died_exits_non_zero_with_one_line(rings_checkpoint, tmp_path, victim):
    import signal
    import subprocess
    import sys
    import time

    import psutil

    serving = pytest.importorskip("dltemplate.extras.serve", reason="serving is an extra, not in this project")
    _healthy, free_port = serving._healthy, serving.free_port

    port = free_port()
    command = [sys.executable, str(ROOT / "serve.py"), f"ckpt_path={rings_checkpoint}", f"port={port}"]
    command.append(f"hydra.run.dir={tmp_path / 'serve'}")
    log = (tmp_path / "serve.log").open("w")  # a file, not a pipe nobody reads while the server starts
    server = subprocess.Popen(command, cwd=tmp_path, stderr=log, stdout=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        # "as it starts": killed the moment it is forked, before the watch's first look (a busy machine's case)
        while "as it starts" not in victim and not _healthy(f"http://127.0.0.1:{port}"):
            assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.5)
        while True:  # on a busy machine the server may answer before every process is listed
            children = psutil.Process(server.pid).children()
            workers = [c for c in children if "spawn_main" in " ".join(c.cmdline())]  # spawned: the model worker
            forked = [c for c in children if c.cmdline() == psutil.Process(server.pid).cmdline()]  # manager, HTTP
            if (workers and len(forked) >= 2) or time.monotonic() > deadline:
                break
            time.sleep(0.01 if "as it starts" in victim else 0.5)
        http = max(forked, key=lambda c: (c.create_time(), c.pid))  # forked last, after LitServe's manager
        (workers[-1] if victim == "model worker" else http if victim.startswith("http") else forked[0]).kill()
        server.wait(timeout=120)  # it stops by itself
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
    stderr = (tmp_path / "serve.log").read_text()
    assert server.returncode == 1, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    # without its manager the main process may only learn that a connection closed, not which process died
    expected = "so the server stopped" if "manager" in victim else "was killed by signal 9, so the server stopped"
    assert len(errors) == 1 and expected in errors[0], stderr[-2000:]
    # without its manager, LitServe's model worker prints its own traceback; killed as it starts, the
    # stop may interrupt LitServe's own start-up code, whose output is LitServe's
    if "manager" not in victim and "as it starts" not in victim:
        assert "Traceback" not in stderr


def test_a_cache_build_removes_the_partial_folders_and_files_killed_builds_left(tmp_path):
    from dltemplate.files import cached, cached_folder

    folder = tmp_path / "chunks"
    orphans = [tmp_path / ".chunks.4242.part", tmp_path / ".chunks.77.part"]
    for orphan in orphans:
        (orphan / "failures").mkdir(parents=True)
        (orphan / "chunk-0.bin").write_bytes(bytes(100))
    kept = [tmp_path / ".chunks-other.1.part", tmp_path / "chunks.part"]  # not partials of this folder
    for other in kept:
        other.mkdir()

    def build(partial: Path) -> None:
        partial.mkdir()
        (partial / "done").write_text("")

    assert cached_folder(folder, build, "done", "test chunks") == folder and (folder / "done").is_file()
    assert not any(o.exists() for o in orphans) and all(k.exists() for k in kept)

    (tmp_path / ".cache.pt.99.part").write_bytes(b"half a cache")
    assert cached(tmp_path / "cache.pt", lambda: {"x": 1}, "test cache") == {"x": 1}
    assert not (tmp_path / ".cache.pt.99.part").exists()


@pytest.mark.slow
def test_a_chunk_build_killed_midway_leaves_no_partial_folder_after_the_next_build(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    started = tmp_path / "started"
    script = f"""
import time
from pathlib import Path
from dltemplate.files import cached_folder

def build(partial):
    partial.mkdir()
    (partial / "chunk-0.bin").write_bytes(bytes(1000))
    Path({str(started)!r}).touch()
    time.sleep(600)  # killed here

cached_folder(Path({str(tmp_path / "chunks")!r}), build, "done", "chunks")
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    builder = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.monotonic() + 120
    while not started.exists():
        assert builder.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    builder.send_signal(signal.SIGKILL)
    builder.wait()
    assert [p.name for p in tmp_path.glob(".chunks.*.part")]  # what a kill leaves

    from dltemplate.files import cached_folder

    def build(partial: Path) -> None:
        partial.mkdir()
        (partial / "done").write_text("")

    cached_folder(tmp_path / "chunks", build, "done", "chunks")
    assert not list(tmp_path.glob(".chunks.*.part")) and (tmp_path / "chunks" / "done").is_file()


def test_paths_with_equals_signs_and_commas_reach_hydra_as_one_value(tmp_path):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from dltemplate.cli import quote_paths

    run_dir = tmp_path / "runs" / "2026-01-01_12-00-00_000001_lr=0.01_hidden=64,64"  # a labelled run directory
    run_dir.mkdir(parents=True)
    values = {
        "ckpt_path": str(run_dir),
        "input": "data/a=b.csv",  # need not exist: `=` is never valid unquoted
        "output": "it's=here.csv",
    }
    argv = [f"{key}={value}" for key, value in values.items()]
    keep = ["task=rings,text", "module.optimizer.lr=0.1,0.01", "x='a=b'", "y=${oc.env:A,b=c}", "-m", "z=choice(a,b)"]
    quoted = quote_paths([*argv, *keep])
    assert quoted[len(argv) :] == keep  # sweeps, quoted values, interpolations and flags as they were
    parsed = OverridesParser.create().parse_overrides(quoted[: len(argv)])
    assert {o.key_or_group: o.value() for o in parsed} == values
    assert quote_paths([f"ckpt_path={tmp_path}/no,such"]) == [f"ckpt_path={tmp_path}/no,such"]  # a sweep then


@pytest.mark.slow
def test_a_run_directory_named_after_its_overrides_is_a_valid_unquoted_ckpt_path(rings_checkpoint, tmp_path):
    import shutil

    run_dir = tmp_path / "2026-01-01_12-00-00_000001_lr=0.01_hidden=64,64"
    shutil.copytree(rings_checkpoint.parent.parent, run_dir)
    result = run_script([str(ROOT / "evaluate.py"), f"ckpt_path={run_dir}", f"hydra.run.dir={tmp_path / 'eval'}"])
    assert result.returncode == 0, result.stderr[-2000:]
