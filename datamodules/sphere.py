"""Seeded synthetic regression data for full-batch training: inputs uniform on the unit sphere S^{d-1}."""
from typing import Literal

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.loader import EpochShuffle, ResumableBatchSampler, ResumableDataLoader, keep_batch


def sphere_data(n: int, d: int, labels: Literal["sign", "gaussian"], generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """n unit-norm float64 inputs (normalised Gaussians) and labels: random +-1 or N(0, 1)."""
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True)
    y = torch.randn(n, generator=generator, dtype=torch.float64)
    return x, (y.sign() if labels == "sign" else y)


class FullBatch(Dataset):
    """Every item is the whole data set, so each training step sees all n samples (full-batch GD)."""

    def __init__(self, x: Tensor, y: Tensor, length: int) -> None:
        self.x, self.y, self.length = x, y, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.x, self.y

    def __getitems__(self, idx: list[int]) -> tuple[Tensor, Tensor]:
        return self.x, self.y


class SphereDataModule(pl.LightningDataModule):
    """x_i uniform on S^{d-1}, y_i random +-1 (``sign``) or N(0, 1) (``gaussian``); all float64.

    Training batches are the full training set; an "epoch" is ``steps_per_epoch`` identical steps (so the
    per-epoch checkpoint is not written every step). Validation is off; the test set is ``n_test`` fresh samples.

    Args:
        n: training samples.
        d: input dimension.
        labels: ``sign`` or ``gaussian``.
        data_seed: seed of the samples (independent of the global seed that initialises the net).
        n_test: held-out samples for ``trainer.test``.
        steps_per_epoch: full-batch steps per epoch.
    """

    def __init__(self, n: int = 64, d: int = 10, labels: Literal["sign", "gaussian"] = "sign", data_seed: int = 0,
                 n_test: int = 256, steps_per_epoch: int = 100) -> None:
        super().__init__()
        if n < 1 or d < 1 or n_test < 1:
            raise ValueError(f"data.n, data.d and data.n_test must be >= 1, got n={n}, d={d}, n_test={n_test}")
        if labels not in ("sign", "gaussian"):
            raise ValueError(f"data.labels must be 'sign' or 'gaussian', got {labels!r}")
        if steps_per_epoch < 1:
            raise ValueError(f"data.steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.save_hyperparameters()
        generator = torch.Generator().manual_seed(data_seed)
        self.x, self.y = sphere_data(n, d, labels, generator)
        self.x_test, self.y_test = sphere_data(n_test, d, labels, generator)

    def full_batch(self) -> tuple[Tensor, Tensor]:
        return self.x, self.y

    def train_dataloader(self) -> DataLoader:
        sampler = ResumableBatchSampler(EpochShuffle(self.hparams.steps_per_epoch, shuffle=False), 1)
        return ResumableDataLoader(FullBatch(self.x, self.y, self.hparams.steps_per_epoch), sampler,
                                   collate_fn=keep_batch)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(FullBatch(self.x_test, self.y_test, 1), batch_size=1, collate_fn=keep_batch)
