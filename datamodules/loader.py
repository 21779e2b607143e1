"""Data loading whose position inside an epoch survives a checkpoint.

Lightning saves and restores any train loader that has ``state_dict``/``load_state_dict``
(``lightning_fabric.utilities.types._Stateful``). With these loaders a run resumed from a mid-epoch
checkpoint sees exactly the batches the uninterrupted run would have seen.
"""
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler


class EpochShuffle(Sampler[int]):
    """A seeded permutation of ``range(num_samples)``, new each epoch; Lightning calls ``set_epoch``."""

    def __init__(self, num_samples: int, shuffle: bool = True, seed: int = 0) -> None:
        self.num_samples, self.shuffle, self.seed, self.epoch = num_samples, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.num_samples, generator=generator)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order().tolist())

    def __len__(self) -> int:
        return self.num_samples


class ResumableBatchSampler(Sampler[list[int]]):
    """Cuts the epoch's order into global batches; each rank takes its slice of every batch.

    The union over ranks of the k-th batch is the k-th batch of a 1-process run with the same global
    batch size, so DDP and single-process runs see the same data. Like torch's ``BatchSampler`` it exposes
    ``.sampler``, which is where Lightning looks for ``set_epoch``.
    """

    def __init__(self, sampler: EpochShuffle, batch_size: int, *, drop_last: bool = False, rank: int = 0,
                 world_size: int = 1) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last
        self.rank, self.world_size = rank, world_size
        self._resume: tuple[int, int] | None = None  # (epoch, batches already consumed)

    def resume_at(self, epoch: int, consumed: int) -> None:
        self._resume = (epoch, consumed)

    def batches_to_skip(self) -> int:
        if self._resume is None or self._resume[0] != self.sampler.epoch:
            return 0
        return self._resume[1]

    def __len__(self) -> int:
        full, rest = divmod(len(self.sampler), self.batch_size * self.world_size)
        # a last partial batch is kept only if every rank gets at least one sample of it
        return full + int(not self.drop_last and rest >= self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        skip, self._resume = self.batches_to_skip(), None
        order, gbs = self.sampler.order(), self.batch_size * self.world_size
        for b in range(skip, len(self)):
            yield order[b * gbs:(b + 1) * gbs].tensor_split(self.world_size)[self.rank].tolist()


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`ResumableBatchSampler` that records how many batches were consumed."""

    batch_sampler: ResumableBatchSampler

    def __init__(self, dataset: Any, batch_sampler: ResumableBatchSampler, **kwargs: Any) -> None:
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)
        self._yielded = 0

    def __iter__(self) -> Iterator[Any]:
        # Lightning's fetcher does not prefetch from loaders that have a length (``_PrefetchDataFetcher``),
        # so every batch yielded here has been handed to the training step.
        self._yielded = self.batch_sampler.batches_to_skip()
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.batch_sampler.sampler.epoch, "consumed": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.resume_at(state["epoch"], state["consumed"])


def keep_batch(batch: Any) -> Any:
    """Collate function for datasets whose ``__getitems__`` already returns a batch."""
    return batch
