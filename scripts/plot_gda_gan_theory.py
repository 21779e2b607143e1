#!/usr/bin/env python
"""Figs. 2 and 9 of Balaji et al. 2021 (the GDA theory model's width sweeps) from sweep folders.

    python scripts/plot_gda_gan_theory.py --fig2 DIR2 --fig9 DIR9 --out docs/results

DIR2 / DIR9 are the ``--out`` of ``sweep.py configs/gan/grids/fig2_gaussian.yaml`` / ``fig9_moons.yaml``
(``DIR/<solver>,k=<k>/seed_<s>/version_<v>/results.json``). Per width: the median over seeds with the min-max band
of the final MSE, the relative movement ||W_T - W_0||_F / ||W_0||_F and the empirical rate per step (dashed: the
predicted rate). Writes gda_gan_fig2.png and gda_gan_fig9.png.
"""
import argparse
import math
import re
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import sweep as grid_runner  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PANELS = (("test/mse", "final MSE |f(W_T) - x_bar|^2 / m", "log"),
          ("train/w_move_rel", "|W_T - W_0|_F / |W_0|_F", "log"),
          ("train/rate_empirical", "empirical rate per step (solid) vs predicted (dashed)", "linear"))
LINES = {"gda": ("o-", "gda (theory eta)"), "optimal_d": ("s-", "optimal_d (theory eta)"),
         "gda_fixed_eta": ("^:", "gda (fixed eta 1e-3)")}


def by_width(out: Path, grid: Path) -> dict[str, dict[int, list[dict]]]:
    """Cell family -> k -> the finished seeds' results; the width is the number ending the cell name (``gda,k=8``
    from an axis, or ``k64``)."""
    runs: dict[str, dict[int, list[dict]]] = {}
    for cell in grid_runner.load_grid(grid).cells:
        base, k = re.fullmatch(r"(.*?),?k=?(\d+)", cell).groups()
        results = [r for s in sorted((out / cell).glob("seed_*"))
                   if (r := grid_runner.finished_results(out, cell, int(s.name.split("_")[1]))) is not None]
        if results:
            runs.setdefault(base, {})[int(k)] = results
    return runs


def spread(values: list[float]) -> tuple[float, float, float]:
    values = sorted(v for v in values if v is not None and math.isfinite(v))
    return statistics.median(values), values[0], values[-1]


def plot(runs: dict[str, dict[int, list[dict]]], path: Path, title: str) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, (key, label, scale) in zip(axes, PANELS):
        for solver, widths in runs.items():
            style, name = LINES[solver]
            ks = sorted(widths)
            mid, low, high = zip(*(spread([r.get(key) for r in widths[k]]) for k in ks))
            line, = ax.plot(ks, mid, style, label=name)
            ax.fill_between(ks, low, high, alpha=0.2, color=line.get_color())
            if key == "train/rate_empirical":
                ax.plot(ks, [spread([r["rate_predicted"] for r in widths[k]])[0] for k in ks], "--",
                        color=line.get_color())
        ax.set(yscale=scale, xlabel="hidden width k")
        ax.set_xscale("log", base=2)
        ax.set_title(label, fontsize=9)
    axes[0].legend(fontsize=8)
    fig.suptitle(title + " (median over seeds, band = min..max)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fig2", type=Path, required=True, help="sweep folder of grids/fig2_gaussian.yaml")
    parser.add_argument("--fig9", type=Path, required=True, help="sweep folder of grids/fig9_moons.yaml")
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    plot(by_width(args.fig2, ROOT / "configs/gan/grids/fig2_gaussian.yaml"), args.out / "gda_gan_fig2.png",
         "Fig. 2: Gaussian mean matching, m=5, d=4, n=100")
    plot(by_width(args.fig9, ROOT / "configs/gan/grids/fig9_moons.yaml"), args.out / "gda_gan_fig9.png",
         "Fig. 9: Two-Moons, m=2, d=4, n=100")


if __name__ == "__main__":
    main()
