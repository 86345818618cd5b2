"""Tables from CSV files: any CSV with a header row, for classification or regression."""

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
from torch.utils.data import Dataset, TensorDataset

from dltemplate.data.csv_files import read_csv
from dltemplate.data.download import ensure_file
from dltemplate.data.inferred import Inferred
from dltemplate.data.predictions import class_table
from dltemplate.data.protocols import PredictsRows
from dltemplate.data.table_columns import ROLES, Roles, infer_roles
from dltemplate.data.table_encoder import TableEncoder, to_numeric
from dltemplate.data.targets import (
    MissingTarget,
    as_labels,
    balanced_class_weights,
    check_missing_target,
    rows_with_target,
)
from dltemplate.data.tensors import HeldOutRows, TensorDataModule, require_split, stratified_holdout
from dltemplate.errors import ConfigError, DataError, MissingColumnError
from dltemplate.instantiate import instantiate

log = logging.getLogger(__name__)


class TabularDataModule(HeldOutRows, TensorDataModule, PredictsRows):
    """Reads a training CSV (and optionally a test CSV), encodes it, and serves tensors.

    Feature columns are every column except the target and `id_column`. Each one's role (numeric,
    categorical, date, or dropped as an id or free text) is inferred from the training split by the
    rules of `dltemplate.data.table_columns`; `numeric`, `categorical`, `dates` and `drop` name
    columns whose role is given instead: an explicit role always wins for the columns it names. The
    complete lists are recorded with `infer` (the run's inferred table) and written into the run
    config. Derived columns are computed first, from the raw table. Roles, encoding statistics,
    category codes and class names are fitted on the training split only and saved in checkpoints
    (`state_dict`), so prediction needs nothing but the checkpoint and a raw CSV.

    Args:
        train_file: CSV with the training rows (also the validation rows, and the test rows when
            there is no `test_file`).
        target: Column to predict.
        test_file: CSV of held-out test rows; None splits them off `train_file`.
        task: "classification" (any number of classes) or "regression".
        numeric: Columns to treat as numeric whatever their type; None: inferred.
        categorical: Columns to treat as categorical whatever their type (e.g. a class number);
            None: inferred.
        dates: Columns of dates (any one format per column), encoded as their year, month, ...;
            None: inferred.
        drop: Columns to ignore (after derived columns are computed from them); None: inferred (ids,
            free text, empty columns), named in a warning.
        max_distinct_fraction: A text column with more distinct values than this share of the
            training rows is free text or an id, and dropped unless named in `categorical`.
        id_column: Column copied into prediction files, never used as a feature.
        derived: New columns, name → partial config of a function(frame) → column
            (see `dltemplate.data.features`).
        min_category_count: Rarer categories are coded as unknown.
        val_fraction: Share of the training rows held out for validation (stratified by class).
        test_fraction: Share held out for testing when there is no `test_file`.
        download: Public source of missing files: {"train_file" | "test_file": {url:, md5:}}.
        sep: Column separator of the CSV files.
        header: Whether the files' first row names the columns; None detects it
            (`csv_files.detect_header`): without one, columns are named by position, "0", "1", ...
        missing_target: Rows whose target is empty: "drop" them (counted in a warning per file) or
            stop with an "error".
        batch_size, num_workers, split_seed, on_device: see `TensorDataModule`.
    """

    input_kind = "table"  # what a serve request holds (`dltemplate.data.protocols.PredictsInputs`)
    # input columns beside the predictions (`format_predictions`); predict.py sets its keep= (default keys)
    predict_keep: Literal["keys", "all", "none"] = "none"

    def __init__(
        self,
        train_file: str,
        target: str,
        test_file: str | None = None,
        task: Literal["classification", "regression"] = "classification",
        numeric: Sequence[str] | None = None,
        categorical: Sequence[str] | None = None,
        dates: Sequence[str] | None = None,
        drop: Sequence[str] | None = None,
        max_distinct_fraction: float = 0.5,
        id_column: str | None = None,
        derived: Mapping[str, Mapping[str, Any]] | None = None,
        min_category_count: int = 1,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        download: Mapping[str, Mapping[str, str]] | None = None,
        sep: str = ",",
        header: bool | None = None,
        missing_target: MissingTarget = "drop",
        batch_size: int = 64,
        num_workers: int = 0,
        on_device: bool | None = None,
        split_seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, split_seed, on_device=on_device)
        if task not in ("classification", "regression"):
            raise ConfigError(f"data.task must be 'classification' or 'regression', got {task!r}")
        check_missing_target(missing_target)
        if not 0 < max_distinct_fraction <= 1:
            raise ConfigError(f"data.max_distinct_fraction must be in (0, 1], got {max_distinct_fraction}")
        # column names as text: data.target=0 names the first column of a file without a header row
        target, id_column = str(target), None if id_column is None else str(id_column)
        numeric, categorical, dates, drop = (
            None if names is None else [str(c) for c in names] for names in (numeric, categorical, dates, drop)
        )
        self.save_hyperparameters(logger=False)
        self.encoder: TableEncoder | None = None
        self.classes: list[str] | None = None
        self.target_stats: dict[str, float] = {}
        self.predict_input: str | Path | pd.DataFrame | None = None  # set by `use_predict_input`
        self.predict_frame: pd.DataFrame | None = None
        self.predict_set: Dataset | None = None
        self.last_predictions: torch.Tensor | None = None

    # ---- reading -------------------------------------------------------------------------------

    def fetch_data(self) -> None:
        download = self.hparams.download or {}
        layout = f"a CSV file with a header row that includes the target column {self.hparams.target!r}"
        for key in ("train_file", "test_file"):
            path = self.hparams[key]
            if path is not None:
                spec = download.get(key, {})
                ensure_file(path, spec.get("url"), spec.get("md5"), layout)

    def read(self, source: str | Path | pd.DataFrame, name: str | None = None) -> tuple[pd.DataFrame, str]:
        """Read a raw CSV (or take a DataFrame) and add the derived columns; return it and its name."""
        if isinstance(source, pd.DataFrame):
            frame, name = source.copy(), name or "the given DataFrame"
        else:
            frame, name = read_csv(source, sep=self.hparams.sep, header=self.hparams.header), name or str(source)
            if self.hparams.header is None:  # the training file's decision holds for every later file
                self.infer("header", *frame.attrs["header"])
        if len(frame) and not len(frame.columns):
            raise DataError(
                f"{name} has {len(frame)} row(s) but no columns (an empty row such as {{}}): give each row the "
                "model's input columns"
            )
        if frame.empty:
            raise DataError(f"{name} has a header but no rows")
        for column, function in self._derived_functions().items():
            try:
                frame[column] = function(frame)
            except KeyError as error:
                raise MissingColumnError(
                    f"derived column {column!r} cannot be computed from {name}, which lacks a column it needs "
                    f"({error.args[0] if error.args else error}); it has {list(frame.columns)}"
                ) from None
        return frame, name

    def read_labelled(self, path: str) -> tuple[pd.DataFrame, str]:
        """`read`, then leave out (or refuse) the rows whose target is empty: `missing_target`."""
        frame, name = self.read(path)
        return rows_with_target(frame, self.hparams.target, name, self.hparams.missing_target), name

    def _check_configured_columns(self, frame: pd.DataFrame, name: str) -> None:
        """Refuse roles naming a column the training file lacks, or one column in two roles."""
        hp = self.hparams
        named = {role: list(hp[role] or []) for role in ROLES}
        everything = {c for columns in named.values() for c in columns} | ({hp.id_column} - {None})
        unknown = sorted(everything - set(frame.columns))
        if unknown:
            raise MissingColumnError(
                f"config names column(s) {unknown} that {name} does not have; it has {list(frame.columns)}: "
                "fix data.numeric, data.categorical, data.dates, data.drop or data.id_column"
            )
        for i, role in enumerate(ROLES):
            for other in ROLES[i + 1 :]:
                both = sorted(set(named[role]) & set(named[other]))
                if both:
                    raise ConfigError(f"column(s) {both} are listed under both data.{role} and data.{other}: keep one")

    def _derived_functions(self) -> dict[str, Callable[[pd.DataFrame], pd.Series]]:
        # checkpoints store this config: restoring one checks its features against the allowlist (registry.py)
        return {
            column: instantiate({**spec, "_partial_": True}, f"data.derived.{column}")
            for column, spec in (self.hparams.derived or {}).items()
        }

    # ---- fitting and encoding --------------------------------------------------------------------

    def column_roles(self, frame: pd.DataFrame, name: str) -> Roles:
        """The role of each feature column of the training rows `frame`: explicit, else inferred."""
        hp = self.hparams
        excluded = {hp.target, hp.id_column}
        columns = [column for column in frame.columns if column not in excluded]
        explicit = {role: list(hp[role] or []) for role in ROLES}
        roles = infer_roles(frame, columns, explicit, hp.max_distinct_fraction, name)
        left_out = {c: why for c, why in roles.why["drop"].items() if why != "explicit"}
        if left_out:
            log.warning(
                "%s: left out column(s) %s (%s); name them under data.numeric, data.categorical or data.dates "
                "to use them",
                name,
                list(left_out),
                "; ".join(f"{c}: {why}" for c, why in left_out.items()),
            )
        for column in roles.categorical:
            if roles.why["categorical"][column] == "explicit" and frame[column].nunique() == len(frame) > 20:
                log.warning(
                    "categorical column %r of %s has a different value in every row: an identifier? "
                    "set data.id_column or list it under data.drop",
                    column,
                    name,
                )
        return roles

    def record_roles(self, roles: Roles) -> None:
        """Record the complete role lists (the inferred table, the run config): an explicit list keeps
        its columns and gains the inferred ones; an unchanged explicit list is not shown."""
        parts = self.encoder.date_parts
        for role in ROLES:
            value = list(roles.dates) if role == "dates" else list(getattr(roles, role))
            why = dict(roles.why[role])
            for column in parts:
                if why.get(column):
                    why[column] += " → " + (", ".join(parts[column]) or "nothing: the date never changes")
            reason = _reason(why)
            configured = self.hparams[role]
            if configured is None:
                self.infer(role, value, reason)
            elif set(value) != set(configured):
                self.hparams[role] = value
                self.inferred[role] = Inferred(value, reason)

    def fit(self, frame: pd.DataFrame, name: str) -> None:
        """Work out the column roles, fit the encoder and the target coding on the training split `frame`."""
        roles = self.column_roles(frame, name)
        self.encoder = TableEncoder(roles.numeric, roles.categorical, self.hparams.min_category_count, roles.dates)
        self.encoder.fit(frame, name)
        self.record_roles(roles)
        target = frame[self.hparams.target]
        if self.hparams.task == "classification":
            self.classes = sorted(as_labels(target.dropna()).unique())
            if len(self.classes) < 2:
                raise DataError(
                    f"target column {self.hparams.target!r} of {name} has a single class {self.classes}: "
                    "classification needs at least two"
                )
        else:
            values = to_numeric(target, name)
            if values.nunique() < 2:
                raise DataError(
                    f"target column {self.hparams.target!r} of {name} has a single value {values.iloc[0]} in the "
                    "training rows: there is nothing to learn; check data.target"
                )
            self.target_stats = {"mean": float(values.mean()), "std": float(values.std(ddof=0)) or 1.0}

    def encode_target(self, frame: pd.DataFrame, name: str) -> torch.Tensor:
        column = self.hparams.target
        if column not in frame.columns:
            raise MissingColumnError(
                f"target column {column!r} is not in {name}; it has {list(frame.columns)}: fix data.target"
            )
        target = frame[column]
        if target.isna().any():
            raise DataError(f"target column {column!r} of {name} is missing in {int(target.isna().sum())} rows")
        if self.classes is None:
            return torch.tensor(to_numeric(target, name).to_numpy(), dtype=torch.float32)
        index = {c: i for i, c in enumerate(self.classes)}
        labels = as_labels(target)
        codes = labels.map(index)
        if codes.isna().any():
            unseen = sorted(labels[codes.isna()].unique())
            raise DataError(
                f"{name} has target classes {unseen} that the training rows do not have; fix them, or train on "
                "rows of those classes too"
            )
        return torch.tensor(codes.to_numpy(), dtype=torch.long)

    def dataset(self, frame: pd.DataFrame, name: str) -> TensorDataset:
        return TensorDataset(self.encoder.transform(frame, name), self.encode_target(frame, name))

    # ---- Lightning hooks -------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        if stage == "predict":
            self._setup_predict()
            return
        if self.train_set is not None:
            return
        hp = self.hparams
        frame, name = self.read_labelled(hp.train_file)
        self._check_configured_columns(frame, name)
        note = ""
        if hp.test_file is None:
            rest, test_frame = self.split_frame(frame, hp.test_fraction)
            test_name, note = f"{name} (test split)", " (after the test split)"
            sizes = {"training": len(rest), "test": len(test_frame)}
            require_split(sizes, name, "rows", f"data.test_fraction={hp.test_fraction}")
        else:
            rest, (test_frame, test_name) = frame, self.read_labelled(hp.test_file)
        val_mask = self.validation_mask(self._strata(rest), len(rest), hp.val_fraction).numpy()
        train_frame, val_frame = rest[~val_mask], rest[val_mask]
        sizes = {"training": len(train_frame), "validation": len(val_frame)}
        require_split(sizes, name, "rows", f"data.val_fraction={hp.val_fraction}", note)
        if self.encoder is None:  # restored from a checkpoint otherwise: never refit
            self.fit(train_frame, name)
        self.train_set = self.dataset(train_frame, name)
        self.val_set = self.dataset(val_frame, f"{name} (validation split)")
        self.test_set = self.dataset(test_frame, test_name)

    def split_frame(self, frame: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Split rows into (kept, held out), stratified by class for classification."""
        if not 0 < fraction < 1:
            raise ConfigError(f"data.val_fraction and data.test_fraction must be between 0 and 1, got {fraction}")
        mask = stratified_holdout(self._strata(frame), len(frame), self.hparams.split_seed, fraction=fraction).numpy()
        return frame[~mask], frame[mask]

    def _strata(self, frame: pd.DataFrame) -> list[str] | None:
        """What splits are stratified by: the class of each row (classification), else nothing."""
        return list(as_labels(frame[self.hparams.target])) if self.hparams.task == "classification" else None

    def use_predict_input(self, inputs: str | Path | pd.DataFrame) -> None:
        """The rows the next `setup("predict")` reads: a CSV path or a DataFrame of raw columns (target optional)."""
        self.predict_input = inputs

    def _setup_predict(self) -> None:
        if self.predict_input is None:
            raise RuntimeError("call use_predict_input (a CSV path or a DataFrame) before predicting")
        if self.encoder is None:
            raise RuntimeError("the data module has no fitted encoder: restore it from a checkpoint first")
        frame, name = self.read(self.predict_input)
        self.predict_frame = frame
        self.predict_set = TensorDataset(self.encoder.transform(frame, name, infinite="missing"))

    def predict_dataloader(self):
        return self._loader(self.predict_set, shuffle=False)

    def format_predictions(self, predictions: torch.Tensor) -> pd.DataFrame:
        """Table of predictions for the rows of the predict input, after the input columns `predict_keep` names.

        `predict_keep`: "keys" (`key_columns`, or the row's position in the input as `row` when it has
        none), "all" (every input column, the target too when present) or "none" (only the configured
        id column, as before). Classification: the predicted class in `prediction` and one
        `prob_<class>` column per class; regression: the predicted value in `prediction`.
        """
        frame, self.last_predictions = self.predict_frame, predictions
        if self.predict_keep == "all":  # the input's own columns, not the derived ones
            table = frame[[c for c in frame.columns if c not in (self.hparams.derived or {})]].copy()
        elif self.predict_keep == "keys":
            keys = self.key_columns(frame)
            table = frame[keys].copy() if keys else pd.DataFrame({"row": range(len(frame))}, index=frame.index)
        else:
            own_id = [self.hparams.id_column] if self.hparams.id_column else []
            table = frame[own_id].copy()
        if self.classes is None:
            predicted = pd.DataFrame({"prediction": predictions.reshape(-1).numpy()}, index=table.index)
        else:
            predicted = class_table(predictions, self.classes, index=table.index)
        clash = sorted(set(table.columns) & set(predicted.columns))
        if clash:
            raise DataError(
                f"the input's column(s) {clash} have the names of prediction columns: rename them, or keep=keys"
            )
        return pd.concat([table, predicted], axis=1)

    def key_columns(self, frame: pd.DataFrame) -> list[str]:
        """The columns of `frame` that identify its rows: `id_column` when set, else the columns left out of
        the features (`drop`) whose values are all present and distinct, each a whole number or one word."""
        hp = self.hparams
        if hp.id_column:
            return [hp.id_column]
        keys = []
        for column in hp.drop or []:
            values = frame[column] if column in frame.columns else None
            if values is None or values.isna().any() or not values.is_unique:
                continue
            numbers = pd.to_numeric(values, errors="coerce")
            whole = numbers.notna().all() and bool((numbers == numbers.round()).all())
            if whole or not values.astype(str).str.contains(r"\s").any():
                keys.append(column)
        return keys

    def predict_metrics(self) -> dict[str, float] | None:
        """Scores of the last predictions when the predict input has the target column (its empty cells left out)."""
        target = self.hparams.target
        if self.predict_frame is None or target not in self.predict_frame.columns or self.last_predictions is None:
            return None
        known = self.predict_frame[target].notna().to_numpy()
        if not known.any():
            return None
        predictions = self.last_predictions[torch.from_numpy(known)]
        truth = self.encode_target(self.predict_frame[known], "the prediction input")
        if self.classes is None:
            error = predictions.reshape(-1) - truth
            total = ((truth - truth.mean()) ** 2).sum()
            r2 = 1 - float((error**2).sum() / total) if total > 0 else float("nan")
            scores = {"mae": float(error.abs().mean()), "rmse": float(error.pow(2).mean().sqrt()), "r2": r2}
        else:
            probs = predictions.reshape(len(predictions), -1).float()  # as `class_table` reads them
            if probs.shape[1] == 1:  # binary: P(second class)
                probs = torch.cat([1 - probs, probs], dim=1)
            scores = {"acc": float((probs.argmax(dim=1) == truth).float().mean())}
        return {**scores, "rows": float(int(known.sum()))}

    # ---- what nets and checkpoints need ----------------------------------------------------------

    @property
    def class_names(self) -> list[str] | None:
        return self.classes

    @property
    def target_kind(self) -> str:
        return self.hparams.task  # data.task: classification or regression

    @property
    def dims(self) -> dict[str, Any]:
        if self.encoder is None:
            raise RuntimeError("dims are known once setup('fit') has run")
        dims: dict[str, Any] = {"num_numeric": self.encoder.num_numeric, "cardinalities": self.encoder.cardinalities}
        if self.classes is None:
            return {
                **dims,
                "out_features": 1,
                "target_mean": self.target_stats["mean"],
                "target_std": self.target_stats["std"],
            }
        k = len(self.classes)
        balanced = balanced_class_weights(self.train_set.tensors[1], k)
        return {**dims, "num_classes": k, "out_features": 1 if k == 2 else k, "class_weights": balanced}

    def state_dict(self) -> dict[str, Any]:
        if self.encoder is None:
            return {}
        return {"encoder": self.encoder.state_dict(), "classes": self.classes, "target_stats": self.target_stats}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.encoder = TableEncoder.from_state(state["encoder"])
            self.classes, self.target_stats = state["classes"], state["target_stats"]


def _reason(why: Mapping[str, str]) -> str:
    """Columns grouped by why they have a role: "numbers" / "text" alone, other reasons with their columns."""
    groups: dict[str, list[str]] = {}
    for column, reason in why.items():
        groups.setdefault(reason, []).append(column)
    if not groups:
        return "no such column"
    return "; ".join(r if r in ("numbers", "text") else f"{', '.join(c)}: {r}" for r, c in groups.items())
