"""The grid runner's cost: --jobs 1 vs --jobs 2 wall time, and its overhead per run over ``train.run`` alone.

    python benchmarks/sweep_runner.py [--data-root data] [--steps 40] [--pairs 5]

A 4-cell x 2-seed grid of short CNN2/Fashion-MNIST runs. Each round times ``sweep.py --jobs 1``, ``--jobs 2``
(fresh folders) and the same 8 runs through ``train.run`` in this process, the order reversed every other round;
prints the jobs2/jobs1 wall-time ratio as the median of ``--pairs`` alternating pairs, spread min-max (target
<= 0.65 on 2 cores), and the median overhead per run of ``--jobs 1`` over ``train.run`` (target <= 2 s), spread
min-max. (Not named sweep.py: it would shadow the sweep module it imports.)
"""
import argparse
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

import sweep
import train
from pairs import alternating_rounds, ratios_to, summary

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
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    runs = len(SEEDS) * 4
    with tempfile.TemporaryDirectory() as tmp:
        grid, fresh = grid_file(Path(tmp), args.steps), itertools.count()
        time_in_process(grid, Path(tmp) / "warmup", args.data_root)  # imports and caches paid once
        print(f"wall time of {runs} runs ({args.steps} steps each)")
        seconds = alternating_rounds({
            "jobs1": lambda: time_sweep(grid, 1, Path(tmp) / f"j1_{next(fresh)}", args.data_root),
            "jobs2": lambda: time_sweep(grid, 2, Path(tmp) / f"j2_{next(fresh)}", args.data_root),
            "train.run alone": lambda: time_in_process(grid, Path(tmp) / f"ip_{next(fresh)}", args.data_root)},
            args.pairs, "s", base="jobs1")
    overheads = [(one - alone) / runs for one, alone in zip(seconds["jobs1"], seconds["train.run alone"])]
    print(summary(ratios_to(seconds, "jobs1")["jobs2"], "jobs2 / jobs1 wall time", "<= 0.65"))
    print(f"sweep --jobs 1 overhead per run over train.run: median {statistics.median(overheads):.2f} s "
          f"(spread {min(overheads):.2f}-{max(overheads):.2f} over {len(overheads)} rounds)  target <= 2 s")


if __name__ == "__main__":
    main()
