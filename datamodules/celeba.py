"""Celeb-A at 64x64 for the GAN experiments, over ``torchvision.datasets.CelebA`` with the official partitions.

Files: ``<root>/celeba/img_align_celeba/*.jpg`` and the five ``list_*.txt`` / ``identity_CelebA.txt`` annotation
files of the official release; nothing is downloaded. Images are resized (shorter side 64) and centre-cropped to
64x64, the PyTorch DCGAN example's preprocessing (the paper does not say), and leave the loader as uint8; the
batch is turned into floats in [0, 1] on the device.
"""
import os
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, transforms
from torchvision.transforms.functional import pil_to_tensor

from datamodules.base import DataError
from datamodules.loader import EpochShuffle, ResumableBatchSampler, ResumableDataLoader

FILES = ["list_eval_partition.txt", "identity_CelebA.txt", "list_attr_celeba.txt", "list_bbox_celeba.txt",
         "list_landmarks_align_celeba.txt"]


class _CelebA(datasets.CelebA):
    # torchvision checks the official MD5 sums; fixtures and subsets in the real format fail that, so only
    # presence is checked (a truncated file fails when parsed anyway)
    def _check_integrity(self) -> bool:
        folder = os.path.join(self.root, self.base_folder)
        return all(os.path.isfile(os.path.join(folder, f)) for f in FILES) and \
            os.path.isdir(os.path.join(folder, "img_align_celeba"))


class CelebAImages(Dataset):
    """(uint8 image 3x64x64, attribute vector) items of one partition."""

    def __init__(self, dataset: datasets.CelebA, size: int) -> None:
        self.dataset = dataset
        self.transform = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size)])

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image, attr = self.dataset[i]
        return pil_to_tensor(self.transform(image.convert("RGB"))), attr


class CelebA64DataModule(pl.LightningDataModule):
    """Celeb-A train partition for training and FID-train; ``heldout`` (``valid`` or ``test``) for FID-test.

    Args:
        root: folder that holds ``celeba/``.
        batch_size: training batch size (the paper: 64).
        heldout: the official partition used as the held-out set.
        size: output resolution.
        seed: seed of the per-epoch shuffling.
        max_train_samples: use only the first this many training images.
        num_workers: JPEG decoding workers.
        drop_last: drop the last incomplete training batch (WGAN-GP: true).
    """

    def __init__(self, root: str = "data", batch_size: int = 64, heldout: str = "test", size: int = 64,
                 seed: int = 0, max_train_samples: Optional[int] = None, num_workers: int = 4,
                 drop_last: bool = True) -> None:
        super().__init__()
        if heldout not in ("valid", "test"):
            raise ValueError(f"data.heldout must be 'valid' or 'test', got {heldout!r}")
        if batch_size < 1 or size < 1 or num_workers < 0:
            raise ValueError("data.batch_size and size must be >= 1, num_workers >= 0")
        if max_train_samples is not None and max_train_samples < 1:
            raise ValueError(f"data.max_train_samples must be positive, got {max_train_samples}")
        self.save_hyperparameters()
        self.root = root
        self.train_set: Optional[Dataset] = None
        self.test_set: Optional[Dataset] = None

    def open(self, split: str) -> CelebAImages:
        try:
            dataset = _CelebA(self.root, split=split, target_type="attr")
        except RuntimeError as err:
            raise DataError(f"CelebA64DataModule: no Celeb-A under {os.path.join(self.root, 'celeba')}: put "
                            f"img_align_celeba/ and {', '.join(FILES)} there (nothing is downloaded)") from err
        except (ValueError, IndexError) as err:
            raise DataError(f"CelebA64DataModule: corrupt annotation files under {self.root}/celeba: {err}") from err
        return CelebAImages(dataset, self.hparams.size)

    def prepare_data(self) -> None:
        self.open("train")

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is not None:
            return
        train = self.open("train")
        if self.hparams.max_train_samples is not None:
            train = torch.utils.data.Subset(train, range(min(self.hparams.max_train_samples, len(train))))
        self.train_set, self.test_set = train, self.open(self.hparams.heldout)
        if len(self.train_set) == 0:
            raise DataError(f"CelebA64DataModule: the train partition under {self.root}/celeba is empty")

    def loader_kwargs(self) -> dict[str, Any]:
        workers = self.hparams.num_workers
        return dict(num_workers=workers, persistent_workers=workers > 0)

    def train_dataloader(self) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        if self.hparams.batch_size % world:
            raise ValueError(f"batch size {self.hparams.batch_size} is not divisible by {world} processes")
        sampler = ResumableBatchSampler(EpochShuffle(len(self.train_set), seed=self.hparams.seed),
                                        self.hparams.batch_size // world, drop_last=self.hparams.drop_last,
                                        rank=rank, world_size=world)
        return ResumableDataLoader(self.train_set, sampler, **self.loader_kwargs())

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=self.hparams.batch_size, **self.loader_kwargs())

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, attrs = batch
        return images.float().div_(255), attrs
