"""The optimizer from its config: parameter groups (weight decay, a backbone's learning rate), sparse
embedding rows, fused kernels on CUDA."""

import inspect
import logging
from collections import ChainMap
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.strategies import ParallelStrategy
from torch import nn
from torch.optim import SGD, Adagrad, Optimizer, SparseAdam

from dltemplate.errors import ConfigError
from dltemplate.instantiate import instantiate
from dltemplate.nets.init import LINEAR

log = logging.getLogger(__name__)

OptimizerSpec = Callable[[Iterable[torch.Tensor]], Optimizer] | Mapping[str, Any]


DEFAULT_OPTIMIZER = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3}


# layers whose weights are decayed: matrices that multiply an input (a recurrent layer's too)
DECAYED = (*LINEAR, nn.RNNBase)


# optimizers that update the rows of a sparse gradient themselves (SGD only without momentum)
SPARSE_CAPABLE = (Adagrad, SGD)


def parameter_groups(
    model: nn.Module, weight_decay: float | None = None, lr: float | None = None, backbone_lr_scale: float | None = None
) -> list[dict[str, Any]]:
    """The optimizer's parameter groups for `model`: the one place that decides per-parameter settings.

    Weight decay (the optimizer's own `weight_decay`, or `weight_decay` if given) applies only to
    the weights of linear, convolution and recurrent layers. Biases and normalisation layers' scales
    and shifts are left alone: shrinking them toward 0 does not regularise the function, it only
    moves the layers' operating point. Embeddings are left alone as well: decoupled decay shrinks
    every row at every step while a row's gradient comes only from batches holding its token, so
    rare tokens would be pulled toward 0, and sparse optimizers support no decay at all. Without
    decay (0) there is one group. `weight_decay` None: the decayed group keeps the optimizer's default.

    With `backbone_lr_scale`, the parameters of the net's `backbone` (a pretrained timm or transformer
    model) get groups of their own ("backbone/decayed", "backbone/not_decayed") whose learning rate
    is `lr` × `backbone_lr_scale`; each group keeps its `lr_scale` for schedulers that set a learning
    rate of their own (OneCycleLR's `max_lr`). The groups exist from the start, frozen or not, so
    freezing (`dltemplate.callbacks.finetune`) never changes what DDP or the optimizer hold.

    The weights of embeddings with sparse gradients (`sparse=True`, e.g. net=ngram_bag) form a group
    of their own, "sparse" (marked `"sparse": True`, no decay): each step touches only the rows of
    the batch's tokens, and `build_optimizer` gives them a sparse-capable optimizer.
    """
    backbone = set() if backbone_lr_scale is None else backbone_parameters(model)
    sparse = sparse_parameters(model)
    if backbone_lr_scale is not None and not backbone:
        raise ConfigError(
            "module.finetune sets a backbone learning rate, but the net has no `backbone` "
            "(net=timm and net=transformer have one)"
        )
    if (
        weight_decay == 0.0 and not backbone and not sparse
    ):  # one group, in `model.parameters()` order, as without this function
        return [{"params": list(model.parameters())}]
    decayed, other, seen = [], [], set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen or id(param) in sparse:  # shared (tied) parameters: the first layer decides
                continue
            seen.add(id(param))
            decays = weight_decay != 0.0 and isinstance(module, DECAYED) and name.startswith("weight")
            (decayed if decays else other).append(param)
    decay = {} if weight_decay is None else {"weight_decay": weight_decay}
    groups = []
    for part, scale in (("", None), ("backbone/", backbone_lr_scale)):
        inside = bool(part)
        settings = {} if scale is None else {"lr_scale": scale, **({} if lr is None else {"lr": lr * scale})}
        groups += [
            {"params": [p for p in decayed if (id(p) in backbone) == inside], "name": f"{part}decayed", **decay},
            {"params": [p for p in other if (id(p) in backbone) == inside], "name": f"{part}not_decayed"},
        ]
        groups[-1]["weight_decay"] = 0.0
        groups[-2].update(settings)
        groups[-1].update(settings)
    groups.append({"params": [p for p in model.parameters() if id(p) in sparse], "name": "sparse", "sparse": True})
    groups[-1]["weight_decay"] = 0.0
    return [g for g in groups if g["params"]]


def sparse_parameters(model: nn.Module) -> set[int]:
    """Ids of the weights of embeddings whose gradients are sparse (`nn.Embedding`/`nn.EmbeddingBag`, sparse=True)."""
    return {
        id(module.weight)
        for module in model.modules()
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and module.sparse and module.weight.requires_grad
    }


def dense_gradients_where_needed(module: LightningModule) -> None:
    """Switch embeddings to dense gradients when the module trains on an accelerator or distributed.

    DDP over NCCL cannot all-reduce sparse gradients, and DDP decides which gradients are sparse
    when it wraps the module: call this from the LightningModule's `setup` hook, which runs before.
    On an accelerator a sparse gradient is slower than a dense one: summing its rows (`coalesce`)
    has a size that depends on the data, so the host waits for the device on every step, while a
    dense update of even a few million embedding rows is a fraction of a millisecond there. Sparse
    gradients are kept for one process on the CPU, where they save most of the update's work. The
    optimizer then sees ordinary dense parameters (`sparse_parameters` finds none).
    """
    trainer = module._trainer
    if trainer is None:
        return
    distributed = isinstance(trainer.strategy, ParallelStrategy)
    if not distributed and trainer.strategy.root_device.type == "cpu":
        return
    switched = []
    for name, layer in module.named_modules():
        if isinstance(layer, (nn.Embedding, nn.EmbeddingBag)) and layer.sparse:
            layer.sparse = False
            switched.append(name)
    if switched:
        where = type(trainer.strategy).__name__ if distributed else trainer.strategy.root_device.type
        reason = "sparse ones cannot be all-reduced" if distributed else "sparse ones make the host wait"
        log.info("%s: dense gradients under %s (%s)", switched, where, reason)


class WithSparseRows(Optimizer):
    """One optimizer made of two: `dense` for ordinary parameters, `sparse` for embedding rows.

    Lightning's automatic optimization steps one optimizer, and a scheduler sets learning rates
    through `param_groups`: both see the two optimizers' groups (the same dicts), so a schedule
    moves both learning rates together.
    """

    def __init__(self, dense: Optimizer, sparse: Optimizer) -> None:
        self.dense, self.sparse = dense, sparse
        super().__init__([{"params": g["params"]} for g in (*dense.param_groups, *sparse.param_groups)], dense.defaults)
        self.param_groups = [*dense.param_groups, *sparse.param_groups]
        self.state = ChainMap(dense.state, sparse.state)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.dense.step()
        self.sparse.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.dense.zero_grad(set_to_none)
        self.sparse.zero_grad(set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"dense": self.dense.state_dict(), "sparse": self.sparse.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.dense.load_state_dict(state_dict["dense"])
        self.sparse.load_state_dict(state_dict["sparse"])
        self.param_groups = [*self.dense.param_groups, *self.sparse.param_groups]
        self.state = ChainMap(self.dense.state, self.sparse.state)


def backbone_parameters(model: nn.Module) -> set[int]:
    """Ids of the parameters inside a submodule named `backbone` (at any depth: `net.backbone.…`)."""
    return {id(p) for name, p in model.named_parameters() if "backbone" in name.split(".")[:-1]}


def build_optimizer(
    optimizer: OptimizerSpec | None,
    params: Iterable[torch.Tensor] | nn.Module,
    backbone_lr_scale: float | None = None,
) -> Optimizer:
    """Create the optimizer from a partial config, a callable, or the AdamW default.

    Given a model rather than parameters, it optimises the model's `parameter_groups` (weight decay
    when the optimizer takes a `weight_decay`; the backbone's learning rate × `backbone_lr_scale`).
    """
    optimizer = DEFAULT_OPTIMIZER if optimizer is None else optimizer
    if isinstance(optimizer, Mapping):
        optimizer = instantiate({**optimizer, "_partial_": True}, "optimizer", expect=Optimizer)
    if isinstance(params, nn.Module):
        accepted = parameters_of(getattr(optimizer, "func", optimizer))
        if "weight_decay" in accepted or backbone_lr_scale is not None or sparse_parameters(params):
            decay = _setting(optimizer, accepted, "weight_decay") if "weight_decay" in accepted else 0.0
            lr = _setting(optimizer, accepted, "lr")
            params = parameter_groups(params, decay, lr, backbone_lr_scale)
        else:
            params = params.parameters()
        params = list(params)
        if any(isinstance(g, Mapping) and g.get("sparse") for g in params):
            return _with_sparse_rows(optimizer, params, accepted)
        return optimizer(params, **_fused_on_cuda(optimizer, accepted, params))
    return optimizer(params)


def _fused_on_cuda(optimizer: Any, accepted: Mapping[str, inspect.Parameter], params: list) -> dict[str, bool]:
    """`fused=True` when every parameter is a float on a CUDA device and the config leaves `fused` unset.

    The fused kernels (Adam, AdamW, SGD, Adagrad) update every parameter in one launch instead of a
    few per tensor: on a GPU the optimizer step then costs a handful of launches whatever the net's
    depth. Elsewhere PyTorch's own default (foreach where it can) stays.
    """
    if "fused" not in accepted or "fused" in getattr(optimizer, "keywords", {}):
        return {}
    tensors = [p for g in params for p in (g["params"] if isinstance(g, Mapping) else [g])]
    if tensors and all(p.is_cuda and p.is_floating_point() for p in tensors):
        return {"fused": True}
    return {}


def _with_sparse_rows(optimizer: Any, groups: list[dict[str, Any]], accepted: Mapping[str, inspect.Parameter]):
    """The optimizer for parameter groups that include sparse embedding rows (`parameter_groups`' "sparse").

    Adagrad, and SGD without momentum, update sparse rows themselves: one optimizer. Any other
    (AdamW, Adam, RMSprop, SGD with momentum) keeps the dense groups, and the rows get `SparseAdam`
    with the same learning rate (and betas, eps where it has them), joined as `WithSparseRows`.
    """
    _sparse_checks_explicit()
    cls = getattr(optimizer, "func", optimizer)
    momentum = _setting(optimizer, accepted, "momentum") if "momentum" in accepted else 0
    if isinstance(cls, type) and issubclass(cls, SPARSE_CAPABLE) and not momentum:
        return optimizer(groups)
    dense = [g for g in groups if not g.get("sparse")]
    rows = [{k: v for k, v in g.items() if k != "weight_decay"} for g in groups if g.get("sparse")]
    settings = {k: _setting(optimizer, accepted, k) for k in ("lr", "betas", "eps") if k in accepted}
    sparse = SparseAdam(rows, **{k: v for k, v in settings.items() if v is not None})
    return WithSparseRows(optimizer(dense), sparse) if dense else sparse


def _sparse_checks_explicit() -> None:
    """Leave PyTorch's checks of sparse tensors off (its default), saying so explicitly.

    Adagrad and SparseAdam build sparse tensors from the rows of each step, and PyTorch warns on every
    run that the checks are "implicitly disabled" unless a program opts in or out. The rows an
    embedding's backward produces are valid by construction; a user who turned the checks on
    (`torch.sparse.check_sparse_tensor_invariants.enable()`) keeps them.
    """
    if not torch.sparse.check_sparse_tensor_invariants.is_enabled():
        torch.sparse.check_sparse_tensor_invariants.disable()


def _setting(optimizer: Any, accepted: Mapping[str, inspect.Parameter], name: str) -> Any:
    """The value of the optimizer's argument `name`: given in its partial, else its default (None: none)."""
    default = accepted[name].default if name in accepted else inspect.Parameter.empty
    return getattr(optimizer, "keywords", {}).get(name, None if default is inspect.Parameter.empty else default)


def parameters_of(obj: Any) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return {}
