#!/usr/bin/env python
"""Train loss against wall time for the minibatch LM vs Adam grid (CNN2 / Fashion-MNIST), one line per cell and seed.

    python scripts/plot_lm_vs_adam.py --runs DIR --out docs/results/gauss_newton

DIR is the ``--out`` of ``sweep.py configs/gauss_newton/grids/lm_vs_adam_cnn2_fmnist.yaml``; the time axis of a run
is its step index times its mean seconds per step (train_seconds / global_step). Writes lm_vs_adam.png; the table
is the sweep's table.md.
"""
import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sweep import finished_results  # noqa: E402

LABELS = {"lm": "LM (square-root GGN, CG)", "adam": "Adam lr=1e-3"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    fig, ax = plt.subplots(figsize=(6, 4))
    for cell, label in LABELS.items():
        for k, seed in enumerate(sorted((args.runs / cell).glob("seed_*"))):
            res = finished_results(args.runs, cell, int(seed.name.removeprefix("seed_")))
            if res is None:
                continue
            with open(Path(res["run_dir"]) / "metrics.csv", newline="") as file:
                rows = [(int(r["step"]), float(r["train/loss"])) for r in csv.DictReader(file) if r.get("train/loss")]
            per_step = res["train_seconds"] / max(res["global_step"], 1)
            color = "C0" if cell == "lm" else "C1"
            ax.plot([s * per_step for s, _ in rows], [v for _, v in rows], color=color, alpha=0.7, lw=1,
                    label=label if k == 0 else None)
    ax.set_xlabel("wall time (s, 1 CPU thread)"), ax.set_ylabel("train loss (minibatch CE)"), ax.set_yscale("log")
    ax.set_title("CNN2 / Fashion-MNIST, batch 256, equal wall time"), ax.legend(), ax.grid(alpha=0.3)
    args.out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(), fig.savefig(args.out / "lm_vs_adam.png", dpi=130)
    print(f"wrote {args.out / 'lm_vs_adam.png'}")


if __name__ == "__main__":
    main()
