"""Plain `nn.Module` networks, no Lightning import; each declares an example input (`ExampleInput`)."""

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class ExampleInput(Protocol):
    """What every net of the project declares: a batch of inputs it takes, from its own config.

    The tests run every net in `conf/net/` through it (shapes, finite outputs, every init scheme), so a
    new net needs its config and this method, and no entry anywhere else.
    """

    @classmethod
    def example_input(cls, batch: int, **config: Any) -> Tensor:
        """A random (B, ...) batch of inputs this net takes, built with its constructor's `config`."""
        ...


def example_input(net_class: type, batch: int, config: Mapping[str, Any]) -> Tensor:
    """`net_class`'s example input; a torch layer without one (`torch.nn.Linear`) gets (B, in_features)."""
    if isinstance(net_class, ExampleInput):
        return net_class.example_input(batch, **config)
    if "in_features" in config:
        return torch.randn(batch, config["in_features"])
    raise TypeError(f"{net_class.__qualname__} declares no example_input(batch, **config): add that classmethod")
