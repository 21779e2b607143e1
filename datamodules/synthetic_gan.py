"""Full-batch point clouds for the GDA theory model: Gaussian mean matching (Fig. 2) and Two-Moons (Fig. 9).

Every training "batch" is the whole (n, m) sample in float64, so one step is one full-batch GDA step;
``steps_per_epoch`` only sets how often epoch-level hooks (and epoch-end checkpoints) run.
"""
import math
from collections.abc import Iterator
from typing import Optional

import pytorch_lightning as pl
import torch
from torch import Tensor


class RepeatedBatch:
    """Yields the full data tensor ``length`` times per epoch; its position survives a checkpoint.

    Lightning saves ``state_dict`` of a train loader that has one. Its fetcher holds one batch ahead,
    so mid-epoch the last yielded batch is not consumed yet.
    """

    def __init__(self, data: Tensor, length: int) -> None:
        self.data, self.length = data, length
        self._yielded, self._skip, self._done = 0, 0, False

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[Tensor]:
        self._yielded, self._skip, self._done = self._skip, 0, False
        for _ in range(self._yielded, self.length):
            self._yielded += 1
            yield self.data
        self._done = True

    def state_dict(self) -> dict[str, int]:
        return {"consumed": self._yielded if self._done else max(self._yielded - 1, 0)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._skip = state["consumed"] % self.length


class PointCloudDataModule(pl.LightningDataModule):
    """Base: ``sample()`` draws the (n, m) data once from ``seed``; ``dim`` is m."""

    dim: int

    def __init__(self, n: int = 100, seed: int = 0, steps_per_epoch: int = 1000) -> None:
        super().__init__()
        if n < 1:
            raise ValueError(f"data.n must be >= 1, got {n}")
        if steps_per_epoch < 1:
            raise ValueError(f"data.steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.n, self.seed, self.steps_per_epoch = n, seed, steps_per_epoch
        self.data: Optional[Tensor] = None

    def sample(self, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def setup(self, stage: Optional[str] = None) -> None:
        if self.data is None:
            self.data = self.sample(torch.Generator().manual_seed(self.seed))

    def train_dataloader(self) -> RepeatedBatch:
        return RepeatedBatch(self.data, self.steps_per_epoch)

    def test_dataloader(self) -> RepeatedBatch:
        return RepeatedBatch(self.data, 1)


class GaussianMeanDataModule(PointCloudDataModule):
    """x_i = mu + N(0, I_m), mu = mean_scale * N(0, I_m) drawn from ``seed`` (Sec. 2.4, "Numerical Validations")."""

    def __init__(self, dim: int = 5, n: int = 100, mean_scale: float = 3.0, seed: int = 0,
                 steps_per_epoch: int = 1000) -> None:
        super().__init__(n, seed, steps_per_epoch)
        if dim < 1:
            raise ValueError(f"data.dim must be >= 1, got {dim}")
        self.dim, self.mean_scale = dim, mean_scale
        self.save_hyperparameters()

    def sample(self, generator: torch.Generator) -> Tensor:
        mean = self.mean_scale * torch.randn(self.dim, generator=generator, dtype=torch.float64)
        return mean + torch.randn(self.n, self.dim, generator=generator, dtype=torch.float64)


class TwoMoonsDataModule(PointCloudDataModule):
    """Two interleaved half circles plus N(0, noise^2) (the sklearn ``make_moons`` construction), m = 2."""

    dim = 2

    def __init__(self, n: int = 100, noise: float = 0.1, seed: int = 0, steps_per_epoch: int = 1000) -> None:
        super().__init__(n, seed, steps_per_epoch)
        if noise < 0:
            raise ValueError(f"data.noise must be >= 0, got {noise}")
        self.noise = noise
        self.save_hyperparameters()

    def sample(self, generator: torch.Generator) -> Tensor:
        n_upper = self.n // 2 + self.n % 2
        t_up = torch.linspace(0, math.pi, n_upper, dtype=torch.float64)
        t_low = torch.linspace(0, math.pi, self.n - n_upper, dtype=torch.float64)
        upper = torch.stack([torch.cos(t_up), torch.sin(t_up)], 1)
        lower = torch.stack([1 - torch.cos(t_low), 0.5 - torch.sin(t_low)], 1)
        points = torch.cat([upper, lower])
        return points + self.noise * torch.randn(points.shape, generator=generator, dtype=torch.float64)
