"""Any torchvision classification model as a backbone, with a new linear head: `net=torchvision`.

A second source of pretrained image backbones beside timm, needing nothing beyond torchvision:
`net.pretrained=true` (the model's DEFAULT weights) or `net.weights=IMAGENET1K_V1` (any weights name)
loads torchvision's pretrained weights through torch's hub cache (`TORCH_HOME`, downloaded once when
missing); neither gives random weights. As for timm, pretrained weights set the data's input size,
mean and std (`data_settings`), and a net rebuilt from a checkpoint gets no weights
(`dltemplate.modules.factories.no_downloads`).
"""

from collections.abc import Mapping
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from dltemplate.errors import ConfigError


def _weights(model_name: str, weights: str):
    """The weights enum member `weights` ("DEFAULT", "IMAGENET1K_V1", ...) of the model `model_name`."""
    try:
        return torchvision.models.get_model_weights(model_name)[weights]
    except (KeyError, ValueError):
        raise ConfigError(f"net.weights={weights!r}: not a weights name of torchvision's {model_name}") from None


class TorchvisionNet(nn.Module):
    """A torchvision model whose last linear layer is removed (`backbone`), and a new linear `head`.

    Args:
        model_name: A name of `torchvision.models.list_models(torchvision.models)` (resnet18, convnext_tiny,
            efficientnet_b0, vit_b_16, ...).
        out_features: 1 for binary logits, else the number of classes (from the data).
        in_chans: Image channels; torchvision's models take 3.
        pretrained: Load the model's DEFAULT weights (unless `weights` names others).
        weights: Pretrained weights by name: "DEFAULT", "IMAGENET1K_V1", ...; None: as `pretrained` says.
        dropout: Dropout before the head.
    """

    def __init__(
        self,
        model_name: str,
        out_features: int = 1,
        in_chans: int = 3,
        pretrained: bool = False,
        weights: str | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        weights = "DEFAULT" if pretrained and weights is None else weights
        if model_name not in torchvision.models.list_models(torchvision.models):
            raise ConfigError(f"net.model_name={model_name!r} is not a torchvision classification model")
        if in_chans != 3:
            raise ConfigError(f"torchvision's models take 3 channels, the data has {in_chans}: set data.channels=3")
        model = torchvision.models.get_model(
            model_name, weights=None if weights is None else _weights(model_name, weights)
        )
        name, last = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
        parent = model.get_submodule(name.rpartition(".")[0])
        setattr(parent, name.rpartition(".")[2], nn.Identity())  # the classifier, e.g. fc, classifier.1, heads.head
        self.backbone = model
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(last.in_features, out_features))

    @classmethod
    def example_input(cls, batch: int, in_chans: int = 3, **config: Any) -> Tensor:
        """(B, C, 32, 32) normalised images."""
        return torch.randn(batch, in_chans, 32, 32)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))  # (B, 3, H, W) -> (B, F) -> (B, out_features)

    @staticmethod
    def data_settings(config: Mapping[str, Any]) -> dict[str, Any]:
        """The input size, mean and std of the pretrained weights' own transforms (none for random weights)."""
        if not (config.get("pretrained") or config.get("weights")):
            return {}
        transforms = _weights(config["model_name"], config.get("weights") or "DEFAULT").transforms()
        return {"input_size": int(transforms.crop_size[0]), "mean": list(transforms.mean), "std": list(transforms.std)}
