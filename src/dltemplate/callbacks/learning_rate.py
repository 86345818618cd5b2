"""The learning rate as one tag, `train/lr`, whatever the optimizer's parameter groups.

Lightning's LearningRateMonitor names a tag per optimizer and parameter group: `lr-AdamW` for one
group, `lr-AdamW/decayed` and `lr-AdamW/not_decayed` for the weight-decay groups every task with
weight decay has, `lr-Adagrad/sparse` for IMDB's sparse embedding rows. A user looks for one
learning rate; these tags name the optimizer and the grouping instead.
"""

from typing import Any

from lightning.pytorch.callbacks import LearningRateMonitor as _LearningRateMonitor
from torch.optim import Optimizer


class LearningRateMonitor(_LearningRateMonitor):
    """Lightning's LearningRateMonitor writing `train/lr` (the main group's), `train/lr/<group>` where it differs.

    The main group is the first optimizer's first parameter group: the decayed weights of the net
    (the head's, when a backbone has groups of its own). Another group gets a tag of its own,
    `train/lr/<group name>` (`train/lr/backbone/decayed`), only when its learning rate differs from
    the main group's at the first logging step (a backbone's scaled rate), so groups that follow the
    main rate (`not_decayed`, `sparse`) add no copies of it. Momentum and weight decay (when asked
    for: `log_momentum`, `log_weight_decay`) are the main group's, `train/momentum`, `train/weight_decay`.
    Lightning's names are also in `trainer.callback_metrics` no more: the run's record holds these.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._main: str | None = None  # Lightning's name of the main group
        self._separate: dict[str, bool] = {}  # per other group: whether it has a tag of its own

    def _get_optimizer_stats(self, optimizer: Optimizer, names: list[str]) -> dict[str, float]:
        stats = super()._get_optimizer_stats(optimizer, names)
        if self._main is None and names:
            self._main = names[0]
        main_lr = self.lrs[self._main][-1] if self.lrs.get(self._main) else None
        renamed = {}
        for name in names:
            if name == self._main:
                for suffix, tag in (("", "lr"), ("-momentum", "momentum"), ("-weight_decay", "weight_decay")):
                    if name + suffix in stats:
                        renamed[f"train/{tag}"] = stats[name + suffix]
            elif name in stats and self._separate.setdefault(name, stats[name] != main_lr):
                renamed[f"train/lr/{group_label(name)}"] = stats[name]
        return renamed


def group_label(name: str) -> str:
    """The group of Lightning's tag: `lr-AdamW/backbone/decayed` → `backbone/decayed`, `lr-SparseAdam`: `SparseAdam`."""
    return name.split("/", 1)[1] if "/" in name else name.removeprefix("lr-")
