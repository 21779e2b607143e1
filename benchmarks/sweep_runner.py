"""The grid runner's cost: --jobs 1 vs --jobs 2 wall time, and its overhead per run over ``train.run`` alone.

    python benchmarks/sweep_runner.py [--data-root data] [--steps 40] [--repeats 3]

A 4-cell x 2-seed grid of short CNN2/Fashion-MNIST runs. Each repeat times ``sweep.py --jobs 1`` and
``--jobs 2`` (alternating, fresh folders) and the same 8 runs through ``train.run`` in one process; prints the
median jobs2/jobs1 ratio (target <= 0.65 on 2 cores) and the median overhead per run of ``--jobs 1`` over
``train.run`` (target <= 2 s), with the spread. (Not named sweep.py: it would shadow the sweep module it imports.)
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

import sweep
import train

ROOT = Path(__file__).resolve().parent.parent
SEEDS = [0, 1]


def grid_file(folder: Path, steps: int) -> Path:
    cells = {f"lr{lr}": ["--config", "configs/default.yaml", "--trainer.max_steps", str(steps),
                         "--model.init_args.optimizer.init_args.lr", str(lr)] for lr in (3e-4, 1e-3, 3e-3, 1e-2)}
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump({"name": "bench", "cells": cells, "metrics": ["test/acc"]}, sort_keys=False))
    return path


def extra(data_root: str) -> list[str]:
    return ["--data.root", data_root, "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2",
            "--wandb", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def time_sweep(grid: Path, jobs: int, out: Path, data_root: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "sweep.py"), str(grid), "--seeds", *map(str, SEEDS), "--jobs",
                    str(jobs), "--out", str(out), "--", *extra(data_root)], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def time_in_process(grid: Path, out: Path, data_root: str) -> float:
    cells = yaml.safe_load(grid.read_text())["cells"]
    start = time.perf_counter()
    with sweep.output_to(out / "console.log"):  # as quiet as the sweep's workers
        for cell, args in cells.items():
            for seed in SEEDS:
                train.run([*args, *extra(data_root), "--seed", str(seed), "--trainer.default_root_dir",
                           str(out / cell), "--name", f"seed_{seed}"])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=str(ROOT / "data"))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ratios, overheads = [], []
    with tempfile.TemporaryDirectory() as tmp:
        grid = grid_file(Path(tmp), args.steps)
        time_in_process(grid, Path(tmp) / "warmup", args.data_root)  # imports and caches paid once
        for k in range(args.repeats):
            one = time_sweep(grid, 1, Path(tmp) / f"j1_{k}", args.data_root)
            two = time_sweep(grid, 2, Path(tmp) / f"j2_{k}", args.data_root)
            alone = time_in_process(grid, Path(tmp) / f"ip_{k}", args.data_root)
            runs = len(SEEDS) * 4
            ratios.append(two / one)
            overheads.append((one - alone) / runs)
            print(f"repeat {k}: jobs1 {one:.1f} s, jobs2 {two:.1f} s, train.run alone {alone:.1f} s "
                  f"({runs} runs)", flush=True)
    print(f"jobs2 / jobs1 wall time: median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}; target <= 0.65)")
    print(f"sweep --jobs 1 overhead per run over train.run: median {statistics.median(overheads):.2f} s "
          f"(min {min(overheads):.2f}, max {max(overheads):.2f}; target <= 2 s)")


if __name__ == "__main__":
    main()
