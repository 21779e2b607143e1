"""Turn every video of Celeb-DF v2 or FaceForensics++ into one 2176-d feature vector (Mapping Networks Table 5).

    .venv/bin/python scripts/extract_deepfake_features.py celebdf --root /data/Celeb-DF-v2 \
        --weights resnet50-0676ba61.pth --out data/deepfake_features
    .venv/bin/python scripts/extract_deepfake_features.py ffpp --root /data/FaceForensics++ --compression c23 \
        --weights resnet50-0676ba61.pth --out data/deepfake_features

Writes one file per split (format: datamodules/deepfake.py; recipe: docs/deepfake.md). Resumable: finished videos
are kept in ``<file>.partial.pt`` (rewritten every ``--save_every_s`` seconds) and skipped when rerun; a finished
split with the same recipe is skipped whole. Decoding runs in ``--workers`` processes; the backbone sees the frames
of ``--videos_per_batch`` videos at once, on the GPU when there is one.
"""
import argparse
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader


from datamodules.base import DataError
from datamodules.deepfake import FEATURE_DIM, FORMAT, feature_file
from datamodules.deepfake_videos import (FFPP_METHODS, Video, VideoClips, celebdf_videos, collate_clips,
                                         ffpp_videos)
from nets.video_features import VideoFeatures


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", choices=["celebdf", "ffpp"])
    parser.add_argument("--root", type=Path, required=True, help="the data set's root folder")
    parser.add_argument("--weights", type=Path, required=True, help="torchvision ResNet-50 state dict (.pth)")
    parser.add_argument("--out", type=Path, default=Path("data/deepfake_features"))
    parser.add_argument("--compression", choices=["c23", "c40", "raw"], default="c23", help="FF++ quality")
    parser.add_argument("--methods", nargs="+", default=list(FFPP_METHODS), help="FF++ manipulation methods")
    parser.add_argument("--split_dir", type=Path, default=None,
                        help="folder with FF++ train/val/test.json (default: <root>/splits, then <root>)")
    parser.add_argument("--splits", nargs="+", default=None, help="only these splits")
    parser.add_argument("--num_frames", type=int, default=16, help="frames sampled evenly per video")
    parser.add_argument("--size", type=int, default=224, help="shorter side resized to this, centre square crop")
    parser.add_argument("--videos_per_batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="decoding processes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--save_every_s", type=float, default=60.0)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    for name in ("num_frames", "size", "videos_per_batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.workers < 0 or args.save_every_s < 0:
        parser.error("--workers and --save_every_s must be >= 0")
    return args


def weights_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def write_atomic(data: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(data, tmp)
    os.replace(tmp, path)


def pack(videos: list[Video], done: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """The file contents for the finished ``videos`` (in list order)."""
    have = [v for v in videos if v.id in done]
    features = torch.stack([done[v.id] for v in have]) if have else torch.zeros(0, FEATURE_DIM)
    return {**meta, "features": features, "labels": torch.tensor([v.label for v in have], dtype=torch.long),
            "video_ids": [v.id for v in have], "sources": [v.source for v in have]}


def already_done(path: Path, recipe: dict[str, Any]) -> dict[str, torch.Tensor]:
    if not path.is_file():
        return {}
    data = torch.load(path, map_location="cpu", weights_only=True)
    if data.get("recipe") != recipe:
        raise DataError(f"{path} was extracted with {data.get('recipe')}, this run uses {recipe}: delete it or "
                        "choose another --out")
    return dict(zip(data["video_ids"], data["features"]))


def extract_split(args: argparse.Namespace, model: VideoFeatures, split: str, videos: list[Video],
                  recipe: dict[str, Any], progress: Progress) -> Path:
    final = feature_file(args.out, args.dataset, split, args.compression)
    partial = final.with_name(final.stem + ".partial.pt")
    meta = {"format": FORMAT, "dataset": args.dataset, "split": split, "recipe": recipe}
    done = already_done(final, recipe) or already_done(partial, recipe)
    todo = [v for v in videos if v.id not in done]
    task = progress.add_task(f"{args.dataset} {split}", total=len(videos), completed=len(videos) - len(todo))
    if not todo and final.is_file():
        return final
    clips = VideoClips(args.root, todo, args.num_frames, args.size)
    loader = DataLoader(clips, batch_size=args.videos_per_batch, num_workers=args.workers, collate_fn=collate_clips,
                        pin_memory=args.device.startswith("cuda"), persistent_workers=False)
    failed, last_save = [], time.monotonic()
    for frames, flicker, index, bad in loader:
        failed += [(todo[i].id, message) for i, message in bad]
        if frames is not None:
            with torch.inference_mode():
                features = model(frames.to(args.device, non_blocking=True), flicker.to(args.device)).cpu()
            done.update({todo[i].id: f for i, f in zip(index, features)})
        progress.advance(task, len(index) + len(bad))
        if time.monotonic() - last_save >= args.save_every_s:
            write_atomic(pack(videos, done, meta), partial)
            last_save = time.monotonic()
    for video_id, message in failed:
        progress.console.print(f"[yellow]skipped {video_id}: {message}")
    write_atomic(pack(videos, done, meta), final if not failed else partial)
    if failed:
        raise DataError(f"{len(failed)} videos of the {split} split could not be decoded (listed above); the others "
                        f"are kept in {partial}: fix or remove those files and rerun")
    partial.unlink(missing_ok=True)
    return final


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    try:
        if not args.weights.is_file():
            raise FileNotFoundError(f"--weights {args.weights} does not exist (a torchvision ResNet-50 .pth file)")
        if args.dataset == "celebdf":
            splits = celebdf_videos(args.root)
        else:
            splits = ffpp_videos(args.root, args.compression, tuple(args.methods), args.split_dir)
        unknown = set(args.splits or []) - set(splits)
        if unknown:
            raise ValueError(f"--splits {sorted(unknown)}: {args.dataset} has {sorted(splits)}")
        recipe = {"backbone": "torchvision resnet50, global-average-pooled", "weights_sha256": weights_digest(
            args.weights), "num_frames": args.num_frames, "size": args.size, "layout": "mean2048+std64+flicker64"}
        if args.dataset == "ffpp":
            recipe |= {"compression": args.compression, "methods": sorted(args.methods)}
        model = VideoFeatures(str(args.weights)).to(args.device).to(memory_format=torch.channels_last).eval()
        args.out.mkdir(parents=True, exist_ok=True)
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
        with Progress(*columns, disable=args.quiet) as progress:
            for split in args.splits or splits:
                path = extract_split(args, model, split, splits[split], recipe, progress)
                progress.console.print(f"{split}: {len(splits[split])} videos -> {path}")
    except (DataError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
