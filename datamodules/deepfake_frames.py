"""Video frames of Celeb-DF v2 / FaceForensics++ as images (real 0 / fake 1) for the ResNets of Tables 10 and 12.

The videos are read from the data sets' own layouts with their official splits (``datamodules.deepfake_videos``);
``k`` frames per video (evenly spaced), shorter side resized to ``size``, centre square crop (no face detector is
available offline), decoded once with PyAV and cached next to nothing else::

    <cache_dir>/<dataset>[_<compression>]_<split>_k<k>_s<size>.npy      uint8 (N * k, 3, size, size), memory-mapped
    <cache_dir>/<dataset>[_<compression>]_<split>_k<k>_s<size>.pt       {"format", "labels", "video", "video_ids",
                                                                          "sources", "failed", "recipe"}

A cache whose recipe (videos, frames, size) differs from the current one is rebuilt. Videos that cannot be decoded
are left out and named in the ``.pt`` file's ``failed`` list (and a warning).
"""
import hashlib
import os
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.base import DataError, ShardedDataModule
from datamodules.deepfake import RealFakeSplits
from datamodules.deepfake_videos import FFPP_METHODS, Video, VideoClips, celebdf_videos, collate_clips, ffpp_videos

FORMAT = "overparam-deepfake-frames/1"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class IndexedFrames(Dataset):
    """The frames ``indices`` of a (memory-mapped) uint8 array; a batch is one index op (``__getitems__``)."""

    def __init__(self, frames: Tensor, labels: Tensor, indices: Tensor) -> None:
        self.frames, self.labels, self.indices = frames, labels, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        j = int(self.indices[i])
        return self.frames[j], self.labels[j]

    def __getitems__(self, idx: list[int]) -> tuple[Tensor, Tensor]:
        rows = self.indices[torch.as_tensor(idx)]
        return self.frames[rows], self.labels[rows]

    @property
    def targets(self) -> Tensor:
        return self.labels[self.indices]


class DeepfakeFramesDataModule(RealFakeSplits, ShardedDataModule):
    """Real (0) vs fake (1) face-video frames; every frame is a sample labelled with its video.

    Args:
        root: the data set folder (Celeb-DF v2: ``Celeb-real/``, ``Celeb-synthesis/``, ``YouTube-real/``,
            ``List_of_testing_videos.txt``; FF++: ``original_sequences/``, ``manipulated_sequences/``, ``splits/``).
        dataset: ``celebdf`` (official test list; validation is a seeded ``val_fraction`` of the training
            *videos*) or ``ffpp`` (official train/val/test pair splits).
        compression, methods, split_dir: FF++ quality, manipulation methods, folder of the split JSON files.
        frames_per_video: k frames per video, evenly spaced.
        size: frames are resized (shorter side) and centre-cropped to size x size.
        cache_dir: where the decoded frames go (default ``<root>/overparam_frames``).
        decode_workers: processes decoding videos when the cache is built.
        augment: random horizontal flips of training frames.
        batch_size, eval_batch_size, split_seed, num_workers: as in the other datamodules.
    """

    def __init__(self, root: str = "data/Celeb-DF-v2", dataset: Literal["celebdf", "ffpp"] = "celebdf",
                 compression: Literal["c23", "c40", "raw"] = "c23", methods: tuple[str, ...] = FFPP_METHODS,
                 split_dir: Optional[str] = None, frames_per_video: int = 8, size: int = 224,
                 cache_dir: Optional[str] = None, decode_workers: int = 0, augment: bool = True,
                 batch_size: int = 32, eval_batch_size: Optional[int] = None, val_fraction: float = 0.1,
                 split_seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        if dataset not in ("celebdf", "ffpp"):
            raise ValueError(f"data.dataset must be 'celebdf' or 'ffpp', got {dataset!r}")
        if frames_per_video < 1 or size < 1:
            raise ValueError(f"data.frames_per_video and data.size must be positive, got {frames_per_video}, {size}")
        if batch_size <= 0 or (eval_batch_size is not None and eval_batch_size <= 0):
            raise ValueError(f"data.batch_size and eval_batch_size must be positive, got {batch_size}, {eval_batch_size}")
        if dataset == "celebdf" and not 0.0 < val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in (0, 1) for Celeb-DF (it has no official validation "
                             f"split), got {val_fraction}")
        if decode_workers < 0 or num_workers < 0:
            raise ValueError(f"data.decode_workers and num_workers must be >= 0, got {decode_workers}, {num_workers}")
        self.save_hyperparameters()
        self.root = Path(root).expanduser()
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else self.root / "overparam_frames"
        self.sets: dict[str, IndexedFrames] = {}
        self.video_ids: dict[str, list[str]] = {}
        self._mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    # ----------------------------------------------------------------- videos and cache
    def videos(self) -> dict[str, list[Video]]:
        h = self.hparams
        if h.dataset == "celebdf":
            return celebdf_videos(self.root)
        return ffpp_videos(self.root, h.compression, tuple(h.methods), Path(h.split_dir) if h.split_dir else None)

    def cache_path(self, split: str) -> Path:
        h = self.hparams
        name = h.dataset if h.dataset == "celebdf" else f"ffpp_{h.compression}"
        return self.cache_dir / f"{name}_{split}_k{h.frames_per_video}_s{h.size}"

    def recipe(self, videos: list[Video]) -> dict[str, Any]:
        ids = hashlib.sha256("\n".join(v.id for v in videos).encode()).hexdigest()[:16]
        return {"frames_per_video": self.hparams.frames_per_video, "size": self.hparams.size, "videos": len(videos),
                "video_ids_sha256": ids, "crop": "centre square, no face detection"}

    def prepare_data(self) -> None:
        for split, videos in self.videos().items():
            path = self.cache_path(split)
            if self.read_meta(path, self.recipe(videos)) is None:
                self.build_cache(path, videos)

    @staticmethod
    def read_meta(path: Path, recipe: dict[str, Any]) -> Optional[dict[str, Any]]:
        if not (path.with_suffix(".pt").is_file() and path.with_suffix(".npy").is_file()):
            return None
        try:
            meta = torch.load(path.with_suffix(".pt"), map_location="cpu", weights_only=True)
        except Exception:
            return None
        return meta if isinstance(meta, dict) and meta.get("format") == FORMAT and meta["recipe"] == recipe else None

    def build_cache(self, path: Path, videos: list[Video]) -> None:
        h = self.hparams
        k, size = h.frames_per_video, h.size
        tmp = path.parent / f".{path.name}.{os.getpid()}.tmp.npy"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            frames = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                               shape=(len(videos) * k, 3, size, size))
        except OSError as err:
            raise DataError(f"cannot write the frame cache in {path.parent} ({err.strerror or err}): point "
                            f"--data.init_args.cache_dir at a writable folder") from err
        loader = DataLoader(VideoClips(self.root, videos, k, size), batch_size=4, num_workers=h.decode_workers,
                            collate_fn=collate_clips, generator=torch.Generator())  # own RNG: leaves the seeded one alone
        kept, failed = [], []
        rank_zero_info(f"decoding {len(videos)} videos ({k} frames, {size} px) into {path}.npy")
        for clips, _, indices, bad in loader:
            failed += [(videos[i].id, message) for i, message in bad]
            for clip, i in zip([] if clips is None else clips, indices):
                frames[len(kept) * k:(len(kept) + 1) * k] = clip.numpy()
                kept.append(i)
        frames.flush()
        del frames
        if not kept:
            tmp.unlink()
            raise DataError(f"none of the {len(videos)} videos under {self.root} could be decoded, e.g. "
                            f"{failed[0][0]}: {failed[0][1]}")
        if failed:
            rank_zero_warn(f"{len(failed)} of {len(videos)} videos could not be decoded and are left out, e.g. "
                           f"{failed[0][0]}: {failed[0][1]} (listed in {path}.pt)")
        meta = {"format": FORMAT, "dataset": h.dataset, "frames": len(kept) * k,
                "labels": torch.tensor([videos[i].label for i in kept]).repeat_interleave(k),
                "video": torch.arange(len(kept)).repeat_interleave(k), "video_ids": [videos[i].id for i in kept],
                "sources": [videos[i].source for i in kept], "failed": failed, "recipe": self.recipe(videos)}
        os.replace(tmp, path.with_suffix(".npy"))  # frames first: a meta file always has its frames
        torch.save(meta, path.parent / f".{path.name}.tmp.pt")
        os.replace(path.parent / f".{path.name}.tmp.pt", path.with_suffix(".pt"))

    def load_split(self, split: str, videos: list[Video]) -> tuple[Tensor, dict[str, Any]]:
        path = self.cache_path(split)
        meta = self.read_meta(path, self.recipe(videos))
        if meta is None:
            raise DataError(f"no decoded frames for the {split} split at {path}.npy: prepare_data builds them")
        array = np.load(path.with_suffix(".npy"), mmap_mode="c")  # copy-on-write: writable view, nothing read yet
        return torch.from_numpy(array)[: meta["frames"]], meta

    # ----------------------------------------------------------------- splits
    def setup(self, stage: Optional[str] = None) -> None:
        if self.sets:
            return
        for split, videos in self.videos().items():
            frames, meta = self.load_split(split, videos)
            labels, video = meta["labels"].long(), meta["video"]
            if split == "train" and self.hparams.dataset == "celebdf":  # hold out whole videos for validation
                n = len(meta["video_ids"])
                order = torch.randperm(n, generator=torch.Generator().manual_seed(self.hparams.split_seed))
                n_val = int(round(self.hparams.val_fraction * n))
                if n_val == 0 or n_val == n:
                    raise DataError(f"{n} Celeb-DF training videos cannot give a validation share of "
                                    f"{self.hparams.val_fraction}")
                is_val = torch.zeros(n, dtype=torch.bool)
                is_val[order[:n_val]] = True
                for name, mask in (("train", ~is_val), ("val", is_val)):
                    self.sets[name] = IndexedFrames(frames, labels, torch.nonzero(mask[video]).flatten())
                    self.video_ids[name] = [v for v, m in zip(meta["video_ids"], mask.tolist()) if m]
            else:
                self.sets[split] = IndexedFrames(frames, labels, torch.arange(len(labels)))
                self.video_ids[split] = list(meta["video_ids"])
        self.train_set, self.val_set, self.test_set = self.sets["train"], self.sets["val"], self.sets["test"]
        self.log_class_balance(" frames")

    # ----------------------------------------------------------------- on-device transforms
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, targets = batch
        x = images.float().div_(255)
        if self.hparams.augment and self.trainer is not None and self.trainer.training:
            flip = torch.rand(len(x), 1, 1, 1, device=x.device) < 0.5
            x = torch.where(flip, x.flip(-1), x)
        return (x - self._mean.to(x.device)) / self._std.to(x.device), targets
