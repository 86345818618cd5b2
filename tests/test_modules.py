"""The generic LightningModules: losses, metrics, optimizers from config, safe reload."""

from functools import partial
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dltemplate.modules.classification import ClassificationModule
from dltemplate.modules.factories import build_net, build_optimizer, build_scheduler
from dltemplate.modules.regression import RegressionModule

MLP_SPEC = {"_target_": "dltemplate.nets.mlp.MLP", "in_features": 4, "hidden": [16]}
SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1}


def loader(x: torch.Tensor, y: torch.Tensor) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=32)


def fit(module, x, y, tmp_path: Path, epochs: int = 2) -> Trainer:
    trainer = Trainer(
        max_epochs=epochs,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, loader(x, y), loader(x, y))
    return trainer


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
    ("build", "spec"),
    [
        (build_net, {"_target_": "os.system", "command": "echo pwned"}),
        (build_net, {"_target_": "no.such.module.Net"}),
        (lambda s: build_optimizer(s, [nn.Parameter(torch.zeros(1))]), {"_target_": "subprocess.run"}),
        (
            lambda s: build_scheduler(s, torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1)),
            {"_target_": "os.remove"},
        ),
    ],
)
def test_configs_may_only_name_the_expected_kind_of_class(build, spec):
    with pytest.raises(ValueError, match=r"_target_|subclass"):
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
