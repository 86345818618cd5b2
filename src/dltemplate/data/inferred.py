"""Settings a data module works out from the training data: recorded once, shown as a table, saved with the run.

A data setting left null in the config means "from the data". Precedence everywhere: an explicit
setting, then what the chosen net requires (`build.apply_net_data_settings`, which runs first), then
what the data module infers here. A data module calls `infer` for each setting it works out while
setting up; `build.build_datamodule` then writes the values into the run config (so the checkpoint
holds them and a restored run infers nothing), prints the table once and saves it as the run
directory's `inferred.yaml`.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dltemplate.files import write_atomically

INFERRED_FILE = "inferred.yaml"


@dataclass(frozen=True)
class Inferred:
    """One inferred setting: its value (plain data) and what in the data decided it."""

    value: Any
    reason: str


class InfersSettings:
    """Mixin for data modules (after `save_hyperparameters`): `infer` fills a null setting and records why.

    Keys are data settings (`hparams` keys, written back to `cfg.data`) or, prefixed `dims.`, sizes a
    net reads from `dims` that the data decided (shown in the table, not config settings).
    """

    @property
    def inferred(self) -> dict[str, Inferred]:
        if "_inferred" not in self.__dict__:
            self.__dict__["_inferred"] = {}
        return self.__dict__["_inferred"]

    def infer(self, key: str, value: Any, reason: str) -> Any:
        """The setting `key`: its configured value when not None, else `value`, recorded with `reason`."""
        if not key.startswith("dims."):
            configured = self.hparams.get(key)
            if configured is not None:
                return configured
            self.hparams[key] = value
        self.inferred[key] = Inferred(value, reason)
        return value


def format_table(inferred: Mapping[str, Inferred]) -> str:
    """The inferred settings as an aligned three-column text table: setting, value, from."""
    rows = [("setting", "value", "from")]
    for key, item in inferred.items():
        name = key if key.startswith("dims.") else f"data.{key}"
        rows.append((name, _short(item.value), item.reason))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    return "\n".join(f"  {a:<{widths[0]}}  {b:<{widths[1]}}  {c}" for a, b, c in rows)


def _short(value: Any, limit: int = 100) -> str:
    """`value` as text, cut at `limit` characters (inferred.yaml has it whole)."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def save_table(inferred: Mapping[str, Inferred], folder: str | Path) -> Path:
    """Write `inferred.yaml` (setting → value and reason) into the run directory `folder`."""
    path = Path(folder) / INFERRED_FILE
    plain = {
        (key if key.startswith("dims.") else f"data.{key}"): {"value": _plain(item.value), "from": item.reason}
        for key, item in inferred.items()
    }
    text = yaml.safe_dump(plain, sort_keys=False, allow_unicode=True)
    write_atomically(path, lambda partial: partial.write_text(text, encoding="utf-8"))
    return path


def _plain(value: Any) -> Any:
    """YAML-safe: tuples as lists, mappings and sequences recursively, other objects as text."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
