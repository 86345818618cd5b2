"""What a data module can do beyond training, declared: the entry points check these, not attribute names.

A data module trains once it has `dims` and its loaders (`TensorDataModule` gives the loaders). The
capabilities below are optional. A data module names the ones it implements among its bases, which
says what it can do and lets the tests check that it defines every member:

    class SeriesDataModule(TensorDataModule, Forecasts): ...

The code that needs a capability checks `isinstance(datamodule, <protocol>)`, once, when its run is
built; a data module of one's own passes that check by defining the members, named base or not:

    PredictsInputs     predict.py, serve.py, api.Model.predict: raw inputs in, a table of predictions out
    PredictsRows       predict.py's keep= and its scores for an input with the target column (tables)
    Forecasts          forecast.py, serve.py's series requests, api.Model.forecast
    HasClasses         figures, image grids, serve's /info, cv's out-of-fold table, checkpoint checks

What every data module of the family has is declared on its base instead, with a default that callers
read directly: `TensorDataModule.class_names` (None), `training_device`, `target_kind`,
`example_input_array`, and the settings it inferred (`dltemplate.data.inferred.InfersSettings`).
`docs/api.md` says which protocol to implement for which entry point.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from torch import Tensor

if TYPE_CHECKING:
    import pandas as pd


@runtime_checkable
class PredictsInputs(Protocol):
    """Reads raw inputs for prediction and lays out the predictions as a table.

    Used by predict.py (a data module without it is one line naming what to use instead),
    serve.py (`input_kind` decides what a request holds) and `api.Model.predict`.
    """

    # what a serve request holds: "table" (rows of raw columns), "texts" or "images" (`serve.INPUT_KEYS`)
    input_kind: str

    def use_predict_input(self, inputs: Any) -> None:
        """Set the raw inputs the next `setup("predict")` reads (a file, a folder, a DataFrame, texts)."""
        raise NotImplementedError

    def format_predictions(self, predictions: Tensor) -> "pd.DataFrame":
        """The table of the predictions for the inputs last predicted, one row per input."""
        raise NotImplementedError


@runtime_checkable
class PredictsRows(PredictsInputs, Protocol):
    """Predicts rows of a table: predict.py keeps the input columns `predict_keep` names beside the predictions
    (keep=keys|all|none; keep=all on another data module is refused) and logs `predict_metrics` when the input
    has the target column."""

    predict_keep: str  # "keys", "all" or "none"

    def predict_metrics(self) -> dict[str, float] | None:
        """Scores of the last predictions with a "rows" count, or None when the input has no target to score."""
        raise NotImplementedError


@runtime_checkable
class Forecasts(Protocol):
    """Continues a series past its last step: forecast.py (a data module without it is one line),
    serve.py's series requests and `api.Model.forecast` (`dltemplate.forecast.forecast_table`).

    Its `hparams` hold `file`, `window`, `horizon`, `difference` and, optionally, `frequency` and `date_format`.
    """

    scale: list[float] | None  # each modelled series' training scale (one per series the net forecasts)

    def read(self, source: "str | Path | pd.DataFrame") -> "tuple[pd.DataFrame, pd.DataFrame]":
        """(levels as read, modelled series) of a series file or DataFrame, checked."""
        raise NotImplementedError

    def scaled(self, series: "pd.DataFrame") -> Tensor:
        """(steps, series) tensor of the modelled `series` as the net sees it."""
        raise NotImplementedError

    def windows(self, values: Tensor) -> tuple[Tensor, Tensor]:
        """All (inputs, targets) pairs of a scaled series."""
        raise NotImplementedError


@runtime_checkable
class HasClasses(Protocol):
    """Names the classes its targets are codes of (None: no classes, e.g. regression).

    Read by the figures and image grids (callbacks), serve.py (`/info`, class tables for feature
    vectors), cv.py (out-of-fold tables) and the checkpoint checks. `TensorDataModule` has it (None).
    """

    class_names: Sequence[str] | None
