"""One forward pass through every selectable net: output shape and no NaNs."""

import pytest
import torch
from omegaconf import OmegaConf

from dltemplate.modules.factories import build_net
from tests.helpers import CONFIG_DIR

NETS = sorted(p.stem for p in (CONFIG_DIR / "net").glob("*.yaml"))
DIMS = {"in_features": 5, "out_features": 3, "num_classes": 3}


@pytest.mark.parametrize("name", NETS)
def test_forward_shape_and_finite(name):
    cfg = OmegaConf.merge(OmegaConf.load(CONFIG_DIR / "net" / f"{name}.yaml"), {"dims": DIMS})
    spec = OmegaConf.to_container(cfg, resolve=True)
    spec.pop("dims")
    net = build_net(spec).eval()
    x = torch.randn(4, DIMS["in_features"])
    out = net(x)
    assert out.shape == (4, DIMS["out_features"])
    assert torch.isfinite(out).all()


def test_mlp_options_build_the_layers_they_name():
    from dltemplate.nets.mlp import MLP

    net = MLP(6, 2, hidden=[8, 4], activation="GELU", dropout=0.2, batch_norm=True)
    kinds = [type(m).__name__ for m in net.layers]
    assert kinds == ["Linear", "BatchNorm1d", "GELU", "Dropout", "Linear", "BatchNorm1d", "GELU", "Dropout", "Linear"]
