"""One forward pass through every selectable net: output shape and no NaNs."""

import pytest
import torch
from omegaconf import OmegaConf

from dltemplate.modules.factories import build_net
from tests.helpers import CONFIG_DIR

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
}
WINDOW = 8


def needs(*nets: str):
    """Skip a test when this project has left out the net(s) it checks (a family not chosen)."""
    missing = [n for n in nets if n not in NETS]
    return pytest.mark.skipif(bool(missing), reason=f"no conf/net/{missing[0] if missing else ''}.yaml here")


def tabular_rows(batch: int) -> torch.Tensor:
    """(B, 4 numeric + 2 category codes), codes within their cardinalities."""
    codes = torch.stack([torch.randint(0, k, (batch,)) for k in DIMS["cardinalities"]], dim=1).float()
    return torch.cat([torch.randn(batch, DIMS["num_numeric"]), codes], dim=1)


VECTOR_OUT = (DIMS["out_features"],)
FORECAST_OUT = (DIMS["horizon"], DIMS["num_series"])
# net class → (input of batch size B, output shape without the batch dimension)
INPUTS = {
    "torch.nn.Linear": (lambda b: torch.randn(b, DIMS["in_features"]), VECTOR_OUT),
    "dltemplate.nets.mlp.MLP": (lambda b: torch.randn(b, DIMS["in_features"]), VECTOR_OUT),
    "dltemplate.nets.tabular.TabularNet": (tabular_rows, VECTOR_OUT),
    "dltemplate.nets.growth_lstm.GrowthRateLSTM": (lambda b: torch.rand(b, WINDOW, DIMS["num_series"]), FORECAST_OUT),
    "dltemplate.nets.rnn_forecaster.RNNForecaster": (
        lambda b: torch.randn(b, WINDOW, DIMS["num_series"]),
        FORECAST_OUT,
    ),
    "dltemplate.nets.simple_cnn.SimpleCNN": (lambda b: torch.randn(b, 3, 32, 32), VECTOR_OUT),
    "dltemplate.nets.resnet.SmallResNet": (lambda b: torch.randn(b, 3, 32, 32), VECTOR_OUT),
    "dltemplate.nets.text_cnn.BookTextCNN": (lambda b: torch.randint(0, 50, (b, 37)), VECTOR_OUT),
    "dltemplate.nets.ngram_bag.NGramBag": (lambda b: torch.randint(0, 50, (b, 37)), VECTOR_OUT),
}


@pytest.mark.parametrize("name", NETS)
def test_forward_shape_and_finite(name):
    cfg = OmegaConf.merge(OmegaConf.load(CONFIG_DIR / "net" / f"{name}.yaml"), {"dims": DIMS})
    spec = OmegaConf.to_container(cfg, resolve=True)
    spec.pop("dims")
    assert spec["_target_"] in INPUTS, f"add an example input for {spec['_target_']} to INPUTS"
    net = build_net(spec).eval()
    make_input, out_shape = INPUTS[spec["_target_"]]
    out = net(make_input(4))
    assert out.shape == (4, *out_shape)
    assert torch.isfinite(out).all()


def test_mlp_options_build_the_layers_they_name():
    from dltemplate.nets.mlp import MLP

    net = MLP(6, 2, hidden=[8, 4], activation="GELU", dropout=0.2, batch_norm=True)
    kinds = [type(m).__name__ for m in net.layers]
    assert kinds == ["Linear", "BatchNorm1d", "GELU", "Dropout", "Linear", "BatchNorm1d", "GELU", "Dropout", "Linear"]


@needs("tabular")
def test_tabular_net_embeds_or_one_hot_encodes_categories():
    from dltemplate.nets.tabular import TabularNet

    one_hot = TabularNet(4, [3, 5], 1, hidden=[20, 15])
    assert one_hot.mlp.layers[0].in_features == 4 + 3 + 5  # the book's shape: inputs → 20 → 15 → 1
    embedded = TabularNet(4, [3, 5], 1, embedding_dim=4)
    assert [e.embedding_dim for e in embedded.embeddings] == [2, 3]  # capped at (k + 1) // 2
    assert embedded.mlp.layers[0].in_features == 4 + 2 + 3


@needs("growth_lstm", "rnn_forecaster")
def test_forecasters_start_from_the_last_observed_value():
    from dltemplate.nets.growth_lstm import GrowthRateLSTM
    from dltemplate.nets.rnn_forecaster import RNNForecaster

    x = torch.rand(4, WINDOW, 3) + 0.5
    assert torch.equal(RNNForecaster(3, horizon=2)(x), x[:, -1:].expand(4, 2, 3))  # untrained = naive
    assert (GrowthRateLSTM(3, horizon=2)(-x) == 0).all()  # never negative


@needs("simple_cnn")
def test_simple_cnn_has_the_books_54k_parameters():
    from dltemplate.nets.simple_cnn import SimpleCNN

    assert sum(p.numel() for p in SimpleCNN().parameters()) == 54_273


@needs("ngram_bag")
def test_ngram_bag_leaves_padding_out_and_empty_texts_get_a_prediction():
    from dltemplate.nets.ngram_bag import NGramBag

    net = NGramBag(vocab_size=20, embedding_dim=4, ngrams=2, buckets=64)
    ids = torch.tensor([[5, 6, 7, 0, 0], [0, 0, 0, 0, 0]])
    features = net.features(ids)
    assert features.shape == (2, 5 + 4)
    assert (features[0, 5:7] >= 20).all() and (features[0, 7:] == 0).all()  # pairs touching padding are padding
    assert torch.isfinite(net(ids)).all()  # the empty text's bag is zeros: a prediction all the same


@needs("text_cnn")
def test_book_text_cnn_pads_or_cuts_to_its_length():
    from dltemplate.nets.text_cnn import BookTextCNN

    net = BookTextCNN(vocab_size=10_000)
    assert net.head.in_features == 6144  # the book's 200 tokens → 6144 features
    assert net(torch.randint(0, 10_000, (2, 31))).shape == net(torch.randint(0, 10_000, (2, 500))).shape == (2, 1)
