"""Any timm image model as a backbone, with a new linear head: `net=timm net.model_name=resnet18`.

timm is an optional dependency (`pip install -e '.[images]'`), imported only when this net is built.

Weights come from one of:

- `pretrained: true`: timm's own source for the model (the Hugging Face hub, through its cache, so
  `HF_HUB_OFFLINE=1` with a pre-filled cache works, as does `HF_HUB_CACHE`);
- `weights: <file or URL>`: a state dict (`.pth`/`.pt`, read with `weights_only=True`, or `.safetensors`),
  loaded through timm's own pretrained loader, which drops the file's classifier and adapts the
  first convolution to `in_chans`;
- neither: random weights (the architecture alone, which needs no download).

A net rebuilt from a checkpoint gets neither (`dltemplate.modules.factories.no_downloads`): its
trained weights are in the checkpoint.

When the weights are pretrained, the data module uses the model's own input size, mean and std
(`data_settings`) instead of the training split's statistics.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dltemplate import hub
from dltemplate.errors import ConfigError

# `timm.create_model` arguments that load weights: only `pretrained` and `weights` may do that here
WEIGHT_ARGUMENTS = {"pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir"}


def _timm():
    try:
        import timm
    except ImportError:
        raise ImportError("net=timm needs timm: pip install -e '.[images]'") from None
    return timm


class TimmNet(nn.Module):
    """A timm model without its classifier (`backbone`: images → pooled features) and a linear `head`.

    Args:
        model_name: Any name of `timm.list_models()`, with or without a pretrained tag
            (`resnet18`, `convnext_nano`, `vit_tiny_patch16_224`, `resnet18.a1_in1k`).
        out_features: 1 for binary logits, else the number of classes (from the data).
        in_chans: Image channels (from the data); pretrained first convolutions are adapted.
        pretrained: Load timm's pretrained weights for `model_name`.
        weights: A local file or URL of a state dict to load instead (None: none).
        dropout: Dropout before the head.
        model_kwargs: More arguments of `timm.create_model` (e.g. `img_size` for a ViT, `drop_path_rate`).
    """

    def __init__(
        self,
        model_name: str,
        out_features: int = 1,
        in_chans: int = 3,
        pretrained: bool = False,
        weights: str | None = None,
        dropout: float = 0.0,
        model_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        timm = _timm()
        if not timm.is_model(model_name.split(".")[0]):
            raise ConfigError(f"net.model_name={model_name!r} is not a timm model; see timm.list_models()")
        refused = sorted(WEIGHT_ARGUMENTS & set(model_kwargs or {}))
        if refused:
            raise ConfigError(f"net.model_kwargs may not set {refused}: use net.pretrained or net.weights")
        kwargs = dict(model_kwargs or {}, num_classes=0, in_chans=in_chans)  # num_classes=0: pooled features
        if weights is not None:
            kwargs["pretrained_cfg_overlay"] = {"state_dict": read_state_dict(weights), "file": None}
        self.backbone = _create(timm, model_name, pretrained and weights is None, weights is not None, kwargs)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.backbone.num_features, out_features))

    @classmethod
    def example_input(cls, batch: int, in_chans: int = 3, **config: Any) -> Tensor:
        """(B, C, 32, 32) normalised images (timm's CNNs pool adaptively)."""
        return torch.randn(batch, in_chans, 32, 32)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))  # (B, C, H, W) -> (B, F) -> (B, out_features)

    @staticmethod
    def data_settings(config: Mapping[str, Any]) -> dict[str, Any]:
        """The data settings pretrained weights expect: input size, mean and std (none for random weights)."""
        if not (config.get("pretrained") or config.get("weights")):
            return {}
        found = _timm().models.get_pretrained_cfg(config["model_name"])
        if found is None:
            return {}
        data = _timm().data.resolve_data_config(pretrained_cfg=found.to_dict())
        size = (config.get("model_kwargs") or {}).get("img_size") or data["input_size"][-1]
        return {"input_size": int(size), "mean": list(data["mean"]), "std": list(data["std"])}


def _create(timm, model_name: str, from_hub: bool, from_file: bool, kwargs: dict[str, Any]) -> nn.Module:
    """`timm.create_model`; timm's own pretrained weights through `dltemplate.hub` (offline: the cache or one error)."""
    if not from_hub:
        return timm.create_model(model_name, pretrained=from_file, **kwargs)
    found = timm.models.get_pretrained_cfg(model_name)
    hub_id = getattr(found, "hf_hub_id", None)
    source = hub_id or getattr(found, "url", None) or "timm's source"
    cache = None if hub_id else Path(torch.hub.get_dir()) / "checkpoints"  # a URL goes to torch's hub cache
    return hub.from_hub(
        lambda: timm.create_model(model_name, pretrained=True, **kwargs),
        f"the pretrained weights of {model_name} ({source})",
        f"net=timm net.model_name={model_name} net.pretrained=true",
        "net.weights=<a .pth/.safetensors file of its state dict>",
        cache,
    )


def read_state_dict(source: str) -> dict[str, Tensor]:
    """The state dict in a local file or at a URL (downloaded into torch's hub cache), tensors only."""
    if "://" in source:
        return _unwrap(torch.hub.load_state_dict_from_url(source, map_location="cpu", weights_only=True), source)
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"net.weights={source}: {path} is not a file (give a .pth/.pt/.safetensors file or a URL)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return _unwrap(torch.load(path, map_location="cpu", weights_only=True), source)


def _unwrap(loaded: Any, source: str) -> dict[str, Tensor]:
    """A bare state dict, also from a training checkpoint that keeps it under "state_dict" or "model"."""
    for key in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise ConfigError(f"net.weights={source} holds no state dict of tensors")
    return dict(loaded)
