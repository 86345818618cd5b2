"""Common numeric settings checked in one place, before anything is built or written.

A value that cannot work (`data.batch_size=0`, `module.optimizer.lr=nan`, `net.dropout=2`,
`seed=-1`, `net.hidden=[0]`) would otherwise surface as a traceback from deep inside PyTorch,
numpy or a DataLoader, or train a degenerate net without a word. `check_settings` refuses it as a
`ConfigError` naming the setting, the value and the range it must lie in. Rules go by the setting's
name, so every data module, net and optimizer config that uses the name is covered; a value that is
still an interpolation (`${dims.in_features}`) is left to the code that fills it in.

Every entry point checks the settings its config has the same way (train.py; evaluate.py's data
overrides such as `+data.batch_size=0`; serve.py's `max_batch_size`, `port`, ...), first thing.
"""

import math
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from dltemplate.errors import ConfigError

SEED_MAX = 2**32 - 1  # numpy's seeds are unsigned 32-bit integers


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_int(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return None
    return "must be a whole number of at least 1"


def _seed(value: Any) -> str | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= SEED_MAX):
        return None
    return f"must be a whole number from 0 to {SEED_MAX} (numpy's seed range), or null for none"


def _probability(value: Any) -> str | None:
    if _is_number(value) and 0 <= value < 1:
        return None
    return "must be a probability from 0 (off) up to, not including, 1; e.g. 0.1"


def _learning_rate(value: Any) -> str | None:
    if _is_number(value) and math.isfinite(value) and value >= 0:  # 0, as torch allows: weights stay as they are
        return None
    return "must be a finite number of at least 0 (above 0 to learn); e.g. 1e-3"


def _non_negative(value: Any) -> str | None:
    if _is_number(value) and math.isfinite(value) and value >= 0:
        return None
    return "must be a finite number of at least 0; e.g. 0.01 (0 for none)"


def _sizes(value: Any) -> str | None:
    items = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    if all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in items):
        return None
    return "must be whole numbers of at least 1 (layer widths); e.g. [64, 64], or [] for no hidden layer"


def _port(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
        return None
    return "must be a TCP port, a whole number from 1 to 65535; e.g. 8000"


def _positive(value: Any) -> str | None:
    if _is_number(value) and math.isfinite(value) and value > 0:
        return None
    return "must be a finite number above 0"


def _timeout(value: Any) -> str | None:
    if value is False or value == -1 or _positive(value) is None:
        return None
    return "must be a number of seconds above 0, or -1 (or false) for none; e.g. 30"


def _finite(value: Any) -> str | None:
    if _is_number(value) and math.isfinite(value):
        return None
    return "must be a finite number"


# (group, setting name) → rule; group None: a top-level setting. Names, not paths: each rule applies
# to every config of the group that has the setting.
RULES: dict[tuple[str | None, str], Callable[[Any], str | None]] = {
    (None, "seed"): _seed,
    ("data", "data_seed"): _seed,
    ("data", "batch_size"): _positive_int,
    ("data", "eval_batch_size"): _positive_int,
    ("net", "hidden"): _sizes,
    ("net", "widths"): _sizes,
    ("net", "hidden_size"): _positive_int,
    ("net", "num_layers"): _positive_int,
    ("net", "blocks_per_stage"): _positive_int,
    ("module.optimizer", "lr"): _learning_rate,
    ("module.optimizer", "weight_decay"): _non_negative,
    ("module.optimizer", "momentum"): _non_negative,
    # the other entry points' own settings (serve.yaml, forecast.yaml): refused before a checkpoint is read
    (None, "port"): _port,
    (None, "max_batch_size"): _positive_int,
    (None, "batch_timeout"): _non_negative,
    (None, "workers"): _positive_int,
    (None, "timeout"): _timeout,
    (None, "max_items"): _positive_int,
    (None, "max_horizon"): _positive_int,
    (None, "max_chars"): _positive_int,
    (None, "max_image_pixels"): _positive_int,
    (None, "max_payload_mb"): _positive,
    (None, "zero_below"): _finite,
}
DROPOUT_GROUPS = ("net", "module")  # every `*dropout` setting there is a probability


def check_settings(cfg: DictConfig) -> None:
    """Refuse a common numeric setting of `cfg` that cannot work, in one `ConfigError` line."""
    for (group, name), rule in RULES.items():
        node = cfg if group is None else OmegaConf.select(cfg, group, default=None)
        if isinstance(node, DictConfig) and name in node:
            _check(node, group, name, rule)
    for group in DROPOUT_GROUPS:
        node = cfg.get(group)
        if isinstance(node, DictConfig):
            for name in node:
                if str(name).endswith("dropout"):
                    _check(node, group, str(name), _probability)


def _check(node: DictConfig, group: str | None, name: str, rule: Callable[[Any], str | None]) -> None:
    if OmegaConf.is_interpolation(node, name) or OmegaConf.is_missing(node, name):
        return
    value = node[name]
    if isinstance(value, ListConfig):
        if any(OmegaConf.is_interpolation(value, i) for i in range(len(value))):
            return
        value = OmegaConf.to_container(value)
    elif value is None and rule is not _seed:
        return  # null: the code's own default
    problem = rule(value)
    if problem is not None:
        key = f"{group}.{name}" if group else name
        raise ConfigError(f"{key}={value!r} {problem}: pass {key}=<value> on the command line")
