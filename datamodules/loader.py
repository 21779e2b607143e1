"""Data loading whose position inside an epoch survives a checkpoint.

Lightning saves and restores any train loader that has ``state_dict``/``load_state_dict``
(``lightning_fabric.utilities.types._Stateful``). With these loaders a run resumed from a mid-epoch
checkpoint sees exactly the batches the uninterrupted run would have seen.
"""
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler


class ResumableBatchSampler(Sampler[list[int]]):
    """Seeded per-epoch permutation cut into global batches; each rank takes its slice of every batch.

    The union over ranks of the k-th batch is the k-th batch of a 1-process run with the same global
    batch size, so DDP and single-process runs see the same data.
    """

    def __init__(self, num_samples: int, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        self.num_samples, self.batch_size, self.shuffle, self.seed = num_samples, batch_size, shuffle, seed
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, batches already consumed)

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, consumed: int) -> None:
        self._resume = (epoch, consumed)

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.global_batch_size)
        # a last partial batch is kept only if every rank gets at least one sample of it
        return full + int(not self.drop_last and rest >= self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        skip = 0
        if self._resume is not None:
            epoch, consumed = self._resume
            skip = consumed if epoch == self.epoch else 0
            self._resume = None
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.arange(self.num_samples)
        gbs = self.global_batch_size
        for b in range(skip, len(self)):
            batch = order[b * gbs:(b + 1) * gbs]
            yield batch.tensor_split(self.world_size)[self.rank].tolist()


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`ResumableBatchSampler` that records how many batches were consumed."""

    batch_sampler: ResumableBatchSampler

    def __init__(self, dataset: Any, batch_sampler: ResumableBatchSampler, **kwargs: Any) -> None:
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)
        self._yielded, self._exhausted = 0, False

    def __iter__(self) -> Iterator[Any]:
        resume = self.batch_sampler._resume
        self._yielded = resume[1] if resume and resume[0] == self.batch_sampler.epoch else 0
        self._exhausted = False
        for batch in super().__iter__():
            self._yielded += 1
            yield batch
        self._exhausted = True

    def state_dict(self) -> dict[str, int]:
        # Lightning's fetcher (pytorch_lightning.loops.fetchers._PrefetchDataFetcher) holds one batch
        # ahead of the step being trained, so the last yielded batch is not consumed yet mid-epoch.
        consumed = self._yielded if self._exhausted else max(self._yielded - 1, 0)
        return {"epoch": self.batch_sampler.epoch, "consumed": consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.resume_at(state["epoch"], state["consumed"])


def keep_batch(batch: Any) -> Any:
    """Collate function for datasets whose ``__getitems__`` already returns a batch."""
    return batch
