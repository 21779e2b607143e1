"""Seeded synthetic full-batch tasks of the Neuron Pursuit paper (sparse hierarchical targets, modular addition)."""
from typing import Callable, Optional

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset


def relu(x: Tensor) -> Tensor:
    return x.clamp_min(0)


def _hier(x: Tensor, i: int) -> Tensor:
    """s(s(2x_i + x_{i+1}) - s(x_{i+2} - x_{i+3})) on 0-based coordinates i..i+3."""
    return relu(relu(2 * x[:, i] + x[:, i + 1]) - relu(x[:, i + 2] - x[:, i + 3]))


def _max(*xs: Tensor) -> Tensor:
    return torch.stack(xs).amax(0)


# task -> (input distribution, default d, target)
TASKS: dict[str, tuple[str, int, Callable[[Tensor], Tensor]]] = {
    "fig6": ("hypercube", 20, lambda x: relu(relu(2 * x[:, 0] + x[:, 2]) - relu(x[:, 2] - x[:, 1]))),
    "f1": ("hypersphere", 50, lambda x: _hier(x, 0)),
    "f2": ("hypersphere", 50, lambda x: _hier(x, 0) + 5 * sum(i * _hier(x, 4 * i) for i in (1, 2))),
    "g1": ("hypercube", 50, lambda x: x[:, 0] * x[:, 1] - x[:, 0] * x[:, 1] * x[:, 2] * x[:, 3]),
    "g2": ("hypercube", 50, lambda x: x[:, 0] * x[:, 1] * x[:, 2] * x[:, 3]),
    "h1": ("gaussian", 50, lambda x: _max(2 * x[:, 0], x[:, 1])),
    "h2": ("gaussian", 50, lambda x: _max(x[:, 0], 2 * x[:, 1]) + _max(x[:, 2], 2 * x[:, 3])
           - _max(x[:, 0] + x[:, 2], -x[:, 1], -x[:, 3])),
}


def sample_inputs(kind: str, n: int, d: int, generator: torch.Generator) -> Tensor:
    if kind == "hypercube":
        return torch.randint(0, 2, (n, d), generator=generator, dtype=torch.float64) * 2 - 1
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    if kind == "hypersphere":  # uniform on the sphere of radius sqrt(d)
        x *= d ** 0.5 / x.norm(dim=1, keepdim=True)
    return x


class _Chunks(Dataset):
    """A fixed list of (x, y) batches; the train set is one full batch."""

    def __init__(self, x: Tensor, y: Tensor, chunk: int) -> None:
        self.x, self.y = x.split(chunk), y.split(chunk)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.x[i], self.y[i]


class FullBatchDataModule(pl.LightningDataModule):
    """Generates (train, test) tensors once, seeded; every training epoch is one full batch."""

    def __init__(self, seed: int = 0, test_chunk: int = 20000) -> None:
        super().__init__()
        if test_chunk < 1:
            raise ValueError(f"data.test_chunk must be >= 1, got {test_chunk}")
        self.seed, self.test_chunk = seed, test_chunk
        self.tensors: Optional[dict[str, tuple[Tensor, Tensor]]] = None

    def generate(self, generator: torch.Generator) -> dict[str, tuple[Tensor, Tensor]]:
        raise NotImplementedError

    def setup(self, stage: Optional[str] = None) -> None:
        if self.tensors is None:
            self.tensors = self.generate(torch.Generator().manual_seed(self.seed))

    def train_tensors(self) -> tuple[Tensor, Tensor]:
        self.setup()
        return self.tensors["train"]

    def test_tensors(self) -> tuple[Tensor, Tensor]:
        self.setup()
        return self.tensors["test"]

    def train_dataloader(self) -> DataLoader:
        x, y = self.train_tensors()
        return DataLoader(_Chunks(x, y, len(x)), batch_size=None)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(_Chunks(*self.test_tensors(), self.test_chunk), batch_size=None)


class SparseFunctionDataModule(FullBatchDataModule):
    """Sparse hierarchical targets: fig6 (hypercube d=20), f1/f2 (hypersphere), g1/g2 (hypercube), h1/h2 (Gaussian).

    Args:
        task: one of fig6, f1, f2, g1, g2, h1, h2.
        n_train: training samples; n_test: fresh test samples (10^5 in the paper).
        dim: input dimension (default 20 for fig6, 50 otherwise).
        seed: seed of both sets.
    """

    def __init__(self, task: str = "fig6", n_train: int = 500, n_test: int = 100_000, dim: Optional[int] = None,
                 seed: int = 0, test_chunk: int = 20000) -> None:
        super().__init__(seed, test_chunk)
        if task not in TASKS:
            raise ValueError(f"data.task must be one of {sorted(TASKS)}, got {task!r}")
        if n_train < 1 or n_test < 1:
            raise ValueError(f"data.n_train and data.n_test must be >= 1, got {n_train}, {n_test}")
        self.task, self.n_train, self.n_test = task, n_train, n_test
        self.dim = dim or TASKS[task][1]
        if self.dim < 4:
            raise ValueError(f"data.dim must be >= 4 (the targets read 4 coordinates), got {self.dim}")
        if task == "f2" and self.dim < 12:
            raise ValueError(f"task f2 reads 12 coordinates; data.dim must be >= 12, got {self.dim}")

    def generate(self, generator: torch.Generator) -> dict[str, tuple[Tensor, Tensor]]:
        kind, _, target = TASKS[self.task]
        out = {}
        for split, n in (("train", self.n_train), ("test", self.n_test)):
            x = sample_inputs(kind, n, self.dim, generator)
            out[split] = (x, target(x)[:, None])
        return out


class ModularAdditionDataModule(FullBatchDataModule):
    """(a + b) mod p as one-hot regression; inputs [1_a, 1_b, 1] (2p + 1 features), a seeded train/test split."""

    def __init__(self, modulus: int = 59, n_train: int = 1500, seed: int = 0, test_chunk: int = 20000) -> None:
        super().__init__(seed, test_chunk)
        if modulus < 2:
            raise ValueError(f"data.modulus must be >= 2, got {modulus}")
        if not 1 <= n_train < modulus ** 2:
            raise ValueError(f"data.n_train must be in [1, {modulus ** 2 - 1}] for modulus {modulus}, got {n_train}")
        self.modulus, self.n_train = modulus, n_train

    def generate(self, generator: torch.Generator) -> dict[str, tuple[Tensor, Tensor]]:
        p = self.modulus
        a, b = torch.arange(p).repeat_interleave(p), torch.arange(p).repeat(p)
        eye = torch.eye(p, dtype=torch.float64)
        x = torch.cat([eye[a], eye[b], torch.ones(p * p, 1, dtype=torch.float64)], 1)
        y = eye[(a + b) % p]
        order = torch.randperm(p * p, generator=generator)
        train, test = order[:self.n_train], order[self.n_train:]
        return {"train": (x[train], y[train]), "test": (x[test], y[test])}


def pvr_target(bits: Tensor, x: Tensor) -> Tensor:
    """f(p, x) = x_p x_{p+1}: the 4 +-1 bits give p = 1 + binary value (MSB first, -1 -> 0), x_17 := x_1."""
    n = x.shape[1]
    weights = 2 ** torch.arange(bits.shape[1] - 1, -1, -1)
    p = (((bits + 1) / 2).long() * weights).sum(1)  # 0-based pointer
    rows = torch.arange(len(x))
    return x[rows, p] * x[rows, (p + 1) % n]


class PointerValueDataModule(FullBatchDataModule):
    """Pointer value retrieval (Sec. 5.4): inputs [p, 1, x] with p in {+-1}^4 (symmetric binary pointer) and
    x in {+-1}^16, every entry an independent fair sign; target x_p x_{p+1}.

    The pointer value 16 (p = (1, 1, 1, 1)) has no x_17: it wraps around to x_1 (the paper leaves it open).

    Args:
        n_train, n_test: samples (100,000 each in the paper).
        seed: seed of both sets.
    """

    POINTER_BITS, LENGTH = 4, 16

    def __init__(self, n_train: int = 100_000, n_test: int = 100_000, seed: int = 0, test_chunk: int = 20000) -> None:
        super().__init__(seed, test_chunk)
        if n_train < 1 or n_test < 1:
            raise ValueError(f"data.n_train and data.n_test must be >= 1, got {n_train}, {n_test}")
        self.n_train, self.n_test = n_train, n_test

    def generate(self, generator: torch.Generator) -> dict[str, tuple[Tensor, Tensor]]:
        out = {}
        for split, n in (("train", self.n_train), ("test", self.n_test)):
            signs = sample_inputs("hypercube", n, self.POINTER_BITS + self.LENGTH, generator)
            bits, x = signs[:, :self.POINTER_BITS], signs[:, self.POINTER_BITS:]
            inputs = torch.cat([bits, torch.ones(n, 1, dtype=signs.dtype), x], 1)
            out[split] = (inputs, pvr_target(bits, x)[:, None])
        return out
