"""A Hugging Face transformer encoder as a text backbone, with a new linear head: `net=transformer`.

transformers is an optional dependency (`pip install -e '.[hf]'`), imported only when this net is built.

`model_name` is a model of the Hugging Face hub (`distilbert-base-uncased`) or a local directory
written by `save_pretrained`. For training, `pretrained: true` loads its weights (through the hub
cache: `HF_HUB_OFFLINE=1` with a pre-filled cache works); `false` builds the same architecture with
random weights. The architecture itself (the model's config, as plain data) is written into the net
config before the run starts (`complete_config`), so a checkpoint rebuilds the net from itself alone:
no hub, no directory, no download. Remote code is never run: only the model types transformers
ships are accepted (`trust_remote_code` is not an argument of this net).

The data module tokenises with the model's own fast tokenizer (`data_settings` names it); the net
takes the padded token ids (B, L) and derives the attention mask from `pad_token_id`.
"""

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from torch import Tensor, nn

from dltemplate import hub

T = TypeVar("T")

# parts of a saved config that describe a checkpoint's origin or its own classifier, not the encoder
DROPPED_KEYS = {"architectures", "id2label", "label2id", "auto_map", "transformers_version", "dtype", "torch_dtype"}


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ImportError("net=transformer needs transformers: pip install -e '.[hf]'") from None
    return transformers


class TransformerNet(nn.Module):
    """A transformer encoder (`backbone`) whose token states are pooled into a linear `head`.

    Args:
        model_name: A hub model name or a local directory with the model's config (and weights).
        out_features: 1 for binary logits, else the number of classes (from the data).
        pad_token_id: Id of the padding token (from the data module's tokenizer).
        pretrained: Load the model's weights; false: random weights of the same architecture.
        config: The model's config as plain data; filled in by `complete_config` when the run starts.
        pooling: "cls" (the first token's state, as BERT's classifier) or "mean" over the real tokens.
        dropout: Dropout before the head.
        offline: Build from `config` alone, reading no hub and no folder (how a checkpoint rebuilds it).
    """

    def __init__(
        self,
        model_name: str,
        out_features: int = 1,
        pad_token_id: int = 0,
        pretrained: bool = False,
        config: Mapping[str, Any] | None = None,
        pooling: Literal["cls", "mean"] = "cls",
        dropout: float = 0.1,
        offline: bool = False,
    ) -> None:
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        transformers = _transformers()
        self.pad_token_id, self.pooling = pad_token_id, pooling
        if offline and (pretrained or not config):
            raise ValueError("net.config holds no architecture: a checkpoint's transformer is built from it alone")
        if pretrained:
            self.backbone = from_hub_or_folder(
                lambda: transformers.AutoModel.from_pretrained(model_name, trust_remote_code=False),
                model_name,
                "weights",
                "net=transformer net.pretrained=true",
            ).train()
        else:
            self.backbone = transformers.AutoModel.from_config(model_config(model_name, config))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.backbone.config.hidden_size, out_features))

    @classmethod
    def example_input(cls, batch: int, **config: Any) -> Tensor:
        """(B, 37) token ids from 1 (0 is padding in the test vocabularies), within any vocabulary of 50 or more."""
        return torch.randint(1, 50, (batch, 37))

    def forward(self, ids: Tensor) -> Tensor:
        mask = ids != self.pad_token_id  # (B, L): padding added per batch is left out of attention
        states = self.backbone(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, L, H)
        if self.pooling == "cls":
            pooled = states[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.head(pooled)  # (B, out_features)

    @staticmethod
    def data_settings(config: Mapping[str, Any]) -> dict[str, Any]:
        """The data module tokenises with this model's tokenizer."""
        return {"tokenizer": config["model_name"]}

    @staticmethod
    def complete_config(config: Mapping[str, Any]) -> dict[str, Any]:
        """`config` with the model's architecture in `config`, read from the hub cache or the directory."""
        config = dict(config)
        if not config.get("config"):
            name = config["model_name"]
            loaded = from_hub_or_folder(
                lambda: _transformers().AutoConfig.from_pretrained(name, trust_remote_code=False),
                name,
                "config (its architecture)",
                "net=transformer",
            )
            config["config"] = plain_model_config(loaded.to_dict())
        return config


def from_hub_or_folder(load: Callable[[], T], model_name: str, part: str, setting: str) -> T:
    """`load()` of a model's `part` from a local folder as it is, or from the hub through `hub.from_hub`."""
    if Path(model_name).is_dir():
        return load()
    return hub.from_hub(
        load,
        f"the {part} of {model_name}",
        setting,
        f"net.model_name=<a folder written by save_pretrained, with the model's {part}>",
    )


def plain_model_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """A model config as plain data a checkpoint can hold, without origin and classifier entries."""
    return {k: v for k, v in values.items() if k not in DROPPED_KEYS and not k.startswith("_")}


def model_config(model_name: str, config: Mapping[str, Any] | None):
    """The transformers config of the architecture: from `config` (plain data) or from `model_name`."""
    transformers = _transformers()
    if not config:
        return transformers.AutoConfig.from_pretrained(model_name, trust_remote_code=False)
    values = plain_model_config(config)
    model_type = values.pop("model_type", None)
    if model_type not in transformers.CONFIG_MAPPING:  # only the model types transformers ships
        raise ValueError(f"net.config names model_type={model_type!r}, which is not a transformers model type")
    return transformers.AutoConfig.for_model(model_type, **values)
