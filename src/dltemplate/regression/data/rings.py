"""Two noisy concentric rings: a binary problem no linear model can solve."""

import math

import torch
from torch.utils.data import Dataset, TensorDataset

from dltemplate.data.tensors import TensorDataModule


class RingsDataModule(TensorDataModule):
    """Points on two rings in the plane; the inner ring is class 1, the outer class 0.

    Radii are `inner_radius + N(0, noise_std²)` and `outer_radius + N(0, noise_std²)` at uniform
    angles. With the defaults (5 and 8, σ=1) the Bayes-optimal accuracy is Φ(1.5) ≈ 0.933: the best
    boundary is the circle of radius 6.5.

    The test set is a separate, larger draw: on 800 points the accuracy of the Bayes classifier
    itself varies by ±0.009, the size of the differences worth measuring here.

    Args:
        n_per_class: Points on each ring for training and validation together.
        val_fraction: Share of those points held out for validation.
        n_test_per_class: Points on each ring in the independent test draw.
        inner_radius: Mean radius of the positive (inner) ring.
        outer_radius: Mean radius of the negative (outer) ring.
        noise_std: Standard deviation of the radii.
        data_seed: Seed of the sampling.
        batch_size, num_workers, split_seed, on_device: see `TensorDataModule`.
    """

    class_names = ("outer", "inner")

    def __init__(
        self,
        n_per_class: int = 2000,
        val_fraction: float = 0.2,
        n_test_per_class: int = 5000,
        inner_radius: float = 5.0,
        outer_radius: float = 8.0,
        noise_std: float = 1.0,
        data_seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        on_device: bool | None = None,
        split_seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, split_seed, on_device=on_device)
        self.save_hyperparameters(logger=False)

    def sample(self, n_per_class: int, generator: torch.Generator) -> TensorDataset:
        """Draw `n_per_class` points per ring: x of shape (2n, 2), y of shape (2n,)."""
        hp = self.hparams

        def ring(radius: float) -> torch.Tensor:  # (n_per_class, 2)
            r = radius + hp.noise_std * torch.randn(n_per_class, generator=generator)
            theta = 2 * math.pi * torch.rand(n_per_class, generator=generator)
            return torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1)

        x = torch.cat([ring(hp.inner_radius), ring(hp.outer_radius)])
        y = torch.cat([torch.ones(n_per_class), torch.zeros(n_per_class)]).long()
        return TensorDataset(x, y)

    def make_datasets(self) -> tuple[Dataset, Dataset, Dataset]:
        generator = torch.Generator().manual_seed(self.hparams.data_seed)
        train, val = self.split(self.sample(self.hparams.n_per_class, generator), self.hparams.val_fraction)
        return train, val, self.sample(self.hparams.n_test_per_class, generator)

    target_kind = "classification"  # what its targets ask of a module (checked when the run is built)

    @property
    def dims(self) -> dict[str, int]:
        return {"in_features": 2, "num_classes": 2, "out_features": 1}
