#!/usr/bin/env python
"""Test RMSE against training-step wall time for the LM-vs-Adam-vs-L-BFGS grid, one panel per net.

    python scripts/plot_lm_budget.py --runs DIR --out docs/results/gauss_newton_real/lm_adam_lbfgs.png

DIR is the ``--out`` of ``sweep.py configs/gauss_newton/grids/lm_adam_lbfgs_real.yaml``. Each run's
``budget/curve`` (results.json: seconds, steps, val RMSE, test RMSE, written by callbacks.gauss_newton.WallClockBudget)
is one curve; the line is the median over seeds at each evaluation, the band min-max. Cells are named
``<optimizer>_<net>``.
"""
import argparse
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sweep import finished_results  # noqa: E402

NETS = {"w18": "8-18-1", "w64": "8-64-1", "w64x64": "8-64-64-1"}


def curves(root: Path) -> dict[str, dict[str, list[list[list[float]]]]]:
    """net -> optimizer -> one budget curve per seed (the newest finished version of each seed)."""
    out: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for cell in sorted(p for p in root.iterdir() if p.is_dir()):
        optimizer, _, net = cell.name.rpartition("_")
        for seed in sorted(cell.glob("seed_*")):
            results = finished_results(root, cell.name, int(seed.name.removeprefix("seed_")))
            if results is not None:
                out[net][optimizer].append(results["budget/curve"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    data = curves(args.runs)
    nets = [n for n in NETS if n in data]
    if not nets:
        raise SystemExit(f"error: no finished runs of the grid under {args.runs}")
    fig, axes = plt.subplots(1, len(nets), figsize=(4.6 * len(nets), 3.8), squeeze=False)
    for ax, net in zip(axes[0], nets):
        for optimizer, runs in sorted(data[net].items()):
            points = min(len(r) for r in runs)
            t = [statistics.median(r[i][0] for r in runs) for i in range(points)]
            rmse = [[r[i][3] for r in runs] for i in range(points)]
            line, = ax.plot(t, [statistics.median(v) for v in rmse], label=f"{optimizer} ({len(runs)})", lw=1.3)
            ax.fill_between(t, [min(v) for v in rmse], [max(v) for v in rmse], color=line.get_color(), alpha=0.15, lw=0)
        ax.set(title=f"tanh MLP {NETS[net]}", xlabel="training-step wall time (s)", ylabel="test RMSE ($100k)",
               yscale="log")
        ax.grid(alpha=0.3), ax.legend(fontsize=7)
    fig.suptitle("California Housing 16k/2k/2k: test RMSE at equal wall time, median over seeds", fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=130)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
