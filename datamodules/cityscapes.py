"""Cityscapes semantic segmentation (fine annotations, 19 train ids) over ``torchvision.datasets.Cityscapes``.

Files: ``<root>/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png`` and
``<root>/gtFine/{train,val}/<city>/*_gtFine_labelIds.png`` (or the two official zips in ``<root>``, which torchvision
extracts). Nothing can be downloaded: Cityscapes needs a login at cityscapes-dataset.com.

The official test split has no public labels, so the official **val** split (500 images) is our test set and a
seeded slice of **train** (``val_fraction``) is our validation set. Images are resized to ``size`` with PIL bilinear
(antialiased), masks with nearest; the 34 label ids become the 19 train ids, everything else 255 (ignored).
"""
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets
from torchvision.transforms.functional import pil_to_tensor

from datamodules.base import DataError, InMemoryImages, ShardedDataModule

IGNORE_INDEX = 255
TRAIN_CLASSES = sorted((c for c in datasets.Cityscapes.classes if 0 <= c.train_id < IGNORE_INDEX),
                       key=lambda c: c.train_id)
CLASS_NAMES = [c.name for c in TRAIN_CLASSES]
PALETTE = [c.color for c in TRAIN_CLASSES]  # the official colour of each train id


def label_lut() -> Tensor:
    """uint8 lookup table label id (0..255) -> train id (0..18) or 255."""
    lut = torch.full((256,), IGNORE_INDEX, dtype=torch.uint8)
    for c in TRAIN_CLASSES:
        lut[c.id] = c.train_id
    return lut


def to_train_ids(label_ids: Tensor) -> Tensor:
    """Map a uint8 tensor of Cityscapes label ids to train ids (255 = ignore)."""
    return label_lut()[label_ids.long()]


class CityscapesPairs(Dataset):
    """(uint8 image 3xHxW, uint8 train-id mask HxW), decoded and resized item by item."""

    def __init__(self, dataset: datasets.Cityscapes, indices: list[int], size: tuple[int, int]) -> None:
        self.dataset, self.indices, self.size, self.lut = dataset, indices, size, label_lut()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        k = self.indices[i]
        try:
            image, target = self.dataset[k]
        except OSError as err:  # missing or truncated PNG
            raise DataError(f"CityscapesDataModule: cannot read {self.dataset.images[k]} or its gtFine mask: "
                            f"{err}") from err
        wh = (self.size[1], self.size[0])
        image = pil_to_tensor(image.resize(wh, Image.BILINEAR))
        mask = torch.from_numpy(np.array(target.resize(wh, Image.NEAREST), dtype=np.uint8))
        return image, self.lut[mask.long()]


class CityscapesDataModule(ShardedDataModule):
    """Cityscapes fine annotations at ``size`` (default 256x256, Mapping Networks Table 6).

    Args:
        root: folder holding ``leftImg8bit/`` and ``gtFine/``.
        batch_size: global training batch size; under DDP each of the N processes gets ``batch_size / N``.
        eval_batch_size: batch size for validation and test (default: ``batch_size``).
        val_fraction: share of the official train split held out (seeded) as our validation set.
        split_seed: seed of the train/val split and of the per-epoch shuffling.
        max_train_samples: use only this many training images (after the split).
        size: (height, width) after resizing; CNN3 needs multiples of 8.
        augment: random scaled crop (side in [min_crop_scale, 1] of the resized image, resampled back to ``size``)
            and horizontal flip on training batches, on the device.
        min_crop_scale: smallest crop side, as a fraction of the image side.
        in_memory: decode and resize everything once in ``setup`` (uint8; ~0.8 GB for the full data at 256x256)
            instead of decoding each item every epoch.
        num_workers: decoding workers.
    """

    mean = (0.485, 0.456, 0.406)  # ImageNet statistics, the usual choice for Cityscapes
    std = (0.229, 0.224, 0.225)
    num_classes = len(TRAIN_CLASSES)
    ignore_index = IGNORE_INDEX
    class_names = CLASS_NAMES
    palette = PALETTE

    def __init__(self, root: str = "data/cityscapes", batch_size: int = 16, eval_batch_size: Optional[int] = None,
                 val_fraction: float = 0.1, split_seed: int = 0, max_train_samples: Optional[int] = None,
                 size: tuple[int, int] = (256, 256), augment: bool = False, min_crop_scale: float = 0.5,
                 in_memory: bool = True, num_workers: int = 4, pin_memory: bool = False) -> None:
        super().__init__()
        if batch_size <= 0 or (eval_batch_size is not None and eval_batch_size <= 0):
            raise ValueError(f"data.batch_size and eval_batch_size must be positive, got {batch_size}, "
                             f"{eval_batch_size}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        if max_train_samples is not None and max_train_samples <= 0:
            raise ValueError(f"data.max_train_samples must be positive, got {max_train_samples}")
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"data.size must be (height, width) with positive entries, got {size}")
        if not 0.0 < min_crop_scale <= 1.0:
            raise ValueError(f"data.min_crop_scale must be in (0, 1], got {min_crop_scale}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        self.save_hyperparameters()
        self.size = (int(size[0]), int(size[1]))
        self._mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        self._std = torch.tensor(self.std).view(1, 3, 1, 1)

    # ----------------------------------------------------------------- files
    def open(self, split: str) -> datasets.Cityscapes:
        root = self.hparams.root
        try:
            dataset = datasets.Cityscapes(root, split=split, mode="fine", target_type="semantic")
        except RuntimeError as err:
            missing = [str(Path(root) / top / split) for top in ("leftImg8bit", "gtFine")
                       if not (Path(root) / top / split).is_dir()]
            raise DataError(f"CityscapesDataModule: missing {' and '.join(missing) or 'files'}: Cityscapes cannot be "
                            f"downloaded automatically; get leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip "
                            f"from https://www.cityscapes-dataset.com (login) and unzip both into {root} "
                            f"(or set --data.root to the folder holding leftImg8bit/ and gtFine/)") from err
        if len(dataset) == 0:
            raise DataError(f"CityscapesDataModule: no *_leftImg8bit.png images under {root}/leftImg8bit/{split}")
        # os.listdir order differs between file systems; sort so the seeded split is the same everywhere
        order = sorted(range(len(dataset)), key=lambda i: dataset.images[i])
        dataset.images = [dataset.images[i] for i in order]
        dataset.targets = [dataset.targets[i] for i in order]
        return dataset

    def prepare_data(self) -> None:
        self.open("train")
        self.open("val")

    def pairs(self, dataset: datasets.Cityscapes, indices: list[int]) -> Dataset:
        items = CityscapesPairs(dataset, indices, self.size)
        if not self.hparams.in_memory or not indices:
            return items
        loader = DataLoader(items, batch_size=32, num_workers=self.hparams.num_workers)
        images, masks = zip(*loader)
        return InMemoryImages(torch.cat(images), torch.cat(masks))

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is not None:
            return
        train = self.open("train")
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.hparams.split_seed))
        n_val = int(round(self.hparams.val_fraction * len(train)))
        train_idx, val_idx = order[n_val:], order[:n_val].sort().values
        if self.hparams.max_train_samples is not None:
            train_idx = train_idx[: self.hparams.max_train_samples]
        self.train_set = self.pairs(train, train_idx.tolist())
        self.val_set = self.pairs(train, val_idx.tolist())
        test = self.open("val")
        self.test_set = self.pairs(test, list(range(len(test))))

    # ----------------------------------------------------------------- loaders
    def loader_kwargs(self) -> dict[str, Any]:
        # held in memory the pairs need no worker processes; workers only help the PNG-decoding path
        workers = 0 if self.hparams.in_memory else self.hparams.num_workers
        return {**super().loader_kwargs(), "num_workers": workers, "persistent_workers": workers > 0}

    # ----------------------------------------------------------------- on-device transforms
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, masks = batch
        x, y = images.float().div_(255), masks.long()
        if self.hparams.augment and self.trainer is not None and self.trainer.training:
            x, y = random_scaled_crop_flip(x, y, self.hparams.min_crop_scale)
        return (x - self._mean.to(x.device)) / self._std.to(x.device), y

    def denormalize(self, x: Tensor) -> Tensor:
        """Model input back to uint8 RGB (for logging images)."""
        return (x * self._std.to(x.device) + self._mean.to(x.device)).clamp(0, 1).mul(255).round().to(torch.uint8)


def random_scaled_crop_flip(x: Tensor, y: Tensor, min_scale: float) -> tuple[Tensor, Tensor]:
    """Per-sample random crop (side fraction in [min_scale, 1], inside the image) resampled to the full size, and
    a random horizontal flip; bilinear for images, nearest for masks so train ids stay exact."""
    n = len(x)
    scale = min_scale + (1 - min_scale) * torch.rand(n, device=x.device)
    shift = (1 - scale).unsqueeze(1) * (2 * torch.rand(n, 2, device=x.device) - 1)
    flip = torch.where(torch.rand(n, device=x.device) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = scale * flip, scale, shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    y = F.grid_sample(y.unsqueeze(1).float(), grid, mode="nearest", padding_mode="border", align_corners=False)
    return x, y.squeeze(1).long()
