"""Where modules of the package used to live: old module path → new one.

Checkpoints store their run config, and with it the `_target_` of every class they were built
from. When a module moves, checkpoints saved before the move still name its old path; the
allowlist (`registry`) reads such a name as the new one, so they keep loading. Only whole module
paths are mapped, and the class found at the new path is checked exactly as any other.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

MOVED: dict[str, str] = {
    "dltemplate.backtest": "dltemplate.extras.backtest",
    "dltemplate.callbacks.images": "dltemplate.image.callbacks.images",
    "dltemplate.callbacks.text": "dltemplate.text.callbacks.text",
    "dltemplate.cv": "dltemplate.extras.cv",
    "dltemplate.data.augment": "dltemplate.image.data.augment",
    "dltemplate.data.image_chunks": "dltemplate.image.data.image_chunks",
    "dltemplate.data.image_files": "dltemplate.image.data.image_files",
    "dltemplate.data.images": "dltemplate.image.data.images",
    "dltemplate.data.linear": "dltemplate.regression.data.linear",
    "dltemplate.data.rings": "dltemplate.regression.data.rings",
    "dltemplate.data.series": "dltemplate.series.data.series",
    "dltemplate.data.tabular": "dltemplate.tabular.data.tabular",
    "dltemplate.data.text": "dltemplate.text.data.text",
    "dltemplate.data.text_files": "dltemplate.text.data.text_files",
    "dltemplate.export": "dltemplate.extras.export",
    "dltemplate.nets.growth_lstm": "dltemplate.series.nets.growth_lstm",
    "dltemplate.nets.ngram_bag": "dltemplate.text.nets.ngram_bag",
    "dltemplate.nets.resnet": "dltemplate.image.nets.resnet",
    "dltemplate.nets.rnn_forecaster": "dltemplate.series.nets.rnn_forecaster",
    "dltemplate.nets.simple_cnn": "dltemplate.image.nets.simple_cnn",
    "dltemplate.nets.tabular": "dltemplate.tabular.nets.tabular",
    "dltemplate.nets.text_cnn": "dltemplate.text.nets.text_cnn",
    "dltemplate.nets.timm": "dltemplate.image.nets.timm",
    "dltemplate.nets.torchvision": "dltemplate.image.nets.torchvision",
    "dltemplate.nets.transformer": "dltemplate.text.nets.transformer",
    "dltemplate.serve": "dltemplate.extras.serve",
    "dltemplate.tune": "dltemplate.extras.tune",
}


def moved(target: str) -> str:
    """`target` (`package.module.Name`) at its module's current path."""
    module_name, _, attr = target.rpartition(".")
    return f"{MOVED[module_name]}.{attr}" if module_name in MOVED else target


def upgrade_targets(config: Any) -> Any:
    """`config` with every `_target_` at its module's current path (plain containers where one changed),
    so that Hydra's `instantiate` finds what an old config or checkpoint names; `config` itself when none
    did. Interpolations are resolved in a copy only when it must change (an old target in the run's config).
    """
    if not MOVED or not _names_moved(config):
        return config
    if isinstance(config, (DictConfig, ListConfig)):  # to plain containers, resolved as instantiate would
        config = OmegaConf.to_container(config, resolve=True)
    return _upgraded(config)


def _names_moved(config: Any) -> bool:
    if isinstance(config, Mapping):
        target = config.get("_target_")
        if isinstance(target, str) and moved(target) != target:
            return True
        return any(_names_moved(value) for value in config.values())
    if isinstance(config, Sequence) and not isinstance(config, str):
        return any(_names_moved(item) for item in config)
    return False


def _upgraded(config: Any) -> Any:
    if isinstance(config, Mapping):
        return {k: moved(v) if k == "_target_" and isinstance(v, str) else _upgraded(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [_upgraded(item) for item in config]
    return config
