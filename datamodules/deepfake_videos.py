"""The raw deepfake video data sets (Celeb-DF v2, FaceForensics++): which videos, labels and official splits, and
frame decoding with PyAV. Used by ``scripts/extract_deepfake_features.py``; training reads the feature files.

Labels: 0 = real, 1 = fake (the positive class of AUROC and F1).
"""
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor
from torch.nn.functional import adaptive_avg_pool2d
from torch.utils.data import Dataset

from datamodules.base import DataError

CELEBDF_REAL = ("Celeb-real", "YouTube-real")
CELEBDF_FAKE = ("Celeb-synthesis",)
CELEBDF_TEST_LIST = "List_of_testing_videos.txt"
FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
FFPP_SPLITS = ("train", "val", "test")
FLICKER_GRID = 8  # pixel frame differences are averaged over an 8x8 grid of cells: 64 numbers


@dataclass(frozen=True)
class Video:
    id: str  # path relative to the data set root, e.g. "Celeb-synthesis/id0_id16_0000.mp4"
    label: int  # 0 real, 1 fake
    source: str  # "Celeb-real", "YouTube-real", "Celeb-synthesis"; FF++: "youtube" or the manipulation method
    split: str


def celebdf_videos(root: Path) -> dict[str, list[Video]]:
    """Celeb-DF v2: the videos named in ``List_of_testing_videos.txt`` are the test split, all others train.

    The list's own labels (1 = real, 0 = fake, per the release) are checked against the folders.
    """
    folders = {name: 0 for name in CELEBDF_REAL} | {name: 1 for name in CELEBDF_FAKE}
    missing = [name for name in (*folders, CELEBDF_TEST_LIST) if not (root / name).exists()]
    if missing:
        raise DataError(f"Celeb-DF v2: {', '.join(missing)} not found under {root} (expected Celeb-real/, "
                        f"Celeb-synthesis/, YouTube-real/ and {CELEBDF_TEST_LIST} there)")
    all_ids = {f"{name}/{p.name}": label for name, label in folders.items() for p in sorted((root / name).glob("*.mp4"))}
    test_ids = []
    for n, line in enumerate((root / CELEBDF_TEST_LIST).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("0", "1"):
            raise DataError(f"{root / CELEBDF_TEST_LIST}:{n}: expected '<1 real|0 fake> <folder>/<file>.mp4', "
                            f"got {line!r}")
        if parts[1] not in all_ids:
            raise DataError(f"{root / CELEBDF_TEST_LIST}:{n}: {parts[1]} is not a video under {root}")
        if int(parts[0]) != 1 - all_ids[parts[1]]:
            raise DataError(f"{root / CELEBDF_TEST_LIST}:{n}: label {parts[0]} contradicts the folder of {parts[1]}")
        test_ids.append(parts[1])
    test = set(test_ids)

    def make(ids: list[str], split: str) -> list[Video]:
        return [Video(i, all_ids[i], i.split("/")[0], split) for i in ids]

    return {"train": make([i for i in all_ids if i not in test], "train"), "test": make(sorted(test), "test")}


def ffpp_split_dir(root: Path, split_dir: Optional[Path]) -> Path:
    candidates = [split_dir] if split_dir else [root / "splits", root]
    for folder in candidates:
        if all((folder / f"{s}.json").is_file() for s in FFPP_SPLITS):
            return folder
    raise DataError(f"FaceForensics++: the official split files {', '.join(f'{s}.json' for s in FFPP_SPLITS)} "
                    f"were not found in {' or '.join(str(c) for c in candidates)} (they are dataset/splits/ of the "
                    "FaceForensics repository)")


def ffpp_videos(root: Path, compression: str = "c23", methods: tuple[str, ...] = FFPP_METHODS,
                split_dir: Optional[Path] = None) -> dict[str, list[Video]]:
    """FaceForensics++ by the official pair splits: pair [a, b] gives the real videos a, b
    (``original_sequences/youtube/<c>/videos``) and the fakes a_b, b_a of every method
    (``manipulated_sequences/<method>/<c>/videos``)."""
    folder = ffpp_split_dir(root, split_dir)
    out = {}
    for split in FFPP_SPLITS:
        try:
            pairs = json.loads((folder / f"{split}.json").read_text())
            pairs = [(str(a), str(b)) for a, b in pairs]
        except (ValueError, TypeError) as err:
            raise DataError(f"{folder / f'{split}.json'} is not a JSON list of id pairs: {err}") from err
        reals = sorted({i for pair in pairs for i in pair})
        videos = [Video(f"original_sequences/youtube/{compression}/videos/{i}.mp4", 0, "youtube", split) for i in reals]
        for method in methods:
            fakes = sorted(f"{a}_{b}" for x, y in pairs for a, b in ((x, y), (y, x)))
            videos += [Video(f"manipulated_sequences/{method}/{compression}/videos/{f}.mp4", 1, method, split)
                       for f in fakes]
        absent = [v.id for v in videos if not (root / v.id).is_file()]
        if absent:
            raise DataError(f"FaceForensics++ {split} split: {len(absent)} of {len(videos)} videos missing under "
                            f"{root}, e.g. {absent[0]} (check --compression and --methods)")
        out[split] = videos
    return out


# ---------------------------------------------------------------------- decoding
def frame_indices(num_frames_in_video: int, num_samples: int) -> np.ndarray:
    """``num_samples`` frame indices spread evenly over the video, leaving room for each one's successor."""
    last = max(num_frames_in_video - 2, 0)
    return np.round(np.linspace(0, last, num_samples)).astype(np.int64)


def count_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.frames > 0:
            return stream.frames
        return sum(1 for packet in container.demux(stream) if packet.size)


def decode_frames(path: Path, num_samples: int, size: int) -> tuple[Tensor, Tensor]:
    """The sampled frames and their successors, as uint8 (2, num_samples, 3, size, size): shorter side resized to
    ``size`` (swscale bilinear), centre square crop. Row 0 holds the sampled frames, row 1 the next frame of each
    (the same frame again when the video has one frame)."""
    import av

    n = count_frames(path)
    if n == 0:
        raise ValueError("no video frames")
    starts = frame_indices(n, num_samples)
    following = np.minimum(starts + 1, n - 1)
    wanted = set(starts.tolist()) | set(following.tolist())
    decoded: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                decoded[i] = square_crop(frame, size)
            if i >= max(wanted):
                break
    if len(decoded) < len(wanted):  # the header over-counted frames: fall back on the frames that decoded
        if not decoded:
            raise ValueError("no frame could be decoded")
        for i in wanted:
            decoded.setdefault(i, decoded[max(decoded)])
    frames = np.stack([np.stack([decoded[i] for i in row]) for row in (starts, following)])
    return torch.from_numpy(frames).permute(0, 1, 4, 2, 3).contiguous()


def square_crop(frame: "av.VideoFrame", size: int) -> np.ndarray:
    scale = size / min(frame.width, frame.height)
    width, height = max(size, round(frame.width * scale)), max(size, round(frame.height * scale))
    rgb = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
    top, left = (height - size) // 2, (width - size) // 2
    return rgb[top:top + size, left:left + size]


def flicker_statistics(frames: Tensor) -> Tensor:
    """Mean |gray(next frame) - gray(frame)| over the sampled pairs, averaged in an 8x8 grid of cells (64 values,
    gray in [0, 1], ITU-R 601 luma)."""
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 1, 3, 1, 1)
    gray = (frames.float() / 255 * weights).sum(2)  # (2, T, H, W)
    diff = (gray[1] - gray[0]).abs()
    return adaptive_avg_pool2d(diff, FLICKER_GRID).mean(0).flatten()


class VideoClips(Dataset):
    """Item i: (uint8 frames (T, 3, size, size), flicker statistics (64,), i), or (None, error message, i) when the
    video cannot be decoded, so one bad file does not stop an extraction."""

    def __init__(self, root: Path, videos: list[Video], num_frames: int, size: int) -> None:
        self.root, self.videos, self.num_frames, self.size = root, videos, num_frames, size

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> tuple[Optional[Tensor], object, int]:
        try:
            frames = decode_frames(self.root / self.videos[i].id, self.num_frames, self.size)
        except Exception as err:  # PyAV raises many error types for corrupt files
            return None, f"{type(err).__name__}: {err}", i
        return frames[0], flicker_statistics(frames), i


def collate_clips(items: list) -> tuple[Optional[Tensor], Optional[Tensor], list[int], list[tuple[int, str]]]:
    good = [item for item in items if item[0] is not None]
    failed = [(i, message) for frames, message, i in items if frames is None]
    if not good:
        return None, None, [], failed
    return (torch.stack([g[0] for g in good]), torch.stack([g[1] for g in good]), [g[2] for g in good], failed)
