"""Losses chosen by configuration: every choice trains on the families it fits, the others are refused."""

import sys

import pytest
import torch
import torch.nn.functional as F

from dltemplate.errors import ConfigError, DataError
from dltemplate.losses import SHORT_NAMES, FocalLoss, build_loss, names_for
from dltemplate.modules.classification import ClassificationModule
from dltemplate.modules.regression import RegressionModule
from tests.helpers import FAMILIES, fit_family

MLP = {"_target_": "dltemplate.nets.mlp.MLP", "in_features": 2, "hidden": [8]}


CASES = [
    (n, f) for n in SHORT_NAMES for f in ("binary", "multiclass", "regression", "forecasting") if n in names_for(f)
]


@pytest.mark.slow  # seconds each (whole runs, or every net or family): CI runs the slow tests too
@pytest.mark.parametrize(("name", "family"), CASES)
def test_every_loss_trains_a_step_on_each_family_it_fits(make_cfg, name, family):
    torch.manual_seed(0)
    module, trainer = fit_family(make_cfg(f"task={FAMILIES[family][0]}", f"module.loss={name}"), family)
    assert trainer.global_step == 1
    assert torch.isfinite(trainer.callback_metrics["train/loss_step"])
    assert module.hparams.loss == name  # plain data in the checkpoint


@pytest.mark.parametrize(
    ("family", "name", "fitting"),
    [
        ("regression", "ce", "mse, l1, huber, smooth_l1, poisson"),
        ("multiclass", "bce", "ce, focal"),
        ("binary", "mse", "ce, bce, focal"),
        ("forecasting", "poisson", "mse, l1, huber, smooth_l1"),
        ("regression", "no_such_loss", "mse, l1, huber, smooth_l1, poisson"),
    ],
)
def test_a_loss_that_does_not_fit_is_one_clear_message(make_cfg, family, name, fitting):
    with pytest.raises(ConfigError) as error:
        fit_family(make_cfg(f"task={FAMILIES[family][0]}", f"module.loss={name}"), family)
    message = str(error.value)
    assert message.startswith(f"module.loss={name!r} ") and message.count("module.loss") == 1
    assert f"module: {fitting}, or a _target_ of " in message


def test_any_fitting_torch_loss_by_target_with_its_own_options(make_cfg):
    loss = "module.loss={_target_:torch.nn.HuberLoss,delta:0.5}"
    module, trainer = fit_family(make_cfg("task=linear_regression", loss), "regression")
    assert module.loss_fn.loss.delta == 0.5 and trainer.global_step == 1
    with pytest.raises(ConfigError, match="takes inputs that no module produces"):
        build_loss({"_target_": "torch.nn.NLLLoss"}, "multiclass")  # log-probabilities: use ce


def test_class_weights_and_label_smoothing_keep_working():
    torch.manual_seed(0)
    z, y = torch.randn(16), torch.randint(0, 2, (16,))
    binary = build_loss("ce", "binary", class_weights=[1.0, 3.0], label_smoothing=0.1)
    smoothed = y.float() * 0.9 + 0.05
    torch.testing.assert_close(
        binary(z, y), F.binary_cross_entropy_with_logits(z, smoothed, pos_weight=torch.tensor(3.0))
    )
    logits, y3 = torch.randn(16, 3), torch.randint(0, 3, (16,))
    weights = torch.tensor([1.0, 2.0, 0.5])
    multi = build_loss("ce", "multiclass", class_weights=weights.tolist(), label_smoothing=0.1)
    torch.testing.assert_close(multi(logits, y3), F.cross_entropy(logits, y3, weight=weights, label_smoothing=0.1))
    weighted = ClassificationModule({**MLP, "out_features": 3}, num_classes=3, class_weights=[1, 2, 3], loss="focal")
    assert all(not k.startswith("loss_fn") for k in weighted.state_dict())  # weights come from the hparams


def test_focal_loss_is_cross_entropy_at_gamma_0_and_the_sigmoid_focal_loss_for_one_logit():
    torch.manual_seed(0)
    logits, y = torch.randn(16, 3), torch.randint(0, 3, (16,))
    w = torch.tensor([1.0, 2.0, 0.5])
    focal0 = FocalLoss(gamma=0.0, weight=w, label_smoothing=0.1)
    torch.testing.assert_close(focal0(logits, y), F.cross_entropy(logits, y, weight=w, label_smoothing=0.1))
    z, t = torch.randn(16), torch.randint(0, 2, (16,))
    p_true = torch.where(t == 1, torch.sigmoid(z), 1 - torch.sigmoid(z))
    expected = (-((1 - p_true) ** 2) * p_true.log()).mean()
    torch.testing.assert_close(build_loss("focal", "binary")(z, t), expected)


def test_regression_losses_compare_standardised_targets_and_poisson_predicts_positive_rates():
    torch.manual_seed(0)
    net = {"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 1}
    x, y = torch.randn(8, 2), torch.poisson(torch.full((8,), 3.0))
    mse = RegressionModule(net, target_mean=3.0, target_std=2.0)
    out = mse.model_step((x, y), "train")
    torch.testing.assert_close(out["loss"], F.mse_loss((out["preds"] - 3.0) / 2.0, (y - 3.0) / 2.0))

    poisson = RegressionModule(net, loss="poisson", target_mean=3.0, target_std=2.0)
    out = poisson.model_step((x, y), "train")
    rate = out["preds"]
    assert (rate > 0).all()
    torch.testing.assert_close(out["loss"], F.poisson_nll_loss(rate.log(), y))
    poisson.model_step((x, y - 10), "train")  # noted on the device, read at the epoch's end
    with pytest.raises(DataError, match="poisson needs counts"):
        poisson.on_train_epoch_end()
    with pytest.raises(ConfigError, match="poisson needs counts"):
        RegressionModule(net, loss="poisson", target_mean=-1.0)


@pytest.mark.parametrize("target", ["os.system", "torch.load", "torch.nn.functional.mse_loss", "evil_loss.Loss"])
def test_a_loss_named_in_a_checkpoint_is_refused_before_anything_is_imported(tmp_path, monkeypatch, target):
    (tmp_path / "evil_loss.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').close()\nLoss = print\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = ClassificationModule({**MLP, "out_features": 1})
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": {**module.hparams, "loss": {"_target_": target, "command": "touch pwned"}},
        "pytorch-lightning_version": "2.6.0",
    }
    torch.save(checkpoint, tmp_path / "crafted.ckpt")
    with pytest.raises(ConfigError, match="not an allowed loss"):
        ClassificationModule.load_from_checkpoint(tmp_path / "crafted.ckpt", weights_only=True)
    assert not (tmp_path / "imported").exists() and "evil_loss" not in sys.modules
