"""Weight initialisation chosen by configuration (`net.init`), applied by layer type to any net.

`init` is a key of every net config (`python train.py task=rings net.init=kaiming`). `build_net`
takes it out of the config, builds the net, then applies the scheme; it stays in the module's
hyperparameters, so the run records it. Reloading a checkpoint builds the net the same way and
only then loads the trained weights into it: a scheme never overwrites weights. A net config that
loads pretrained weights in its constructor (`pretrained: true`) is refused a scheme for the same
reason. `null` keeps each layer's own PyTorch initialisation.

    name         weights of linear and convolution layers
    kaiming      Kaiming (He) normal, fan_in, ReLU gain: for nets with ReLU-family activations
    xavier       Xavier (Glorot) uniform: for nets with tanh or sigmoid activations
    orthogonal   orthogonal matrices (gain 1)
    normal       N(0, 0.02), as in GPT-2 and BERT

Whatever the scheme:

- biases are zero;
- recurrent layers (RNN, LSTM, GRU), whose gates are tanh and sigmoid, get Xavier-uniform input
  weights and orthogonal recurrent weights, gate by gate, which keeps the hidden state's norm from
  exploding or vanishing over time steps; the LSTM forget gate's bias is 1 so that cells remember
  by default (Jozefowicz et al., 2015);
- normalisation layers start as the identity: scale 1, shift 0;
- embeddings and every other layer keep their own initialisation: an embedding's N(0, 1) scale and
  zero padding row are part of its net's design, not a property of a layer type.

A net that depends on a particular start (`RNNForecaster` zeroes its head so that it starts as the
naive forecast) defines `after_init()`, called after the scheme. A scheme with other settings is a
`_target_` config: `net.init={_target_: dltemplate.nets.init.kaiming, nonlinearity: leaky_relu, a: 0.01}`.
"""

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

from dltemplate import registry
from dltemplate.errors import ConfigError
from dltemplate.instantiate import instantiate

InitSpec = str | Mapping[str, Any]

SCHEMES = {name: f"{__name__}.{name}" for name in ("kaiming", "xavier", "orthogonal", "normal")}
LINEAR = (
    nn.Linear,
    nn.Bilinear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
NORMS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
)
GATES = {"LSTM": 4, "GRU": 3}  # weight blocks stacked in a recurrent layer's matrices; plain RNNs have 1


def init_scheme(spec: InitSpec) -> Callable[[nn.Module], None]:
    """The scheme `spec` names (a short name or a `_target_` config); call it on a net."""
    if isinstance(spec, str):
        if spec not in SCHEMES:
            raise ConfigError(
                f"net.init={spec!r} is not an initialisation scheme; choose one of {sorted(SCHEMES)} or null"
            )
        spec = {"_target_": SCHEMES[spec]}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"net.init must be a scheme name, a config with a _target_ or null, got {spec!r}")
    scheme = instantiate({**spec, "_partial_": True}, "net.init")

    def apply(net: nn.Module) -> None:
        scheme(net)
        after = getattr(net, "after_init", None)
        if callable(after):
            after()

    return apply


@registry.register("init")
def kaiming(net: nn.Module, nonlinearity: str = "relu", a: float = 0.0, mode: str = "fan_in") -> None:
    """Kaiming-normal linear and convolution weights; `nonlinearity`, `a`, `mode` as in `nn.init.kaiming_normal_`."""
    apply_by_layer(net, lambda w: nn.init.kaiming_normal_(w, a=a, mode=mode, nonlinearity=nonlinearity))


@registry.register("init")
def xavier(net: nn.Module, gain: float = 1.0) -> None:
    """Xavier-uniform linear and convolution weights; `gain` 5/3 suits tanh (`nn.init.calculate_gain`)."""
    apply_by_layer(net, lambda w: nn.init.xavier_uniform_(w, gain=gain))


@registry.register("init")
def orthogonal(net: nn.Module, gain: float = 1.0) -> None:
    """Orthogonal linear and convolution weights (a convolution's kernel flattened per output channel)."""
    apply_by_layer(net, lambda w: nn.init.orthogonal_(w, gain=gain))


@registry.register("init")
def normal(net: nn.Module, std: float = 0.02) -> None:
    """Linear and convolution weights drawn from N(0, std²)."""
    apply_by_layer(net, lambda w: nn.init.normal_(w, std=std))


def apply_by_layer(net: nn.Module, weight_init: Callable[[Tensor], Any]) -> None:
    """Initialise every layer of `net` by its type (see the module docstring); `weight_init` for linear/conv weights."""
    for module in net.modules():
        if isinstance(module, LINEAR) and not isinstance(module.weight, nn.parameter.UninitializedParameter):
            weight_init(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.RNNBase):
            _init_recurrent(module)
        elif isinstance(module, NORMS):
            if getattr(module, "weight", None) is not None:
                nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)


def _init_recurrent(rnn: nn.RNNBase) -> None:
    gates = GATES.get(rnn.mode, 1)
    for name, param in rnn.named_parameters():
        blocks = param.chunk(gates, dim=0)  # (gates · H, ...) → gates × (H, ...), views into `param`
        if name.startswith("weight_hh"):
            for block in blocks:
                nn.init.orthogonal_(block)
        elif name.startswith("weight_ih"):
            for block in blocks:
                nn.init.xavier_uniform_(block)
        elif name.startswith("weight"):  # weight_hr: an LSTM's projection
            nn.init.xavier_uniform_(param)
        else:
            nn.init.zeros_(param)
            if rnn.mode == "LSTM" and name.startswith("bias_ih"):
                nn.init.ones_(blocks[1])  # gates are stacked input, forget, cell, output
