"""Classification of anything a net maps to class logits."""

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import AUROC, Accuracy, F1Score

from dltemplate.callbacks.finetune import BackboneFreeze, finetune_policy
from dltemplate.errors import ConfigError
from dltemplate.losses import LossSpec, build_loss
from dltemplate.modules.factories import NetSpec, build_net, objects_to_skip, without_downloads
from dltemplate.modules.optimizers import OptimizerSpec, dense_gradients_where_needed
from dltemplate.modules.schedulers import SchedulerSpec
from dltemplate.modules.step import StepModule


class ClassificationModule(StepModule):
    """Trains a net that returns class logits, binary or multi-class.

    With `num_classes=2` the net returns one logit per sample, (B, 1) or (B,), trained by default
    with binary cross-entropy; otherwise it returns (B, num_classes) logits trained by default with
    cross-entropy. Predictions are probabilities: P(class 1) of shape (B,), or (B, num_classes).

    Args:
        net: The network, or its Hydra config (then `load_from_checkpoint` needs no net).
        num_classes: Number of classes; the data module knows it (`${dims.num_classes}`).
        loss: "ce" (cross-entropy; for 2 classes the same as "bce"), "bce" (2 classes only), "focal",
            or a `_target_` config of a fitting loss (see `dltemplate.losses`).
        optimizer: Partial optimizer config or callable params → optimizer; AdamW(lr=1e-3) if None.
        scheduler: Partial LR-scheduler config or callable optimizer → scheduler; none if None.
        scheduler_interval: Step the scheduler every "epoch" or every "step".
        monitor: Metric that ReduceLROnPlateau-style schedulers watch.
        class_weights: Per-class loss weights for imbalanced data (for binary: [w0, w1], which
            binary cross-entropy applies as pos_weight = w1 / w0).
        label_smoothing: Label smoothing ε: the target is the one-hot class mixed with the uniform
            distribution (for binary cross-entropy: targets y · (1 - ε) + ε / 2).
        finetune: Fine-tuning policy for a net with a pretrained `backbone` (net=timm, net=transformer):
            `freeze_epochs`, `backbone_lr_scale`, `norm_eval_while_frozen` (see
            `dltemplate.callbacks.finetune`); None trains every parameter alike.
    """

    target_kind = "classification"

    def __init__(
        self,
        net: NetSpec,
        num_classes: int = 2,
        loss: LossSpec = "ce",
        optimizer: OptimizerSpec | None = None,
        scheduler: SchedulerSpec | None = None,
        scheduler_interval: str = "epoch",
        monitor: str = "val/loss",
        class_weights: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
        finetune: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            ignore=objects_to_skip(net=net, optimizer=optimizer, scheduler=scheduler), logger=False
        )
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.net = build_net(net)
        if "net" in self.hparams:  # rebuilding from a checkpoint fetches no weights
            self.hparams["net"] = without_downloads(self.hparams["net"])
        self.optimizer_spec, self.scheduler_spec = optimizer, scheduler
        self.finetune = finetune_policy(finetune)
        self.backbone_lr_scale = None if self.finetune is None else self.finetune["backbone_lr_scale"]
        self.binary = num_classes == 2
        if class_weights is not None and len(class_weights) != num_classes:
            raise ConfigError(
                f"module.class_weights has {len(class_weights)} entries for {num_classes} classes: give one per "
                "class, or module.class_weights='${dims.class_weights}' (balanced on the training split)"
            )
        task = "binary" if self.binary else "multiclass"
        self.loss_fn = build_loss(loss, task, class_weights=class_weights, label_smoothing=label_smoothing)

        # training tracks accuracy only: AUROC keeps every prediction, too costly on every step. It is
        # fed predicted labels without argument checks: checks and probability inputs make torchmetrics
        # look at the values on the host (torch.unique, a range test), which waits for the device
        self.train_metrics = MetricCollection(
            {"acc": Accuracy(task=task, num_classes=num_classes, validate_args=False)}, prefix="train/"
        )
        metrics = MetricCollection(
            {
                "acc": Accuracy(task=task, num_classes=num_classes),
                "auroc": AUROC(task=task, num_classes=num_classes),
                "f1": F1Score(task=task, num_classes=num_classes, average="macro"),
            }
        )
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def setup(self, stage: str) -> None:
        dense_gradients_where_needed(self)  # before DDP wraps the net: NCCL cannot reduce sparse gradients

    def forward(self, x: Tensor) -> Tensor:
        """Logits: (B,) for binary problems, (B, num_classes) otherwise."""
        logits = self.net(x)
        return logits.reshape(-1) if self.binary else logits

    def predict_proba(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits) if self.binary else logits.softmax(dim=-1)

    def predicted_class(self, probs: Tensor) -> Tensor:
        """(B,) class indices from `predict_proba`'s output."""
        return (probs > 0.5).long() if self.binary else probs.argmax(dim=-1)

    # ---- the step's parts (see StepModule.model_step) ------------------------------------------

    def net_outputs(self, x: Tensor) -> Tensor:
        return self(x)

    def loss(self, outputs: Tensor, target: Tensor, stage: str) -> Tensor:
        return self.loss_fn(outputs, target)

    def predictions(self, outputs: Tensor) -> Tensor:
        return self.predict_proba(outputs)

    def update_metrics(self, preds: Tensor, target: Tensor, x: Tensor, stage: str) -> None:
        # training accuracy takes labels, not probabilities: see train_metrics
        super().update_metrics(self.predicted_class(preds) if stage == "train" else preds, target, x, stage)

    def configure_callbacks(self):
        if self.finetune is None or self.finetune["freeze_epochs"] == 0:
            return []
        return [BackboneFreeze(self.finetune["freeze_epochs"], self.finetune["norm_eval_while_frozen"])]
