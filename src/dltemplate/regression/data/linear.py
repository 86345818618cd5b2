"""Synthetic linear-regression data: the classic first exercise, no files needed."""

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset, TensorDataset

from dltemplate.data.tensors import TensorDataModule


class LinearDataModule(TensorDataModule):
    """Samples y = w·x + b + N(0, noise_std²) with x ~ U(low, high)^d.

    The defaults are the textbook problem: y = 2·x1 − 3·x2 + 10 + N(0, 2²) with 400 points for
    training and validation, so the best possible test MSE is the noise variance, 4.0.

    The test set is a separate, larger draw from the same distribution: on 80 held-out points the
    MSE of the true function itself varies by ±0.6 around 4.0, which would drown what is measured.

    Args:
        n: Points for training and validation together.
        val_fraction: Share of the `n` points held out for validation.
        n_test: Points in the independent test draw.
        weights: True coefficients w; their count sets the input width d.
        bias: True intercept b.
        noise_std: Standard deviation of the Gaussian noise.
        x_range: (low, high) of the uniform inputs.
        data_seed: Seed of the sampling, fixed so every training seed sees the same data.
        batch_size, num_workers, split_seed, on_device: see `TensorDataModule`.
    """

    def __init__(
        self,
        n: int = 400,
        val_fraction: float = 0.2,
        n_test: int = 10_000,
        weights: Sequence[float] = (2.0, -3.0),
        bias: float = 10.0,
        noise_std: float = 2.0,
        x_range: tuple[float, float] = (-5.0, 5.0),
        data_seed: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
        on_device: bool | None = None,
        split_seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, split_seed, on_device=on_device)
        self.save_hyperparameters(logger=False)

    def sample(self, n: int, generator: torch.Generator) -> TensorDataset:
        """Draw `n` (x, y) pairs: x of shape (n, d), y of shape (n,)."""
        hp = self.hparams
        w = torch.tensor(hp.weights, dtype=torch.float32)
        low, high = hp.x_range
        x = low + (high - low) * torch.rand(n, len(w), generator=generator)
        y = x @ w + hp.bias + hp.noise_std * torch.randn(n, generator=generator)
        return TensorDataset(x, y)

    def make_datasets(self) -> tuple[Dataset, Dataset, Dataset]:
        generator = torch.Generator().manual_seed(self.hparams.data_seed)
        train, val = self.split(self.sample(self.hparams.n, generator), self.hparams.val_fraction)
        return train, val, self.sample(self.hparams.n_test, generator)

    target_kind = "regression"  # what its targets ask of a module (checked when the run is built)

    @property
    def dims(self) -> dict[str, int]:
        return {"in_features": len(self.hparams.weights), "out_features": 1}
