"""One base class for the image-classification datamodules; each dataset is a short subclass."""
import gzip
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, ClassVar, Optional

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.functional import pil_to_tensor

from datamodules.loader import EpochShuffle, ResumableBatchSampler, ResumableDataLoader, keep_batch


class DataError(RuntimeError):
    """Missing or unreadable data; the message says what is wrong and where files must go."""


class InMemoryImages(Dataset):
    """uint8 images (N, C, H, W) and labels held as tensors; batches come out by one index op."""

    def __init__(self, images: Tensor, targets: Tensor) -> None:
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i], self.targets[i]

    def __getitems__(self, idx: list[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(idx)
        return self.images[index], self.targets[index]


class DecodedImages(Dataset):
    """Per-item decoding through the torchvision dataset (the classic path), also yielding uint8 CHW."""

    def __init__(self, dataset: Any, indices: Tensor, targets: Tensor) -> None:
        self.dataset, self.indices, self.targets = dataset, indices.tolist(), targets[indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image, _ = self.dataset[self.indices[i]]
        return pil_to_tensor(image), self.targets[i]  # ours: renumbered when ``classes`` picks a subset


class ShardedDataModule(pl.LightningDataModule):
    """The loaders every datamodule shares (subclasses provide ``train_set``, ``val_set``, ``test_set``).

    Training: a :class:`ResumableDataLoader` over seeded per-epoch shuffles whose global batches are split across
    DDP ranks. Evaluation: each rank takes an unpadded stride of the split, so metrics count every sample once.
    Reads ``batch_size``, ``eval_batch_size``, ``split_seed`` and, when present, ``drop_last``, ``num_workers``,
    ``pin_memory``, ``in_memory`` from ``self.hparams``.
    """

    train_set: Optional[Dataset] = None
    val_set: Optional[Dataset] = None
    test_set: Optional[Dataset] = None

    def world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def per_device(self, batch_size: int) -> int:
        world_size = self.world()[1]
        if batch_size % world_size:
            raise ValueError(f"global batch size {batch_size} is not divisible by {world_size} processes")
        return batch_size // world_size

    def loader_kwargs(self) -> dict[str, Any]:
        workers, in_memory = self.hparams.get("num_workers", 0), self.hparams.get("in_memory", True)
        # an own generator: otherwise every iterator creation draws from the global RNG, and a resumed run
        # (which creates iterators at other moments) would see different augmentation and dropout
        generator = torch.Generator().manual_seed(self.hparams.split_seed)
        return dict(num_workers=workers, pin_memory=self.hparams.get("pin_memory", False),
                    collate_fn=keep_batch if in_memory else None, persistent_workers=workers > 0, generator=generator)

    def train_dataloader(self) -> DataLoader:
        rank, world_size = self.world()
        order = EpochShuffle(len(self.train_set), shuffle=True, seed=self.hparams.split_seed)
        sampler = ResumableBatchSampler(order, self.per_device(self.hparams.batch_size),
                                        drop_last=self.hparams.get("drop_last", False), rank=rank,
                                        world_size=world_size)
        return ResumableDataLoader(self.train_set, sampler, **self.loader_kwargs())

    def eval_loader(self, dataset: Dataset) -> DataLoader:
        rank, world_size = self.world()
        batch_size = self.hparams.eval_batch_size or self.hparams.batch_size
        indices = list(range(rank, len(dataset), world_size))
        return DataLoader(dataset, batch_size=self.per_device(batch_size), sampler=indices, **self.loader_kwargs())

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.test_set)


class VisionDataModule(ShardedDataModule):
    """Image classification over a torchvision dataset class.

    Batches leave the loader as uint8 and are converted, normalised and augmented on the device
    (``on_after_batch_transfer``), so the same code serves the in-memory and per-item decoding paths.

    Args:
        root: folder holding the dataset in torchvision's layout.
        download: try to download when the files are absent (never when they are present).
        batch_size: global batch size; under DDP each of the N processes gets ``batch_size / N``.
        eval_batch_size: batch size for validation and test (default: ``batch_size``).
        val_fraction: share of the training set held out (seeded) for validation.
        val_from_test: validate on the test set instead (needs ``val_fraction`` 0): the protocol of repos that
            report the best test epoch; the model is then selected on test data, so label such numbers.
        split_seed: seed of the train/val split and of the per-epoch shuffling.
        max_train_samples: use only this many training samples (after the split), e.g. for sample-size sweeps.
        classes: keep only these labels (every split), renumbered 0..k-1 in the order given, e.g. a transfer task.
        normalize: subtract the dataset mean and divide by its std.
        augment: random crop (padding 4) and horizontal flip on training batches; default per dataset.
        in_memory: hold the decoded dataset as one uint8 tensor instead of decoding items one by one.
        drop_last: drop the last incomplete training batch.
    """

    dataset_cls: ClassVar[type]
    folder: ClassVar[str]  # where the files live below root
    expected_files: ClassVar[str]
    mean: ClassVar[tuple[float, ...]]
    std: ClassVar[tuple[float, ...]]
    num_classes: ClassVar[int]
    default_augment: ClassVar[bool] = False

    def __init__(self, root: str = "data", download: bool = True, batch_size: int = 128,
                 eval_batch_size: Optional[int] = None, val_fraction: float = 0.1, val_from_test: bool = False,
                 split_seed: int = 0, max_train_samples: Optional[int] = None,
                 classes: Optional[list[int]] = None, normalize: bool = True,
                 augment: Optional[bool] = None, in_memory: bool = True, num_workers: int = 0, pin_memory: bool = False,
                 drop_last: bool = False) -> None:
        super().__init__()
        if batch_size <= 0:
            raise ValueError(f"data.batch_size must be positive, got {batch_size}")
        if eval_batch_size is not None and eval_batch_size <= 0:
            raise ValueError(f"data.eval_batch_size must be positive, got {eval_batch_size}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        if val_from_test and val_fraction > 0:
            raise ValueError(f"data.val_from_test validates on the test set, so data.val_fraction must be 0, "
                             f"got {val_fraction}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        if max_train_samples is not None and max_train_samples <= 0:
            raise ValueError(f"data.max_train_samples must be positive, got {max_train_samples}")
        if classes is not None and (not classes or len(set(classes)) != len(classes)
                                    or not all(0 <= c < self.num_classes for c in classes)):
            raise ValueError(f"data.classes must be distinct labels in [0, {self.num_classes}), got {classes}")
        self.save_hyperparameters()
        self.root = Path(root).expanduser()
        self.augment = self.default_augment if augment is None else augment
        self._mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        self._std = torch.tensor(self.std).view(1, -1, 1, 1)

    # ----------------------------------------------------------------- files
    def locate_root(self) -> Path:
        """The root to read from; subclasses may extract archives somewhere first."""
        return self.root

    def missing_message(self) -> str:
        return (f"{type(self).__name__}: no data under {self.root / self.folder} and download is "
                f"{'impossible (offline?)' if self.hparams.download else 'off'}; put {self.expected_files} "
                f"in {self.root / self.folder} (or set --data.root to the folder that holds {self.folder.split('/')[0]})")

    def open_split(self, train: bool) -> Any:
        """The torchvision dataset for one split, with errors turned into one clear :class:`DataError`."""
        root = self.locate_root()
        try:
            return self.dataset_cls(str(root), train=train, download=False)
        except Exception as err:  # torchvision signals absence with RuntimeError("Dataset not found ...")
            if not (isinstance(err, RuntimeError) and "not found" in str(err).lower()):
                raise DataError(f"{type(self).__name__}: cannot read {root / self.folder}: "
                                f"{type(err).__name__}: {err}") from err
        if not self.hparams.download:
            raise DataError(self.missing_message())
        try:
            return self.dataset_cls(str(root), train=train, download=True)
        except Exception as err:  # network errors come in many types
            raise DataError(self.missing_message()) from err

    def prepare_data(self) -> None:
        self.open_split(train=True)
        self.open_split(train=False)

    # ----------------------------------------------------------------- splits
    @staticmethod
    def as_tensors(dataset: Any) -> tuple[Tensor, Tensor]:
        """uint8 (N, C, H, W) images and int64 labels from a torchvision dataset's decoded arrays."""
        images = torch.as_tensor(dataset.data)
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
        return images.contiguous(), torch.as_tensor(dataset.targets, dtype=torch.long)

    def load_split(self, train: bool) -> tuple[Any, Tensor, Tensor]:
        dataset = self.open_split(train)
        try:
            images, targets = self.as_tensors(dataset)
        except Exception as err:
            raise DataError(f"{type(self).__name__}: corrupt data under {self.root / self.folder}: {err}") from err
        if len(images) != len(targets) or len(targets) == 0:
            raise DataError(f"{type(self).__name__}: corrupt data under {self.root / self.folder}: "
                            f"{len(images)} images but {len(targets)} labels")
        return dataset, images, targets

    def subset(self, dataset: Any, images: Tensor, targets: Tensor, indices: Tensor) -> Dataset:
        if self.hparams.in_memory:
            return InMemoryImages(images[indices], targets[indices])
        return DecodedImages(dataset, indices, targets)

    def keep_classes(self, targets: Tensor) -> tuple[Tensor, Tensor]:
        """The indices of the kept samples and the targets renumbered (all samples, unchanged, without ``classes``)."""
        classes = self.hparams.classes
        if classes is None:
            return torch.arange(len(targets)), targets
        renumber = torch.full((max(self.num_classes, int(targets.max()) + 1),), -1, dtype=torch.long)
        renumber[torch.tensor(classes)] = torch.arange(len(classes))
        targets = renumber[targets]
        return torch.nonzero(targets >= 0).flatten(), targets

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is not None:
            return
        dataset, images, targets = self.load_split(train=True)
        kept, targets = self.keep_classes(targets)
        generator = torch.Generator().manual_seed(self.hparams.split_seed)
        order = kept[torch.randperm(len(kept), generator=generator)]
        n_val = int(round(self.hparams.val_fraction * len(order)))
        train_idx, val_idx = order[n_val:], order[:n_val].sort().values
        if self.hparams.max_train_samples is not None:
            train_idx = train_idx[: self.hparams.max_train_samples]
        self.train_set = self.subset(dataset, images, targets, train_idx)
        self.val_set = self.subset(dataset, images, targets, val_idx)
        dataset, images, targets = self.load_split(train=False)
        kept, targets = self.keep_classes(targets)
        self.test_set = self.subset(dataset, images, targets, kept)
        if self.hparams.val_from_test:
            self.val_set = self.test_set

    # ----------------------------------------------------------------- on-device transforms
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, targets = batch
        x = images.float().div_(255)
        if self.augment and self.trainer is not None and self.trainer.training:
            x = random_crop_flip(x, padding=4)
        if self.hparams.normalize:
            x = (x - self._mean.to(x.device)) / self._std.to(x.device)
        return x, targets


def random_crop_flip(x: Tensor, padding: int) -> Tensor:
    """Per-sample random crop after zero padding, then random horizontal flip, on a whole batch."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=x.device)
    rows = dy + torch.arange(h, device=x.device).view(1, h, 1)
    cols = dx + torch.arange(w, device=x.device).view(1, 1, w)
    flip = torch.rand(n, 1, 1, device=x.device) < 0.5
    cols = torch.where(flip, cols.flip(-1), cols)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def extract_gz_archives(raw_dir: Path, names: list[str]) -> Optional[Path]:
    """Decompress ``<name>.gz`` next to itself, or into a user cache when that folder is read-only.

    Returns the folder holding the decompressed files, or None when the archives are not all there.
    """
    if all((raw_dir / n).is_file() for n in names):
        return raw_dir
    if not all((raw_dir / f"{n}.gz").is_file() for n in names):
        return None
    target = raw_dir if os.access(raw_dir, os.W_OK) else cache_dir_for(raw_dir)
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        out = target / name
        if out.is_file():
            continue
        # one temporary file per process: runs of a sweep may decompress the same archive at the same time
        tmp = out.with_name(f"{name}.{os.getpid()}.partial")
        try:
            with gzip.open(raw_dir / f"{name}.gz", "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except (OSError, EOFError) as err:
            tmp.unlink(missing_ok=True)
            raise DataError(f"corrupt archive {raw_dir / name}.gz: {err}") from err
        os.replace(tmp, out)  # atomic: a killed extraction leaves no half file behind
    return target


def cache_dir_for(folder: Path) -> Path:
    base = Path(os.environ.get("OVERPARAM_CACHE", Path.home() / ".cache" / "overparam"))
    digest = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:12]
    return base / digest / folder.parent.name / folder.name
