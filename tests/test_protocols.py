"""The declared capabilities of data modules and modules (`dltemplate.data.protocols`, `StepModule`).

Every data module and module class the package ships is found by walking it (no list to keep up):
each implements a protocol whole or not at all, and says what it can do where the entry points look.
A data module without a capability that a run needs is one line when the run is built.
"""

import importlib
import importlib.util
import inspect
import pkgutil
import typing
from pathlib import Path

import pandas as pd
import pytest
from lightning.pytorch import LightningDataModule, LightningModule
from torchmetrics import MeanAbsoluteError, MetricCollection

import dltemplate.data
import dltemplate.modules
from dltemplate.callbacks.summary import custom_scalars_layout
from dltemplate.cli import run_entry_point
from dltemplate.data import protocols
from dltemplate.data.inferred import InfersSettings
from dltemplate.data.protocols import Forecasts, HasClasses, PredictsInputs, PredictsRows
from dltemplate.data.tensors import TensorDataModule
from dltemplate.modules.step import StepModule
from tests.helpers import CONFIG_DIR


def classes_in(package, base: type) -> list[type]:
    """The subclasses of `base` defined anywhere in `package` (the core and every family folder this
    project has), found by walking it."""
    found = []
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
        module = importlib.import_module(info.name)
        found += [
            value
            for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, base) and value.__module__ == module.__name__
        ]
    return sorted(found, key=lambda cls: cls.__qualname__)


DATA_MODULES = classes_in(dltemplate, LightningDataModule)
MODULES = classes_in(dltemplate, StepModule)
PROTOCOLS = [
    value
    for value in vars(protocols).values()
    if isinstance(value, type) and typing.Protocol in value.__mro__ and value.__module__ == protocols.__name__
]


def members(protocol: type) -> set[str]:
    """The names `protocol` declares, its own and those of the protocols it extends."""
    names: set[str] = set()
    for cls in protocol.__mro__:
        if cls.__module__ == protocols.__name__:
            names |= set(vars(cls).get("__annotations__", {})) | {n for n in vars(cls) if not n.startswith("_")}
    return names


def declares(cls: type, name: str) -> bool:
    """Whether `cls` or a base other than a protocol defines `name` (a method, property or class attribute)
    or declares it with an annotation: the protocols' own stubs do not count."""
    return any(
        name in vars(c) or name in vars(c).get("__annotations__", {})
        for c in cls.__mro__
        if c.__module__ != protocols.__name__ and c not in (typing.Protocol, typing.Generic, object)
    )


def implements(cls: type, protocol: type) -> bool:
    return all(declares(cls, name) for name in members(protocol))


def test_the_package_is_walked():
    assert TensorDataModule in DATA_MODULES and len(DATA_MODULES) > 1
    assert {PredictsInputs, PredictsRows, Forecasts, HasClasses} <= set(PROTOCOLS)
    assert members(PredictsRows) >= {"use_predict_input", "format_predictions", "input_kind", "predict_metrics"}
    assert not implements(TensorDataModule, PredictsInputs) and not declares(PredictsRows, "predict_keep")


@pytest.mark.parametrize("cls", DATA_MODULES, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda protocol: protocol.__name__)
def test_a_data_module_defines_every_member_of_the_protocols_it_names(cls, protocol):
    """A protocol named among the bases but not implemented whole would pass `isinstance` and fail in use."""
    if protocol in cls.__mro__:
        missing = sorted(name for name in members(protocol) if not declares(cls, name))
        assert not missing, f"{cls.__name__} names {protocol.__name__} but does not define {missing}"


@pytest.mark.parametrize("cls", DATA_MODULES, ids=lambda cls: cls.__name__)
def test_each_data_module_offers_what_its_family_needs(cls):
    if issubclass(cls, TensorDataModule):  # read directly by the callbacks, serve.py, cv.py and build.py
        assert HasClasses in cls.__mro__ and issubclass(cls, InfersSettings)
        assert declares(cls, "training_device") and declares(cls, "example_input_array")
    kind = inspect.getattr_static(cls, "target_kind", None)
    if isinstance(kind, str):  # a forecasting data module is what forecast.py takes, and only it
        assert (Forecasts in cls.__mro__) == (kind == "forecasting")
    if kind is not None and kind != "forecasting" and Forecasts not in cls.__mro__:
        # a data module that reads files predicts from them: a table, texts or images (the synthetic ones do not)
        reads_files = "fetch_data" in vars(cls)
        assert (PredictsInputs in cls.__mro__) == reads_files, f"{cls.__name__} reads files: it predicts from them"
    if PredictsInputs in cls.__mro__ and importlib.util.find_spec("dltemplate.extras.serve"):  # serve is an extra
        from dltemplate.extras.serve import INPUT_KEYS

        assert cls.input_kind in INPUT_KEYS and cls.input_kind not in ("series", "features")  # serve knows them


@pytest.mark.parametrize("cls", DATA_MODULES, ids=lambda cls: cls.__name__)
def test_an_instance_passes_the_checks_its_class_declares(cls):
    """The entry points check instances (`isinstance`): they agree with the class, for the data modules that
    build without settings (the synthetic ones)."""
    if any(p.default is p.empty for p in list(inspect.signature(cls).parameters.values())):
        pytest.skip(f"{cls.__name__} needs settings to be built")
    datamodule = cls()
    for protocol in PROTOCOLS:
        assert isinstance(datamodule, protocol) == (protocol in cls.__mro__), protocol.__name__


def test_a_data_module_of_ones_own_has_none_of_the_capabilities():
    assert not any(isinstance(LightningDataModule(), protocol) for protocol in PROTOCOLS)


@pytest.mark.parametrize("cls", MODULES, ids=lambda cls: cls.__name__)
def test_a_module_compares_with_naive_forecasts_exactly_when_it_forecasts(cls):
    kind = inspect.getattr_static(cls, "target_kind", None)
    if isinstance(kind, str):
        assert cls.compares_to_naive == (kind == "forecasting")


class _Forecaster(StepModule):
    compares_to_naive = True

    def __init__(self) -> None:
        super().__init__()
        self.train_metrics, self.test_metrics = None, None
        self.val_metrics = MetricCollection({"mae": MeanAbsoluteError()}, prefix="val/")


def test_the_run_summary_charts_what_a_step_module_declares():
    layout = custom_scalars_layout(_Forecaster())
    assert set(layout["train vs val"]) == {"loss", "mae"}
    assert "forecast error vs naive" in layout
    plain = custom_scalars_layout(LightningModule())  # a module of one's own: its loss
    assert set(plain) == {"train vs val"} and set(plain["train vs val"]) == {"loss"}


# ---- a capability a run needs is checked when the run is built --------------------------------------


class _Bare(LightningDataModule):
    """A data module that trains but reads no inputs and continues no series."""


class _Audio(LightningDataModule):
    """Reads its own inputs, of a kind serve.py has no request for."""

    input_kind = "audio"

    def use_predict_input(self, inputs) -> None:
        self.inputs = inputs

    def format_predictions(self, predictions) -> pd.DataFrame:
        return pd.DataFrame({"prediction": predictions.tolist()})


def one_error_line(capsys, call) -> str:
    """Run `call` as an entry point would; return its single `error:` line (exit status 2 checked)."""
    with pytest.raises(SystemExit) as stopped:
        run_entry_point(lambda _: call(), None)
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def _restored(datamodule: LightningDataModule):
    def restore(*args, **kwargs):
        return LightningModule(), datamodule, {"task_name": "own"}

    return restore


def _not_built(*args, **kwargs):
    raise AssertionError("the run went on past its check")


def _config(name: str, tmp_path: Path, *overrides: str):
    from dltemplate.config import compose_config

    return compose_config(CONFIG_DIR, ["ckpt_path=own.ckpt", *overrides], output_dir=tmp_path / name, config_name=name)


def test_predicting_with_a_data_module_that_reads_no_inputs_is_one_line_before_the_trainer(
    monkeypatch, tmp_path, capsys
):
    import dltemplate.predict as predicting

    monkeypatch.setattr(predicting, "restore", _restored(_Bare()))
    monkeypatch.setattr(predicting, "build_trainer", _not_built)
    cfg = _config("predict", tmp_path, f"input={tmp_path / 'rows.csv'}")
    line = one_error_line(capsys, lambda: predicting.main(cfg))
    assert "(_Bare) reads no input files, so predict.py cannot use it" in line
    assert "evaluate.py ckpt_path=" in line
    assert not Path(cfg.output).exists()


def test_forecasting_with_a_data_module_that_continues_no_series_is_one_line(monkeypatch, tmp_path, capsys):
    import dltemplate.forecast as forecasting

    monkeypatch.setattr(forecasting, "restore", _restored(_Bare()))
    monkeypatch.setattr(forecasting, "forecast_table", _not_built)
    cfg = _config("forecast", tmp_path)
    line = one_error_line(capsys, lambda: forecasting.main(cfg))
    assert "not a forecasting model (_Bare): give the checkpoint of a time-series task" in line
    assert not Path(cfg.output).exists()


def test_serving_inputs_of_a_kind_serve_has_no_request_for_is_one_line_before_the_server(monkeypatch, tmp_path, capsys):
    serving = pytest.importorskip("dltemplate.extras.serve", reason="serving is an extra, not in this project")

    monkeypatch.setattr(serving, "find_checkpoint", Path)
    monkeypatch.setattr(serving, "restore", _restored(_Audio()))
    monkeypatch.setattr(serving.litserve, "LitServer", _not_built)
    cfg = _config("serve", tmp_path)
    line = one_error_line(capsys, lambda: serving.build_server(cfg))
    assert "(_Audio) declares input_kind='audio', which serve.py cannot take" in line
    assert serving.input_kind(_Bare()) == "features"  # the net's input vectors, as for the synthetic tasks


def test_the_api_refuses_what_the_data_module_cannot_do():
    from dltemplate.errors import CheckpointError, ConfigError
    from dltemplate.forecast import check_forecasts
    from dltemplate.predict import check_predicts

    audio = _Audio()
    assert check_predicts(audio) is audio
    with pytest.raises(CheckpointError, match="reads no input files"):
        check_predicts(_Bare())
    with pytest.raises(ConfigError, match="not a forecasting model"):
        check_forecasts(audio)
