"""Turn configs into nets, optimizers and schedulers, refusing anything else a config could name.

A module takes its net, optimizer and scheduler either as ready objects or as Hydra configs (plain
dicts with `_target_`). Configs are what gets saved in the checkpoint, so `load_from_checkpoint`
can rebuild the net without being handed it again. Because a checkpoint is data from disk, every
`_target_`, at every depth, goes through the project's allowlist (`dltemplate.registry`) before
anything is imported or called.
"""

import contextlib
import contextvars
import inspect
import logging
from collections import ChainMap
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from lightning.pytorch.strategies import ParallelStrategy
from omegaconf import OmegaConf
from torch import nn
from torch.optim import SGD, Adagrad, Optimizer, SparseAdam
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, OneCycleLR, PolynomialLR

from dltemplate import registry
from dltemplate.errors import ConfigError, DivergedError
from dltemplate.nets.init import LINEAR, init_scheme

log = logging.getLogger(__name__)

NetSpec = nn.Module | Mapping[str, Any]
OptimizerSpec = Callable[[Iterable[torch.Tensor]], Optimizer] | Mapping[str, Any]
SchedulerSpec = Callable[[Optimizer], LRScheduler] | Mapping[str, Any]

DEFAULT_OPTIMIZER = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3}


# layers whose weights are decayed: matrices that multiply an input (a recurrent layer's too)
DECAYED = (*LINEAR, nn.RNNBase)
# the argument of each scheduler that is the run's length, filled from the Trainer when left unset
# optimizers that update the rows of a sparse gradient themselves (SGD only without momentum)
SPARSE_CAPABLE = (Adagrad, SGD)
RUN_LENGTH = {OneCycleLR: "total_steps", CosineAnnealingLR: "T_max", PolynomialLR: "total_iters"}


# what a net may fetch or read when building for training, switched off when rebuilding from a checkpoint:
# pretrained weights, a weights file or URL, and (`offline`) an architecture read from a hub or folder
DOWNLOADED = {"pretrained": False, "weights": None, "offline": True}
_RESTORING = contextvars.ContextVar("restoring", default=False)


@contextlib.contextmanager
def no_downloads() -> Iterator[None]:
    """Within this block, nets are built without pretrained weights or weight files (`DOWNLOADED`).

    `dltemplate.checkpoint.restore` rebuilds a checkpoint's net inside it: the trained weights come
    from the checkpoint's state dict, and a checkpoint must not make this process fetch or read anything.
    """
    token = _RESTORING.set(True)
    try:
        yield
    finally:
        _RESTORING.reset(token)


def without_downloads(net: Any) -> Any:
    """A net config as a checkpoint keeps it: `DOWNLOADED`'s settings wherever the net takes them (even
    when the config leaves them out); objects as they are.

    Modules save this in their hyperparameters after building the net, so that even Lightning's own
    `load_from_checkpoint` of the module rebuilds the net without fetching anything (the run config
    keeps the settings as given, for the record).
    """
    if not isinstance(net, Mapping):
        return net
    accepted = _parameters(registry.resolve(net.get("_target_"), "net", where="net"))
    return {**net, **{k: v for k, v in DOWNLOADED.items() if k in net or k in accepted}}


def build_net(net: NetSpec) -> nn.Module:
    """Return `net` itself, or the `nn.Module` its config describes, initialised by its `init` scheme.

    `init` (see `dltemplate.nets.init`) is taken out of the config before the net is built, and the
    scheme is resolved first, so a bad name fails before a large net is built for nothing. Inside
    `no_downloads()`, `pretrained` and `weights` are switched off whatever the config says.
    """
    if isinstance(net, nn.Module):
        return net
    config = dict(OmegaConf.to_container(net, resolve=True) if OmegaConf.is_config(net) else net)
    if _RESTORING.get():
        config = without_downloads(config)
    init = config.pop("init", None)
    if init is not None and (config.get("pretrained") or config.get("weights")):
        raise ConfigError(
            f"net.init={init!r} would overwrite the pretrained weights this net loads; "
            "set net.init=null, or net.pretrained=false and net.weights=null to train from scratch"
        )
    scheme = None if init is None else init_scheme(init)
    built = registry.instantiate(config, "net", where="net")
    if scheme is not None:
        scheme(built)
    return built


def net_data_settings(net: Mapping[str, Any]) -> dict[str, Any]:
    """Data settings the net's weights expect (a pretrained model's input size, normalisation, tokenizer).

    A net class declares them in a static `data_settings(config)`; `net` may hold unresolved sizes
    (`${dims...}`): only the keys the net class reads are resolved.
    """
    cls = registry.resolve(net.get("_target_"), "net", where="net")
    settings = getattr(cls, "data_settings", None)
    return dict(settings(net)) if callable(settings) else {}


def complete_net_config(net: Mapping[str, Any]) -> dict[str, Any]:
    """`net` with what rebuilding it from a checkpoint needs (a transformer's architecture), when its class says."""
    cls = registry.resolve(net.get("_target_"), "net", where="net")
    complete = getattr(cls, "complete_config", None)
    return complete(net) if callable(complete) else dict(net)


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


def dense_gradients_where_needed(module) -> None:
    """Switch embeddings to dense gradients when the module trains on an accelerator or distributed.

    DDP over NCCL cannot all-reduce sparse gradients, and DDP decides which gradients are sparse
    when it wraps the module: call this from the LightningModule's `setup` hook, which runs before.
    On an accelerator a sparse gradient is slower than a dense one: summing its rows (`coalesce`)
    has a size that depends on the data, so the host waits for the device on every step, while a
    dense update of even a few million embedding rows is a fraction of a millisecond there. Sparse
    gradients are kept for one process on the CPU, where they save most of the update's work. The
    optimizer then sees ordinary dense parameters (`sparse_parameters` finds none).
    """
    trainer = getattr(module, "_trainer", None)
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
        log.info("%s: dense gradients on %s (%s)", switched, where, reason)


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
        optimizer = registry.instantiate({**optimizer, "_partial_": True}, "optimizer", where="optimizer")
    if isinstance(params, nn.Module):
        accepted = _parameters(getattr(optimizer, "func", optimizer))
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
    cls = getattr(optimizer, "func", optimizer)
    momentum = _setting(optimizer, accepted, "momentum") if "momentum" in accepted else 0
    if isinstance(cls, type) and issubclass(cls, SPARSE_CAPABLE) and not momentum:
        return optimizer(groups)
    dense = [g for g in groups if not g.get("sparse")]
    rows = [{k: v for k, v in g.items() if k != "weight_decay"} for g in groups if g.get("sparse")]
    settings = {k: _setting(optimizer, accepted, k) for k in ("lr", "betas", "eps") if k in accepted}
    sparse = SparseAdam(rows, **{k: v for k, v in settings.items() if v is not None})
    return WithSparseRows(optimizer(dense), sparse) if dense else sparse


def _setting(optimizer: Any, accepted: Mapping[str, inspect.Parameter], name: str) -> Any:
    """The value of the optimizer's argument `name`: given in its partial, else its default (None: none)."""
    default = accepted[name].default if name in accepted else inspect.Parameter.empty
    return getattr(optimizer, "keywords", {}).get(name, None if default is inspect.Parameter.empty else default)


def build_scheduler(scheduler: SchedulerSpec, optimizer: Optimizer, run_length: Callable[[], int] | None = None):
    """Create the LR scheduler for `optimizer` from a partial config or a callable.

    A config that leaves the run's length unset (`RUN_LENGTH`: OneCycleLR's `total_steps`,
    CosineAnnealingLR's `T_max`, PolynomialLR's `total_iters`; null or omitted) gets `run_length()`:
    the number of times the scheduler will be stepped. OneCycleLR cycles the momentum (or Adam's
    beta1) unless `cycle_momentum` says otherwise, and only of an optimizer that uses one: Adagrad,
    plain SGD or RMSprop without momentum stay without. A single OneCycleLR `max_lr` is scaled for
    each parameter group by its `lr_scale` (a backbone's lower learning rate).
    """
    if isinstance(scheduler, Mapping):
        scheduler = dict(scheduler)
        cls = registry.resolve(scheduler.get("_target_"), "scheduler", where="scheduler")
        key = RUN_LENGTH.get(cls)
        if key is not None and scheduler.get(key) is None and not (cls is OneCycleLR and scheduler.get("epochs")):
            if run_length is None:
                raise ConfigError(f"scheduler: {scheduler['_target_']} needs {key}, the run's length; set it")
            scheduler[key] = run_length()
        scales = [group.get("lr_scale", 1.0) for group in optimizer.param_groups]
        if cls is OneCycleLR and any(s != 1.0 for s in scales) and not isinstance(scheduler.get("max_lr"), list):
            scheduler["max_lr"] = [scheduler["max_lr"] * s for s in scales]  # a backbone's lower learning rate
        if cls is OneCycleLR and "cycle_momentum" not in scheduler:  # cycle a momentum only where there is one
            defaults = optimizer.defaults
            scheduler["cycle_momentum"] = "betas" in defaults or defaults.get("momentum", 0) > 0
        scheduler = registry.instantiate({**scheduler, "_partial_": True}, "scheduler", where="scheduler")
    return scheduler(optimizer)


def objects_to_skip(**specs: Any) -> list[str]:
    """Names of the `specs` that are objects rather than configs: they cannot go in a checkpoint."""
    return [name for name, spec in specs.items() if spec is not None and not isinstance(spec, Mapping)]


def configure_optimizers(
    module, optimizer, scheduler, interval: str, monitor: str, backbone_lr_scale: float | None = None
) -> Any:
    """What `LightningModule.configure_optimizers` returns for these specs.

    A scheduler's unset run length is the Trainer's: its optimizer steps (`estimated_stepping_batches`)
    when stepped every "step", its `max_epochs` when stepped every "epoch".
    """
    if interval not in ("step", "epoch"):
        raise ConfigError(f"module.scheduler_interval={interval!r}: choose step or epoch")
    opt = build_optimizer(optimizer, module, backbone_lr_scale)
    if scheduler is None:
        return opt
    lr_scheduler = {
        "scheduler": build_scheduler(scheduler, opt, lambda: run_length(module, interval)),
        "interval": interval,
        "monitor": monitor,
    }
    return {"optimizer": opt, "lr_scheduler": lr_scheduler}


def run_length(module, interval: str) -> int:
    """How many times a scheduler stepped every `interval` is stepped in the module's Trainer run."""
    try:
        trainer = module.trainer
    except RuntimeError:  # not attached to a Trainer
        trainer = None
    if trainer is None:
        raise ConfigError("the scheduler's run length comes from the Trainer; set it in the scheduler config")
    total = trainer.estimated_stepping_batches if interval == "step" else trainer.max_epochs
    if total is None or total < 1 or total == float("inf"):
        raise ConfigError(
            f"the scheduler needs the run's length, but the Trainer's is unbounded ({interval}s: {total}); "
            "set trainer.max_epochs or trainer.max_steps, or the scheduler's own length"
        )
    return int(total)


def _parameters(obj: Any) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return {}


FINITE_CHECK_EVERY = 50  # steps between the host's looks at the loss flag (each look waits for the device)


def check_finite(loss: torch.Tensor, module) -> None:
    """Stop with a clear error when the training loss becomes NaN or infinite.

    The check runs on the device every step (the first non-finite step and value are kept there);
    the host reads it, which waits for the device, only every `FINITE_CHECK_EVERY` steps and at
    the last batch of each epoch, so a GPU is not held up on every step. The step number goes to the
    device as a fill (`torch.full`), which is queued like any kernel; `torch.tensor(step, device=...)`
    would copy it from pageable host memory and wait.
    """
    bad = ~torch.isfinite(loss.detach())
    step = torch.full((), module.global_step, device=loss.device, dtype=torch.long)
    first = getattr(module, "_first_nonfinite", None)
    if first is None or first[0].device != loss.device:
        first = (torch.full((), -1, device=loss.device, dtype=torch.long), torch.zeros((), device=loss.device))
    unseen = bad & (first[0] < 0)
    first = (torch.where(unseen, step, first[0]), torch.where(unseen, loss.detach().float(), first[1]))
    module._first_nonfinite = first
    trainer = getattr(module, "_trainer", None)
    if module.global_step % FINITE_CHECK_EVERY and not (trainer is not None and trainer.is_last_batch):
        return
    at, value = torch.stack([first[0].float(), first[1]]).tolist()  # one read of both (float32: MPS has no float64)
    if at >= 0:
        at = int(at)
        optimizer = getattr(module, "hparams", {}).get("optimizer")
        lr = optimizer.get("lr") if isinstance(optimizer, Mapping) else None
        now = f" (now {lr})" if lr is not None else ""
        raise DivergedError(
            f"training loss is {value} at epoch {module.current_epoch}, step {at}: "
            f"the run diverged; lower module.optimizer.lr{now} or check the inputs for NaN/inf values"
        )
