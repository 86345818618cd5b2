"""One forward pass through every selectable net: output shape and no NaNs; every init scheme on every net."""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from dltemplate import registry
from dltemplate.errors import ConfigError
from dltemplate.modules.factories import build_net
from dltemplate.nets import ExampleInput, example_input
from dltemplate.nets.init import SCHEMES, init_scheme
from tests.helpers import CONFIG_DIR, FAMILIES, fit_family

NETS = sorted(p.stem for p in (CONFIG_DIR / "net").glob("*.yaml"))
DIMS = {
    "in_features": 5,
    "out_features": 3,
    "num_classes": 3,
    "num_numeric": 4,
    "cardinalities": [3, 5],
    "num_series": 3,
    "horizon": 2,
    "in_channels": 3,
    "image_size": 32,
    "vocab_size": 50,
    "pad_token_id": 0,
    "embedding_dim": 8,
    "buckets": 64,
}
# nets whose default names a download: the same net, offline (a timm test model; a tiny BERT architecture)
OFFLINE = {
    "timm": {"model_name": "test_resnet"},
    "transformer": {
        "config": {
            "model_type": "bert",
            "vocab_size": 50,
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 32,
            "max_position_embeddings": 64,
        }
    },
}
WINDOW = 8


def needs(*nets: str):
    """Skip a test when this project has left out the net(s) it checks (a family not chosen)."""
    missing = [n for n in nets if n not in NETS]
    return pytest.mark.skipif(bool(missing), reason=f"no conf/net/{missing[0] if missing else ''}.yaml here")


def net_spec(name: str) -> dict:
    """The net config `name` with the test sizes, offline."""
    cfg = OmegaConf.merge(OmegaConf.load(CONFIG_DIR / "net" / f"{name}.yaml"), OFFLINE.get(name, {}), {"dims": DIMS})
    spec = OmegaConf.to_container(cfg, resolve=True)
    spec.pop("dims")
    return spec


def output_shape(spec: dict) -> tuple[int, ...]:
    """What a net of `spec` returns per sample: (horizon, num_series) for forecasters, else (out_features,)."""
    return (spec["horizon"], spec["num_series"]) if "horizon" in spec else (spec["out_features"],)


def net_input(net: torch.nn.Module, spec: dict, batch: int) -> torch.Tensor:
    """The example input the net's class declares (`dltemplate.nets.ExampleInput`)."""
    return example_input(type(net), batch, {k: v for k, v in spec.items() if k != "_target_"})


@pytest.mark.parametrize("name", NETS)
def test_forward_shape_and_finite(name):
    spec = net_spec(name)
    net = build_net(spec).eval()
    assert isinstance(type(net), ExampleInput) or spec["_target_"].startswith("torch."), "declare example_input"
    out = net(net_input(net, spec, 4))
    assert out.shape == (4, *output_shape(spec))
    assert torch.isfinite(out).all()


def test_mlp_options_build_the_layers_they_name():
    from dltemplate.nets.mlp import MLP

    net = MLP(6, 2, hidden=[8, 4], activation="GELU", dropout=0.2, batch_norm=True)
    kinds = [type(m).__name__ for m in net.layers]
    assert kinds == ["Linear", "BatchNorm1d", "GELU", "Dropout", "Linear", "BatchNorm1d", "GELU", "Dropout", "Linear"]


@needs("tabular")
def test_tabular_net_embeds_or_one_hot_encodes_categories():
    from dltemplate.tabular.nets.tabular import TabularNet

    one_hot = TabularNet(4, [3, 5], 1, hidden=[20, 15])
    assert one_hot.mlp.layers[0].in_features == 4 + 3 + 5  # the book's shape: inputs → 20 → 15 → 1
    embedded = TabularNet(4, [3, 5], 1, embedding_dim=4)
    assert [e.embedding_dim for e in embedded.embeddings] == [2, 3]  # capped at (k + 1) // 2
    assert embedded.mlp.layers[0].in_features == 4 + 2 + 3


@needs("growth_lstm", "rnn_forecaster")
def test_forecasters_start_from_the_last_observed_value():
    from dltemplate.series.nets.growth_lstm import GrowthRateLSTM
    from dltemplate.series.nets.rnn_forecaster import RNNForecaster

    x = torch.rand(4, WINDOW, 3) + 0.5
    assert torch.equal(RNNForecaster(3, horizon=2)(x), x[:, -1:].expand(4, 2, 3))  # untrained = naive
    assert (GrowthRateLSTM(3, horizon=2)(-x) == 0).all()  # never negative


@needs("simple_cnn")
def test_simple_cnn_has_the_books_54k_parameters():
    from dltemplate.image.nets.simple_cnn import SimpleCNN

    assert sum(p.numel() for p in SimpleCNN().parameters()) == 54_273


@needs("ngram_bag")
def test_ngram_bag_leaves_padding_out_and_empty_texts_get_a_prediction():
    from dltemplate.text.nets.ngram_bag import NGramBag

    net = NGramBag(vocab_size=20, embedding_dim=4, ngrams=2, buckets=64)
    ids = torch.tensor([[5, 6, 7, 0, 0], [0, 0, 0, 0, 0]])
    features = net.features(ids)
    assert features.shape == (2, 5 + 4)
    assert (features[0, 5:7] >= 20).all() and (features[0, 7:] == 0).all()  # pairs touching padding are padding
    assert torch.isfinite(net(ids)).all()  # the empty text's bag is zeros: a prediction all the same


@needs("text_cnn")
def test_book_text_cnn_pads_or_cuts_to_its_length():
    from dltemplate.text.nets.text_cnn import BookTextCNN

    net = BookTextCNN(vocab_size=10_000)
    assert net.head.in_features == 6144  # the book's 200 tokens → 6144 features
    assert net(torch.randint(0, 10_000, (2, 31))).shape == net(torch.randint(0, 10_000, (2, 500))).shape == (2, 1)


@pytest.mark.slow  # seconds each (whole runs, or every net or family): CI runs the slow tests too
@pytest.mark.parametrize("scheme", sorted(SCHEMES))
@pytest.mark.parametrize("family", ["binary", "regression", "forecasting"])
def test_every_init_scheme_trains_a_step_on_each_family(make_cfg, scheme, family):
    torch.manual_seed(0)
    module, trainer = fit_family(make_cfg(f"task={FAMILIES[family][0]}", f"net.init={scheme}"), family)
    assert trainer.global_step == 1 and torch.isfinite(trainer.callback_metrics["train/loss_step"])
    assert module.hparams.net["init"] == scheme  # recorded with the net's config


@pytest.mark.slow  # seconds each (whole runs, or every net or family): CI runs the slow tests too
@pytest.mark.parametrize("name", NETS)
def test_every_init_scheme_fits_every_net(name):
    spec = net_spec(name)
    net = build_net(spec).eval()
    for scheme in SCHEMES:  # every scheme applies to every layer; one forward at the end keeps this fast
        init_scheme(scheme)(net)
    out = net(net_input(net, spec, 4))
    assert out.shape == (4, *output_shape(spec)) and torch.isfinite(out).all()


def test_schemes_go_by_layer_type():
    TabularNet = pytest.importorskip("dltemplate.tabular.nets.tabular").TabularNet

    torch.manual_seed(0)
    net = nn.ModuleDict(
        {
            "tabular": TabularNet(4, [3, 5], 1, hidden=[256], embedding_dim=4, batch_norm=True),
            "lstm": nn.LSTM(3, 8, num_layers=2),
        }
    )
    embedding = net["tabular"].embeddings[0].weight.detach().clone()
    net["tabular"].mlp.layers[1].weight.data.fill_(3.0)  # a BatchNorm scale somewhere else than 1
    init_scheme("kaiming")(net)
    hidden = net["tabular"].mlp.layers[0]
    assert hidden.weight.std().item() == pytest.approx((2 / hidden.in_features) ** 0.5, rel=0.15)  # He: √(2/fan_in)
    assert (hidden.bias == 0).all()
    assert (net["tabular"].mlp.layers[1].weight == 1).all()  # normalisation starts as the identity
    assert torch.equal(net["tabular"].embeddings[0].weight, embedding)  # embeddings keep their own init
    lstm = net["lstm"]
    for block in lstm.weight_hh_l1.detach().chunk(4):  # orthogonal, gate by gate
        torch.testing.assert_close(block @ block.T, torch.eye(8), atol=1e-5, rtol=0)
    assert (lstm.bias_ih_l0[8:16] == 1).all() and (lstm.bias_ih_l0[:8] == 0).all() and (lstm.bias_hh_l0 == 0).all()


@needs("rnn_forecaster")
def test_a_net_that_needs_its_own_start_keeps_it():
    from dltemplate.series.nets.rnn_forecaster import RNNForecaster

    net = build_net(
        {"_target_": "dltemplate.series.nets.rnn_forecaster.RNNForecaster", "num_series": 3, "init": "xavier"}
    )
    x = torch.rand(4, WINDOW, 3)
    assert isinstance(net, RNNForecaster) and torch.equal(net(x), x[:, -1:])  # still the naive forecast


def test_init_never_overwrites_loaded_weights(tmp_path):
    from lightning.pytorch import Trainer

    from dltemplate.modules.regression import RegressionModule

    torch.manual_seed(0)
    module = RegressionModule(
        {"_target_": "dltemplate.nets.mlp.MLP", "in_features": 2, "out_features": 1, "init": "normal"}
    )
    trainer = Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    x, y = torch.randn(8, 2), torch.randn(8)
    trainer.fit(module, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8))
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    reloaded = RegressionModule.load_from_checkpoint(tmp_path / "m.ckpt", weights_only=True)
    assert reloaded.hparams.net["init"] == "normal"
    assert torch.equal(reloaded(x), module.eval()(x))  # the scheme ran before the trained weights were loaded
    with pytest.raises(ConfigError, match="would overwrite the pretrained weights"):
        build_net(
            {"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 1, "pretrained": True, "init": "xavier"}
        )


def test_an_init_scheme_is_one_of_the_names():
    with pytest.raises(ConfigError, match=r"net.init='he' is not an initialisation scheme"):
        build_net({"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 1, "init": "he"})


@pytest.mark.parametrize("init", [{"_target_": "os.system", "command": "touch pwned"}, {"_target_": "torch.load"}])
def test_a_checkpoint_may_name_only_a_registered_init_scheme(init):
    with pytest.raises(ConfigError, match=r"net\.init names .* not an allowed init"):
        registry.check({"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 1, "init": init}, "net", "net")


NESTED_NET = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    """(B, in_features) -> (B, out_features)."""

    def __init__(self, in_features: int, out_features: int, hidden: list[int] = (8,)) -> None:
        super().__init__()
        width = hidden[0]
        self.layers = nn.Sequential(nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
'''


def test_a_net_in_folders_of_its_own_trains_by_config_and_restores(make_cfg, tmp_path, monkeypatch):
    """nets/<folder>/<folder>/<file>.py is found by its _target_ alone: no registry entry, no other file edited;
    its checkpoints restore too (the project's own package is allowed at any depth)."""
    import dltemplate.nets
    from dltemplate.checkpoint import restore
    from dltemplate.train import train

    extra = tmp_path / "extra_nets"
    (extra / "custom" / "deeper").mkdir(parents=True)
    (extra / "custom" / "__init__.py").write_text("")  # `deeper` has none: a plain folder works too
    (extra / "custom" / "deeper" / "tiny.py").write_text(NESTED_NET)
    monkeypatch.setattr(dltemplate.nets, "__path__", [*dltemplate.nets.__path__, str(extra)])
    target = "dltemplate.nets.custom.deeper.tiny.TinyNet"
    net = ["~net", f"+net._target_={target}", "+net.in_features=${dims.in_features}", "+net.out_features=1"]
    result = train(make_cfg("task=rings", *net, "trainer.max_epochs=2"))
    assert type(result.module.net).__module__ == "dltemplate.nets.custom.deeper.tiny"
    assert result.metrics["test/acc"] > 0.5
    restored, _, _ = restore(result.best_checkpoint)
    assert type(restored.net).__name__ == "TinyNet"
    missing = {"_target_": "dltemplate.nets.custom.deeper.tiny.Missing", "in_features": 2, "out_features": 1}
    with pytest.raises(
        ConfigError, match=r"net\._target_=.*: dltemplate/nets/custom/deeper/tiny\.py does not define Missing"
    ):
        build_net(missing)
    with pytest.raises(ConfigError, match=r"net\._target_=.*: dltemplate/nets/custom/nowhere.py does not exist"):
        build_net({**missing, "_target_": "dltemplate.nets.custom.nowhere.TinyNet"})


def test_a_library_net_trains_by_config_without_a_wrapper_but_its_checkpoint_is_refused(make_cfg):
    """The run's own config may name any class whose arguments fit (Hydra's instantiate); a checkpoint is
    checked against the allowlist, which holds the project's nets and torch.nn, not every installed library."""
    pytest.importorskip("torchvision")
    from dltemplate.checkpoint import restore
    from dltemplate.errors import CheckpointError
    from dltemplate.train import train

    net = ["~net", "~net.hidden", "+net._target_=torchvision.ops.MLP", "+net.in_channels=${dims.in_features}"]
    result = train(make_cfg("task=rings", *net, "+net.hidden_channels=[16,1]", "trainer.max_epochs=1"))
    assert type(result.module.net).__module__.startswith("torchvision.ops")
    with pytest.raises(CheckpointError, match=r"torchvision\.ops\.MLP', which is not an allowed net"):
        restore(result.best_checkpoint)
    with pytest.raises(ConfigError, match=r"net\._target_='torchvision\.ops\.Nope': module torchvision\.ops does not"):
        build_net({"_target_": "torchvision.ops.Nope"})


@needs("tabular")
def test_category_codes_out_of_range_are_read_as_unknown_in_every_runtime():
    """Code 0 is "unknown": a negative or too large code gives its answer, not an error or a wrapped index."""
    TabularNet = pytest.importorskip("dltemplate.tabular.nets.tabular").TabularNet
    net = TabularNet(num_numeric=1, cardinalities=[3, 4], out_features=1, embedding_dim=2).eval()
    unknown = net(torch.tensor([[0.5, 0.0, 0.0]]))
    for codes in ([-1.0, 0.0], [3.0, -2.0], [0.0, 99.0], [-3.0, 4.0]):
        torch.testing.assert_close(net(torch.tensor([[0.5, *codes]])), unknown)
    assert not torch.allclose(net(torch.tensor([[0.5, 1.0, 2.0]])), unknown)
    assert "limits" not in net.state_dict()  # checkpoints are unchanged
