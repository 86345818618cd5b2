"""Losses chosen by configuration: a short name, any fitting `torch.nn` loss by `_target_`, or a focal loss.

`module.loss` is plain data, a short name or a `_target_` config, kept as it is in the module's
hyperparameters and so in every checkpoint. It is built with Hydra's `instantiate`; a checkpoint's is
first checked against the allowlist's `loss` kind (`torch.nn` losses and `@register("loss")`,
`dltemplate.registry`), so a checkpoint can name no other class or function.

    name        builds                                         fits
    ce          torch.nn.CrossEntropyLoss                      classification (binary: the same as bce)
    bce         torch.nn.BCEWithLogitsLoss                     binary classification
    focal       dltemplate.losses.FocalLoss (gamma 2)          classification, binary or multi-class
    mse         torch.nn.MSELoss                               regression, forecasting
    l1          torch.nn.L1Loss                                regression, forecasting
    huber       torch.nn.HuberLoss (delta 1)                   regression, forecasting
    smooth_l1   torch.nn.SmoothL1Loss (beta 1)                 regression, forecasting
    poisson     torch.nn.PoissonNLLLoss (log_input=True)       regression of non-negative counts

What a loss is given depends on what it takes, which fixes the tasks it fits:

- "logit": one logit per sample (B,) and float targets in [0, 1]: binary classification.
- "logits": class logits (B, K) and class ids (B,). A binary module's one logit z becomes the two
  logits [0, z], whose softmax is exactly [1 - sigmoid(z), sigmoid(z)]: these losses fit both.
- "values": predictions shaped like the targets: regression and forecasting (each module says on
  which scale: standardised targets, scaled series).
- "log_rate": the log of a Poisson rate and non-negative count targets: regression only, where the
  module owns the meaning of the net's output; forecasting nets predict the scaled series itself.

Other `torch.nn` losses take what no module produces (probabilities, log-probabilities, variances,
pairs, sequences) and are refused. A loss of your own says what it takes in a `takes` class
attribute; registered with `@register("loss")`, its checkpoints restore too.
"""

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dltemplate import registry
from dltemplate.errors import ConfigError
from dltemplate.instantiate import instantiate, locate

LossSpec = str | Mapping[str, Any]

SHORT_NAMES: dict[str, dict[str, Any]] = {
    "ce": {"_target_": "torch.nn.CrossEntropyLoss"},
    "bce": {"_target_": "torch.nn.BCEWithLogitsLoss"},
    "focal": {"_target_": "dltemplate.losses.FocalLoss", "gamma": 2.0},
    "mse": {"_target_": "torch.nn.MSELoss"},
    "l1": {"_target_": "torch.nn.L1Loss"},
    "huber": {"_target_": "torch.nn.HuberLoss", "delta": 1.0},
    "smooth_l1": {"_target_": "torch.nn.SmoothL1Loss", "beta": 1.0},
    "poisson": {"_target_": "torch.nn.PoissonNLLLoss", "log_input": True},
}
TASKS_BY_INPUT: dict[str, tuple[str, ...]] = {
    "logit": ("binary",),
    "logits": ("binary", "multiclass"),
    "values": ("regression", "forecasting"),
    "log_rate": ("regression",),
}
INPUT_WORDS = {
    "logit": "it takes one logit per sample, for binary classification",
    "logits": "it takes class logits, for classification",
    "values": "it compares predicted values with the targets, for regression and forecasting",
    "log_rate": "it takes a log-rate for non-negative counts, for regression only (forecasting nets predict "
    "the scaled series itself, not a log-rate)",
}
TASK_WORDS = {
    "binary": "binary classification",
    "multiclass": "multi-class classification",
    "regression": "regression",
    "forecasting": "forecasting",
}


@registry.register("loss")
class FocalLoss(nn.Module):
    """Focal loss (Lin et al., 2017): cross-entropy scaled by (1 - p_true)^gamma, for hard or rare classes.

    Well-classified samples (p_true near 1) count little, so training concentrates on the hard ones.
    gamma=0 is cross-entropy. Takes class logits; a binary module passes [0, z], which makes it the
    sigmoid focal loss of its one logit z.

    Args:
        gamma: Focusing exponent; 2 is the paper's choice, try 0.5 to 5.
        weight: Per-class weights (the paper's alpha), like `CrossEntropyLoss`'s `weight`.
        label_smoothing: Mix the one-hot target with the uniform distribution, as `CrossEntropyLoss` does.
        reduction: "mean" (weighted by `weight` as `CrossEntropyLoss` does), "sum" or "none".
    """

    takes = "logits"

    def __init__(
        self, gamma: float = 2.0, weight: Tensor | None = None, label_smoothing: float = 0.0, reduction: str = "mean"
    ) -> None:
        super().__init__()
        self.gamma, self.label_smoothing, self.reduction = gamma, label_smoothing, reduction
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        log_p = logits.log_softmax(dim=-1)  # (B, K)
        k = logits.shape[-1]
        q = F.one_hot(target, k).to(log_p.dtype) * (1 - self.label_smoothing) + self.label_smoothing / k  # (B, K)
        # clamped so that a gamma below 1 has a finite gradient where p reaches 1
        focus = (1 - log_p.exp()).clamp_min(1e-12).pow(self.gamma)
        terms = -q * focus * log_p  # (B, K)
        if self.weight is not None:  # each class's term by its weight, as CrossEntropyLoss does
            terms = terms * self.weight
        loss = terms.sum(dim=-1)  # (B,)
        if self.reduction == "none":
            return loss
        if self.reduction == "sum":
            return loss.sum()
        return loss.sum() / (self.weight[target].sum() if self.weight is not None else loss.numel())


class TaskLoss(nn.Module):
    """A configured loss, fed as it expects from a module's outputs and targets.

    Args:
        loss: The loss module.
        takes: What it takes: "logit", "logits", "values" or "log_rate" (see the module docstring).
        label_smoothing: For "logit" losses: targets become y · (1 - ε) + ε / 2, as two-class
            cross-entropy's smoothing does (the others smooth in the loss itself).
    """

    def __init__(self, loss: nn.Module, takes: str, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.loss, self.takes, self.label_smoothing = loss, takes, label_smoothing
        for name, buffer in list(loss.named_buffers()):  # class weights come from the config, not the weights file
            owner = loss.get_submodule(name.rpartition(".")[0])
            owner.register_buffer(name.rpartition(".")[2], buffer, persistent=False)

    def forward(self, outputs: Tensor, target: Tensor) -> Tensor:
        if self.takes == "logit":
            target = target.to(outputs.dtype)
            if self.label_smoothing:
                target = target * (1 - self.label_smoothing) + self.label_smoothing / 2
        elif self.takes == "logits" and outputs.ndim == target.ndim:  # binary: one logit z → logits [0, z]
            outputs = torch.stack([torch.zeros_like(outputs), outputs], dim=-1)  # (B, 2)
        return self.loss(outputs, target)


def build_loss(
    spec: LossSpec, task: str, class_weights: Sequence[float] | None = None, label_smoothing: float = 0.0
) -> TaskLoss:
    """The loss `spec` names, checked to fit `task` ("binary", "multiclass", "regression", "forecasting").

    For classification, `class_weights` and `label_smoothing` (the module's settings) go to the loss
    unless its config sets them: as `weight` and `label_smoothing` for class-logit losses, as
    `pos_weight` = w1 / w0 and smoothed targets for one-logit losses. `ce` on a binary module is
    `bce`: binary cross-entropy of the one logit is two-class cross-entropy.
    """
    name = spec if isinstance(spec, str) else None
    if name is not None and name not in SHORT_NAMES:
        raise ConfigError(f"module.loss={name!r} is not a loss name. {fitting(task)}")
    if name == "ce" and task == "binary":
        name = "bce"
    config = dict(SHORT_NAMES[name] if name is not None else _plain(spec))
    cls = locate(config.get("_target_"), "module.loss")
    takes = getattr(cls, "takes", None) or TAKES.get(cls)
    label = repr(spec) if name is not None else config["_target_"]
    if takes is None:
        raise ConfigError(
            f"module.loss={label} takes inputs that no module produces (probabilities, log-probabilities, "
            f"variances, pairs or sequences). {fitting(task)}"
        )
    if task not in TASKS_BY_INPUT[takes]:
        raise ConfigError(
            f"module.loss={label} does not fit a {TASK_WORDS[task]} module: {INPUT_WORDS[takes]}. {fitting(task)}"
        )
    extra = _class_options(cls, takes, config, class_weights, label_smoothing)
    for key in ("weight", "pos_weight"):  # tensors in torch's losses; lists in a config
        if isinstance(config.get(key), (list, tuple)):
            config[key] = torch.tensor(config[key], dtype=torch.float32)
    loss = instantiate(config, "module.loss", **extra)
    return TaskLoss(loss, takes, label_smoothing if takes == "logit" else 0.0)


def _class_options(
    cls: type, takes: str, config: dict[str, Any], class_weights: Sequence[float] | None, label_smoothing: float
) -> dict[str, Any]:
    """What the module's `class_weights` and `label_smoothing` add to the loss's own config."""
    accepts = inspect.signature(cls).parameters
    extra: dict[str, Any] = {}
    if class_weights is not None:
        weights = torch.as_tensor(class_weights, dtype=torch.float32)
        key = "pos_weight" if takes == "logit" else "weight"
        if key not in accepts:
            raise ConfigError(f"module.class_weights: {config['_target_']} takes no class weights ({key})")
        if key not in config:
            extra[key] = weights[1] / weights[0] if takes == "logit" else weights
    if label_smoothing and takes == "logits":
        if "label_smoothing" not in accepts:
            raise ConfigError(f"module.label_smoothing: {config['_target_']} takes no label smoothing")
        if "label_smoothing" not in config:
            extra["label_smoothing"] = label_smoothing
    return extra


def names_for(task: str) -> list[str]:
    """The short names of the losses that fit `task`."""
    return [n for n, c in SHORT_NAMES.items() if task in TASKS_BY_INPUT[_takes(c["_target_"])]]


def fitting(task: str) -> str:
    """The sentence that lists the losses fitting `task`."""
    names = names_for(task)
    targets = sorted(target_name(c) for c, takes in TAKES.items() if task in TASKS_BY_INPUT[takes])
    return f"Losses that fit a {TASK_WORDS[task]} module: {', '.join(names)}, or a _target_ of {', '.join(targets)}"


def target_name(cls: type) -> str:
    """The `_target_` that names `cls`: `torch.nn.MSELoss` rather than where torch defines it."""
    return (
        f"torch.nn.{cls.__qualname__}"
        if getattr(nn, cls.__qualname__, None) is cls
        else (f"{cls.__module__}.{cls.__qualname__}")
    )


def _takes(target: str) -> str:
    return TAKES[locate(target, "module.loss")]


def _plain(spec: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    if OmegaConf.is_config(spec):
        spec = OmegaConf.to_container(spec, resolve=True)
    if not isinstance(spec, Mapping) or "_target_" not in spec:
        raise ConfigError(f"module.loss must be a loss name or a config with a _target_, got {spec!r}")
    return dict(spec)


# what each loss takes (see the module docstring); a torch.nn loss not listed here is refused
TAKES: dict[type, str] = {
    nn.BCEWithLogitsLoss: "logit",
    nn.CrossEntropyLoss: "logits",
    nn.MultiMarginLoss: "logits",
    FocalLoss: "logits",
    nn.MSELoss: "values",
    nn.L1Loss: "values",
    nn.HuberLoss: "values",
    nn.SmoothL1Loss: "values",
    nn.PoissonNLLLoss: "log_rate",
}
