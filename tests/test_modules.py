"""The generic LightningModules: metrics, optimizers and schedulers from config, safe reload."""

import math
from functools import partial
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dltemplate.errors import ConfigError
from dltemplate.modules.classification import ClassificationModule
from dltemplate.modules.factories import build_net
from dltemplate.modules.optimizers import build_optimizer, parameter_groups
from dltemplate.modules.regression import RegressionModule
from dltemplate.modules.schedulers import build_scheduler
from tests.helpers import CONFIG_DIR, FAMILIES, family_batch, fit_family

MLP_SPEC = {"_target_": "dltemplate.nets.mlp.MLP", "in_features": 4, "hidden": [16]}
SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1}


def loader(x: torch.Tensor, y: torch.Tensor) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=32)


def fit(module, x, y, tmp_path: Path, epochs: int = 2, callbacks=()) -> Trainer:
    trainer = Trainer(
        max_epochs=epochs,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
    )
    trainer.fit(module, loader(x, y), loader(x, y))
    return trainer


@pytest.mark.slow  # trains full runs: in CI's slow pass, off the quick default run
@pytest.mark.parametrize("num_classes", [2, 5])
def test_classification_learns_and_logs_its_metrics(tmp_path, num_classes):
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    edges = torch.tensor([0.0]) if num_classes == 2 else torch.tensor([-1.0, -0.3, 0.3, 1.0])
    y = torch.bucketize(x[:, 0].contiguous(), edges)  # chance level: 0.5 binary, 0.31 for 5 classes
    out = 1 if num_classes == 2 else num_classes
    module = ClassificationModule({**MLP_SPEC, "out_features": out}, num_classes=num_classes, optimizer=SGD)
    trainer = fit(module, x, y, tmp_path, epochs=15)
    metrics = trainer.callback_metrics
    assert {"train/loss_epoch", "val/loss", "val/acc", "val/auroc", "val/f1"} <= set(metrics)
    assert metrics["val/acc"] > (0.9 if num_classes == 2 else 0.65)
    probs = module.predict_step(x[:3], 0)
    assert probs.shape == ((3,) if num_classes == 2 else (3, num_classes))


def test_regression_learns_a_linear_map(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(512, 4)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 1.0
    net = {"_target_": "torch.nn.Linear", "in_features": 4, "out_features": 1}
    trainer = fit(RegressionModule(net, optimizer=SGD), x, y, tmp_path, epochs=20)
    assert trainer.callback_metrics["val/mse"] < 1e-3
    assert trainer.callback_metrics["val/r2"] > 0.999


def test_load_from_checkpoint_rebuilds_the_net_from_its_config(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    module = ClassificationModule({**MLP_SPEC, "out_features": 1}, optimizer=SGD)
    trainer = fit(module, x, y, tmp_path)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)

    torch.load(path, weights_only=True)  # plain data only: no pickled code in the checkpoint
    reloaded = ClassificationModule.load_from_checkpoint(path, weights_only=True)  # no net passed
    module.eval(), reloaded.eval()
    assert torch.equal(module(x), reloaded(x))
    assert reloaded.hparams.optimizer == SGD


def test_objects_work_too_but_then_the_net_must_be_passed_to_reload(tmp_path):
    x, y = torch.randn(64, 4), torch.randn(64)
    module = RegressionModule(nn.Linear(4, 1), optimizer=partial(torch.optim.SGD, lr=0.01))
    trainer = fit(module, x, y, tmp_path, epochs=1)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    assert "net" not in torch.load(tmp_path / "m.ckpt", weights_only=True)["hyper_parameters"]
    reloaded = RegressionModule.load_from_checkpoint(tmp_path / "m.ckpt", net=nn.Linear(4, 1), weights_only=True)
    assert torch.equal(reloaded.net.weight, module.net.weight)


@pytest.mark.parametrize(
    ("build", "spec", "message"),
    [
        (build_net, {"_target_": "collections.OrderedDict"}, "is not a torch.nn.Module"),
        (build_net, {"_target_": "builtins.dict"}, "is not a torch.nn.Module"),
        (build_net, {"_target_": "no.such.module.Net"}, "module no .* does not exist"),
        (
            build_net,
            {"_target_": "torch.nn.Sequential", "_args_": [{"_target_": "torch.nn.Relu"}]},
            r"net\._args_\[0\]",
        ),
        (lambda s: build_optimizer(s, [nn.Parameter(torch.zeros(1))]), {"_target_": "torch.nn.Linear"}, "Optimizer"),
        (
            lambda s: build_scheduler(s, torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1)),
            {"_target_": "torch.optim.SGD"},
            "is not a torch.optim.lr_scheduler.LRScheduler",
        ),
    ],
)
def test_configs_must_name_the_expected_kind_of_class(build, spec, message):
    """The run's own config may name any class (it is built with Hydra's instantiate), but of the right kind:
    one line naming the key, before anything is built."""
    with pytest.raises(ConfigError, match=rf"_target_.*{message}|{message}.*_target_"):
        build(spec)


def test_scheduler_from_config_is_stepped(tmp_path):
    x, y = torch.randn(64, 4), torch.randn(64)
    sched = {"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 1, "gamma": 0.5}
    module = RegressionModule({**MLP_SPEC, "out_features": 1}, optimizer=SGD, scheduler=sched)
    trainer = fit(module, x, y, tmp_path, epochs=3)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)


def test_diverging_loss_stops_with_a_clear_error(tmp_path):
    x, y = torch.randn(64, 4), torch.randn(64)
    x[5, 0] = float("nan")
    module = RegressionModule({**MLP_SPEC, "out_features": 1}, optimizer=SGD)
    with pytest.raises(FloatingPointError, match="loss is nan at epoch 0"):
        fit(module, x, y, tmp_path, epochs=1)


def test_bad_class_weights_are_refused():
    with pytest.raises(ValueError, match="3 entries for 2 classes"):
        ClassificationModule({**MLP_SPEC, "out_features": 1}, class_weights=[1, 2, 3])


def test_weight_decay_applies_to_linear_conv_and_recurrent_weights_only():
    TabularNet = pytest.importorskip("dltemplate.tabular.nets.tabular").TabularNet

    net = nn.ModuleDict(
        {
            "tabular": TabularNet(4, [3, 5], 1, hidden=[8], embedding_dim=4, batch_norm=True),
            "conv": nn.Conv1d(2, 3, 3),
            "lstm": nn.LSTM(3, 4),
            "norm": nn.LayerNorm(4),
        }
    )
    decayed, other = parameter_groups(net, weight_decay=0.1)
    names = {id(p): n for n, p in net.named_parameters()}
    assert sorted(names[id(p)] for p in decayed["params"]) == [
        "conv.weight",
        "lstm.weight_hh_l0",
        "lstm.weight_ih_l0",
        "tabular.mlp.layers.0.weight",
        "tabular.mlp.layers.3.weight",
    ]
    assert sorted(names[id(p)] for p in other["params"]) == [  # biases, norms' scales and shifts, embeddings
        "conv.bias",
        "lstm.bias_hh_l0",
        "lstm.bias_ih_l0",
        "norm.bias",
        "norm.weight",
        "tabular.embeddings.0.weight",
        "tabular.embeddings.1.weight",
        "tabular.mlp.layers.0.bias",
        "tabular.mlp.layers.1.bias",
        "tabular.mlp.layers.1.weight",
        "tabular.mlp.layers.3.bias",
    ]
    assert (decayed["weight_decay"], other["weight_decay"]) == (0.1, 0.0)
    assert len(parameter_groups(net, weight_decay=0.0)) == 1  # no decay: one group, as before

    optimizer = build_optimizer({"_target_": "torch.optim.AdamW", "lr": 0.1, "weight_decay": 0.05}, net)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]
    assert [g["weight_decay"] for g in build_optimizer({"_target_": "torch.optim.AdamW"}, net).param_groups] == [
        0.01,  # AdamW's own default, on the weights only
        0.0,
    ]


class StepLRs(Callback):
    """The learning rate each optimizer step uses."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


ONE_CYCLE = {"_target_": "torch.optim.lr_scheduler.OneCycleLR", "max_lr": 0.1, "total_steps": None}
COSINE = {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR"}  # T_max omitted


@pytest.mark.parametrize(
    ("scheduler", "interval", "length", "last_lr"),
    [
        (ONE_CYCLE, "step", 12, 0.1 / 25 / 1e4),  # OneCycleLR's initial_lr / final_div_factor
        (COSINE, "step", 12, 0.1 * (1 + math.cos(math.pi * 11 / 12)) / 2),
        ({**COSINE, "T_max": None}, "epoch", 3, 0.1 * (1 + math.cos(math.pi * 2 / 3)) / 2),
    ],
)
def test_schedulers_take_the_run_length_from_the_trainer(tmp_path, scheduler, interval, length, last_lr):
    x, y = torch.randn(100, 4), torch.randn(100)  # 4 steps an epoch
    module = RegressionModule(
        {**MLP_SPEC, "out_features": 1}, optimizer=SGD, scheduler=scheduler, scheduler_interval=interval
    )
    lrs = StepLRs()
    trainer = fit(module, x, y, tmp_path, epochs=3, callbacks=[lrs])  # a OneCycleLR too short would raise
    schedule = trainer.lr_scheduler_configs[0].scheduler
    assert getattr(schedule, "total_steps", getattr(schedule, "T_max", None)) == length
    assert trainer.global_step == 12
    assert lrs.lrs[-1] == pytest.approx(last_lr, rel=1e-6)  # the last step runs at the schedule's end


def test_cifar2_steps_one_cycle_per_step_over_the_whole_run(make_cfg):
    cfg = make_cfg("task=cifar2", "net=simple_cnn")
    assert cfg.module.scheduler_interval == "step" and cfg.module.scheduler.total_steps is None
    lrs = StepLRs()
    _, trainer = fit_family(cfg, "image", steps=4, callbacks=[lrs])  # 1 epoch: no crash past the 1st step
    assert trainer.global_step == 4 and trainer.lr_scheduler_configs[0].scheduler.total_steps == 4
    assert lrs.lrs[-1] == pytest.approx(cfg.module.optimizer.lr / 25 / 1e4)  # the end of the cycle
    assert max(lrs.lrs) > cfg.module.optimizer.lr / 2  # after its peak


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONFIG_DIR / "module" / "optimizer").glob("*.yaml")))
def test_every_optimizer_preset_trains_with_run_length_schedulers(make_cfg, preset):
    cfg = make_cfg(
        "task=rings", f"module/optimizer={preset}", "module.scheduler_interval=step", "module.scheduler.T_max=null"
    )
    module, trainer = fit_family(cfg, "binary", steps=2)  # cosine annealing over the run's 2 steps
    assert type(trainer.optimizers[0]).__name__ == cfg.module.optimizer._target_.rsplit(".", 1)[1]
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train/loss_step"])
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # T_max = 2 steps

    optimizer = build_optimizer(module.hparams.optimizer, module)  # cifar2's OneCycleLR cycles a momentum
    schedule = build_scheduler(ONE_CYCLE, optimizer, run_length=lambda: 3)  # only where the preset has one
    for _ in range(3):
        optimizer.step()
        schedule.step()


def test_mixup_overrides_only_the_training_objective(make_cfg):
    """The mixup variant is one overridden step part: training mixes pairs, evaluation is the plain step."""
    from dltemplate.build import build_datamodule, build_module
    from dltemplate.modules.mixup import MixupClassification

    cfg = make_cfg("task=rings", "module=mixup", "module.alpha=0.4")
    module = build_module(cfg, build_datamodule(cfg))
    assert isinstance(module, MixupClassification) and module.alpha == 0.4
    torch.manual_seed(0)
    x, y = torch.randn(16, 2), torch.randint(0, 2, (16,))
    assert torch.equal(module.objective(x, y, "val")[0], ClassificationModule.objective(module, x, y, "val")[0])
    torch.manual_seed(1)
    loss, outputs = module.objective(x, y, "train")
    torch.manual_seed(1)  # the same draws by hand: λ, then the pairing
    concentration = torch.full((), 0.4)
    lam = torch.distributions.Beta(concentration, concentration, validate_args=False).sample()
    perm = torch.randperm(16)
    expected_outputs = module(lam * x + (1 - lam) * x[perm])
    torch.testing.assert_close(outputs, expected_outputs)
    bce = module.loss_fn
    torch.testing.assert_close(loss, lam * bce(expected_outputs, y) + (1 - lam) * bce(expected_outputs, y[perm]))
    assert not torch.allclose(loss, bce(module(x), y))


def test_every_module_runs_the_same_step_parts(make_cfg):
    """Classification, regression and forecasting share one model_step; each returns loss, preds and target."""
    from dltemplate.modules.step import StepModule

    for family in ("binary", "regression", "forecasting"):
        task = FAMILIES[family][0]
        cfg = make_cfg(f"task={task}")
        module, _ = fit_family(cfg, family, steps=2)
        assert isinstance(module, StepModule)
        module.trainer = None  # the step on its own, as a newcomer would call it (self.log then only warns)
        x, y = family_batch(family, 4)
        out = module.model_step((x, y), "val")
        assert set(out) == {"loss", "preds", "target"}
        torch.testing.assert_close(out["preds"], module.predict_step(x, 0))
