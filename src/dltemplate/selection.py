"""Which rows validate a run, chosen from outside its data module: the folds of a cross-validation.

A data module whose validation rows are held out of its training rows (tables, images, texts: see
`dltemplate.data.tensors.HeldOutRows`) validates on `data.val_fraction` of them. Given a `Split`
through `use_split` before it is set up, it validates on the rows the split names instead: fold
`fold` of `folds`, dealt by `stratified_folds` with `seed`. The data module knows nothing of folds.

A run config asks for a split with `cv.folds` and `cv.fold` (`cv.seed` seeds the deal): `cv.py` gives
every fold's run these keys, and `build.build_datamodule` hands the split to the data module
(`run_split`, `give_split`). `cv.folds` without `cv.fold` is a whole cross-validation (`selection_of`).
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from lightning.pytorch import LightningDataModule
from omegaconf import DictConfig, open_dict
from torch import Tensor

from dltemplate.data.tensors import shuffled_classes
from dltemplate.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# the data settings cross-validation used to be given as, and the keys that replaced them
OLD_DATA_KEYS = {"folds": "cv.folds", "fold": "cv.fold", "fold_seed": "cv.seed"}


@dataclass(frozen=True)
class Split:
    """Fold `fold` of `folds` validates; the training rows are dealt into the folds with `seed`."""

    folds: int
    fold: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        values = (self.folds, self.fold, self.seed)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values) or not (
            self.folds >= 2 and 0 <= self.fold < self.folds
        ):
            raise ConfigError(
                "cross-validation needs whole numbers cv.folds >= 2 and 0 <= cv.fold < cv.folds, "
                f"got cv.folds={self.folds!r}, cv.fold={self.fold!r}"
            )

    def validation_mask(self, labels: Sequence[Any] | None, size: int) -> Tensor:
        """Boolean mask (size,) of the rows that validate: those of fold `fold`, stratified by `labels`."""
        if size < self.folds:
            raise DataError(f"{size} training rows cannot be dealt into cv.folds={self.folds} folds")
        return stratified_folds(labels, size, self.folds, self.seed) == self.fold


def stratified_folds(labels: Sequence[Any] | None, size: int, folds: int, seed: int) -> Tensor:
    """The fold (0 .. folds - 1) of each of `size` rows, stratified by `labels` (None: not stratified).

    The rows of each class, shuffled by `seed` (`shuffled_classes`, the shuffle of the validation
    fraction too), are dealt class after class to folds 0, 1, ..., folds - 1 in turn: every row lands
    in exactly one fold, and every fold gets each class in proportion (sizes differ by at most one).
    """
    order = torch.cat(shuffled_classes(labels, size, seed))
    fold_of = torch.empty(size, dtype=torch.long)
    fold_of[order] = torch.arange(size) % folds
    return fold_of


@runtime_checkable
class TakesSplit(Protocol):
    """A data module that validates on the rows a `Split` names when given one before `setup`."""

    def use_split(self, split: Split) -> None: ...


def selection_of(cfg: DictConfig) -> Literal["cv", "backtest"] | None:
    """What `cfg` asks for: "cv" to cross-validate (`cv.folds` without `cv.fold`), "backtest" for
    `backtest.origins`, else None: one run (`cv.fold` set: one run that validates on that fold)."""
    cv = cfg.get("cv") or {}
    if cv.get("folds") and cv.get("fold") is None:
        return "cv"
    if (cfg.get("backtest") or {}).get("origins"):
        return "backtest"
    return None


def run_split(cfg: DictConfig) -> Split | None:
    """The split one run's data module is to validate on: fold `cv.fold` of `cv.folds`, dealt with
    `cv.seed`; None without `cv.fold` (`data.val_fraction`).

    The data keys it replaces (`data.folds`, `data.fold`, `data.fold_seed`) are moved first
    (`move_old_data_keys`).
    """
    move_old_data_keys(cfg)
    cv = cfg.get("cv") or {}
    if cv.get("fold") is None:
        return None
    if cv.get("folds") is None:
        raise ConfigError(f"cv.fold={cv.fold} picks one fold of cv.folds: set cv.folds too (e.g. cv.folds=5)")
    return Split(cv.folds, cv.fold, cv.get("seed") or 0)


def give_split(datamodule: LightningDataModule, split: Split) -> None:
    """Make `datamodule` validate on `split`, or refuse a data module that takes none."""
    if not isinstance(datamodule, TakesSplit):
        raise ConfigError(
            f"cv.fold={split.fold} needs a data module that takes a validation split (tables, images and texts); "
            f"{type(datamodule).__name__} takes none"
        )
    datamodule.use_split(split)


def move_old_data_keys(cfg: DictConfig) -> None:
    """Move `data.folds`, `data.fold`, `data.fold_seed` (how an earlier version was given a fold) to
    `cv.folds`, `cv.fold`, `cv.seed`, with a warning; dropped where `cv.folds` is set already."""
    data = cfg.get("data")
    old = {key: data[key] for key in OLD_DATA_KEYS if key in data} if data is not None else {}
    if not old:
        return
    given = (cfg.get("cv") or {}).get("folds")
    with open_dict(cfg):
        for key in old:
            del cfg.data[key]
        if "cv" not in cfg or cfg.cv is None:
            cfg.cv = {"folds": None, "fold": None, "repeats": 1, "seed": 0}
        if old.get("folds") is not None and given is None:
            cfg.cv.folds, cfg.cv.fold = old["folds"], old.get("fold") or 0
            if old.get("fold_seed") is not None:
                cfg.cv.seed = old["fold_seed"]
    names = ", ".join(f"data.{key}" for key in old)
    if old.get("folds") is not None and given is None:
        new = " ".join(f"{OLD_DATA_KEYS[key]}={value}" for key, value in old.items() if value is not None)
        log.warning("%s are no longer data settings: use %s (one fold; cv.folds alone runs every fold)", names, new)
    else:
        log.warning("%s are no longer data settings and are ignored: use cv.folds, cv.fold, cv.seed", names)


def drop_old_data_keys(data: dict[str, Any]) -> dict[str, Any]:
    """A restored run's data settings without the fold keys an earlier version's checkpoint may hold
    (they chose its validation rows, which a restored run does not use)."""
    return {key: value for key, value in data.items() if key not in OLD_DATA_KEYS}
