"""Per-video deepfake features (Celeb-DF v2, FaceForensics++) as small images for the CNNs of Table 5.

Feature files, written by ``scripts/extract_deepfake_features.py`` (one per split, ``torch.save`` of a dict that
loads with ``weights_only=True``)::

    <root>/celebdf_{train,test}.pt            official Celeb-DF v2 test list; train = all other videos
    <root>/ffpp_<c23|c40|raw>_{train,val,test}.pt   official FF++ pair splits

    {"format": "overparam-deepfake-features/1", "dataset": "celebdf" | "ffpp", "split": "train" | "val" | "test",
     "features": float32 (N, 2176), "labels": int64 (N,) 0 real / 1 fake, "video_ids": [N paths relative to the
     data set root], "sources": [N source folders or FF++ methods], "recipe": {extraction settings}}
"""
from pathlib import Path
from typing import Any, Literal, Optional

import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor

from datamodules.base import DataError, InMemoryImages, ShardedDataModule

FORMAT = "overparam-deepfake-features/1"
FEATURE_DIM = 2176
SPLITS = {"celebdf": ("train", "test"), "ffpp": ("train", "val", "test")}


def feature_file(root: Path, dataset: str, split: str, compression: str = "c23") -> Path:
    return root / (f"celebdf_{split}.pt" if dataset == "celebdf" else f"ffpp_{compression}_{split}.pt")


def load_features(path: Path) -> dict[str, Any]:
    """Read and check one feature file; problems raise :class:`DataError` naming the file."""
    if not path.is_file():
        raise DataError(f"no feature file {path}: run scripts/extract_deepfake_features.py (docs/deepfake.md) "
                        f"and point --data.root at its --out folder")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise DataError(f"cannot read feature file {path}: {type(err).__name__}: {err}") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DataError(f"{path} is not a deepfake feature file (format {FORMAT})")
    features, labels = data["features"], data["labels"]
    if features.ndim != 2 or features.shape[1] != FEATURE_DIM or len(labels) != len(features) or len(labels) == 0:
        raise DataError(f"{path}: expected features (N>0, {FEATURE_DIM}) and N labels, got {tuple(features.shape)} "
                        f"and {len(labels)}")
    if not torch.isfinite(features).all() or not set(labels.unique().tolist()) <= {0, 1}:
        raise DataError(f"{path}: non-finite features or labels other than 0/1")
    return data


class RealFakeSplits:
    """For datamodules whose ``sets[split].targets`` are 0 = real, 1 = fake labels."""

    def class_balance(self) -> dict[str, dict[str, Any]]:
        """Per split: real and fake counts and the fake share (what accuracy a constant guess reaches)."""
        self.setup()
        out = {}
        for split in ("train", "val", "test"):
            y = self.sets[split].targets
            fake = int(y.sum())
            out[split] = {"real": len(y) - fake, "fake": fake, "fake_share": round(fake / len(y), 4)}
        return out

    def log_class_balance(self, unit: str) -> None:
        rank_zero_info(f"{type(self).__name__} {self.hparams.dataset}: " + "; ".join(
            f"{s} {b['real']} real / {b['fake']} fake{unit}" for s, b in self.class_balance().items()))


class DeepfakeFeaturesDataModule(RealFakeSplits, ShardedDataModule):
    """Real (0) vs fake (1) videos, each a 2176-d feature vector shown to the CNN as ``input_shape``.

    The vector is standardised per dimension with the training subset's mean and std, then laid out in C order into
    ``input_shape`` (default 3x28x28 = 2352: the 2176 values fill channel 0, 1 and 480 pixels of channel 2, the last
    176 pixels are zeros). CNN1/CNN2 keep their 28x28 geometry, so only conv1 (3 input channels) and the 2-class head
    change the paper's parameter counts: CNN1 536,514 (537,994 in the paper), CNN2 107,874 (108,618).

    Args:
        root: folder with the feature files.
        dataset: ``celebdf`` (official test list; validation is a seeded ``val_fraction`` of train) or ``ffpp``
            (official train/val/test pair splits).
        compression: FF++ quality the features were extracted from (``c23``, ``c40`` or ``raw``).
        input_shape: [C, H, W] with C*H*W >= 2176.
        standardize: subtract the training mean and divide by the training std per dimension.
        batch_size: global batch size; under DDP each of the N processes gets ``batch_size / N``.
        eval_batch_size: batch size for validation and test (default: ``batch_size``).
        val_fraction: Celeb-DF only: share of the training videos held out (seeded) for validation.
        split_seed: seed of that split and of the per-epoch shuffling.
    """

    def __init__(self, root: str = "data/deepfake_features", dataset: Literal["celebdf", "ffpp"] = "celebdf",
                 compression: Literal["c23", "c40", "raw"] = "c23", input_shape: tuple[int, int, int] = (3, 28, 28),
                 standardize: bool = True, batch_size: int = 128, eval_batch_size: Optional[int] = None,
                 val_fraction: float = 0.1, split_seed: int = 0) -> None:
        super().__init__()
        if dataset not in SPLITS:
            raise ValueError(f"data.dataset must be 'celebdf' or 'ffpp', got {dataset!r}")
        if len(input_shape) != 3 or min(input_shape) <= 0:
            raise ValueError(f"data.input_shape must be three positive sizes [C, H, W], got {list(input_shape)}")
        c, h, w = input_shape
        if c * h * w < FEATURE_DIM:
            raise ValueError(f"data.input_shape {list(input_shape)} holds {c * h * w} values, fewer than the "
                             f"{FEATURE_DIM} features")
        if batch_size <= 0 or (eval_batch_size is not None and eval_batch_size <= 0):
            raise ValueError(f"data.batch_size and eval_batch_size must be positive, got {batch_size}, {eval_batch_size}")
        if dataset == "celebdf" and not 0.0 < val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in (0, 1) for Celeb-DF (it has no official validation "
                             f"split), got {val_fraction}")
        self.save_hyperparameters()
        self.root = Path(root).expanduser()
        self.input_shape = tuple(input_shape)
        self.sets: dict[str, InMemoryImages] = {}
        self.video_ids: dict[str, list[str]] = {}

    def prepare_data(self) -> None:
        for split in SPLITS[self.hparams.dataset]:
            load_features(self.file(split))

    def file(self, split: str) -> Path:
        return feature_file(self.root, self.hparams.dataset, split, self.hparams.compression)

    # ----------------------------------------------------------------- splits
    def raw_splits(self) -> dict[str, tuple[Tensor, Tensor, list[str]]]:
        loaded = {s: load_features(self.file(s)) for s in SPLITS[self.hparams.dataset]}
        splits = {s: (d["features"].float(), d["labels"].long(), list(d["video_ids"])) for s, d in loaded.items()}
        if "val" not in splits:
            x, y, ids = splits["train"]
            order = torch.randperm(len(y), generator=torch.Generator().manual_seed(self.hparams.split_seed))
            n_val = int(round(self.hparams.val_fraction * len(y)))
            if n_val == 0 or n_val == len(y):
                raise DataError(f"{self.file('train')}: {len(y)} training videos cannot give a validation share of "
                                f"{self.hparams.val_fraction}")
            train, val = order[n_val:].sort().values, order[:n_val].sort().values
            splits["train"] = (x[train], y[train], [ids[i] for i in train])
            splits["val"] = (x[val], y[val], [ids[i] for i in val])
        return splits

    def setup(self, stage: Optional[str] = None) -> None:
        if self.sets:
            return
        splits = self.raw_splits()
        mean, std = torch.zeros(FEATURE_DIM), torch.ones(FEATURE_DIM)
        if self.hparams.standardize:
            train = splits["train"][0]
            mean, std = train.mean(0), train.std(0, correction=0)
            std[std == 0] = 1.0  # constant dimensions are centred, not scaled
        for split, (x, y, ids) in splits.items():
            self.sets[split] = InMemoryImages(self.to_input((x - mean) / std), y)
            self.video_ids[split] = ids
        self.train_set, self.val_set, self.test_set = self.sets["train"], self.sets["val"], self.sets["test"]
        self.log_class_balance("")

    def to_input(self, features: Tensor) -> Tensor:
        """(N, 2176) -> (N, C, H, W): C-order fill, zeros after the last feature."""
        c, h, w = self.input_shape
        padded = torch.nn.functional.pad(features, (0, c * h * w - FEATURE_DIM))
        return padded.view(-1, c, h, w).contiguous()

