"""Figures and summary lines from the resnet_width grids' runs (sweep.py folders).

    .venv/bin/python scripts/resnet_width_plots.py --width DIR [--depth DIR] [--boundary DIR] --outdir docs/results

Each DIR is the ``--out`` of ``sweep.py configs/resnet_width/grids/<grid>.yaml``; every run's results.json is read
with its config.yaml (n, m, H, T). The per-cell means are in DIR/table.md; this script draws what needs one dot per
run and prints the statistics pooled over cells:

- resnet_width_success.png: success fraction (L_T <= 1e-8 L_0) vs m/n per n at H = 10 (width grid), per H at
  n = 32 (depth grid plus the width grid's n = 32 cells), and lambda_min/lambda_max of K_0 vs m/n;
- resnet_width_contraction.png: fitted per-step loss contraction vs (1 - eta lambda_min(K_a))^2;
- resnet_width_kernel.png: lambda_min(K_0) vs the alpha_0^2 bound (3.21);
- resnet_width_boundary.png (with --boundary): lambda_min(K_0) and L_T/L_0 vs m around m = n/d at n = 256.
"""
import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

import matplotlib
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(out: Optional[Path]) -> list[dict[str, Any]]:
    """One record per finished run under a sweep folder: results.json plus n, m, H, d, T from its config.yaml."""
    records = []
    for path in sorted(out.glob("*/seed_*/version_*/results.json")) if out else []:
        config = yaml.safe_load((path.parent / "config.yaml").read_text())
        net, data = config["model"]["init_args"]["net"]["init_args"], config["data"]["init_args"]
        records.append({**json.loads(path.read_text()), "n": data["n"], "d": data["d"], "m": net["width"],
                        "ratio": net["width"] / data["n"], "depth": net["depth"],
                        "max_steps": config["trainer"]["max_steps"]})
    return records


def steps_label(runs: list[dict]) -> str:
    by_n: dict[int, set] = defaultdict(set)
    for r in runs:
        by_n[r["n"]].add(r["max_steps"])
    return ", ".join(f"n={n}: T={'/'.join(map(str, sorted(t)))}" for n, t in sorted(by_n.items()))


def success_curves(ax: plt.Axes, runs: list[dict], key: str, label: str) -> None:
    groups: dict[int, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        groups[r[key]][r["ratio"]].append(r["success"])
    for k, value in enumerate(sorted(groups)):
        ratios = sorted(groups[value])
        offset = 0.015 * k  # keeps overlapping curves visible
        ax.plot(ratios, [statistics.fmean(groups[value][c]) + offset for c in ratios], "o-", label=f"{label}={value}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("m / n")
    ax.set_ylabel("success fraction (L_T <= 1e-8 L_0), offset 0.015/curve", fontsize=9)
    ax.set_ylim(-0.05, 1.1)
    ax.legend(fontsize=8)


def loglog_axes(ax: plt.Axes, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize=8)


def success_figure(width: list[dict], depth: list[dict], outdir: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    success_curves(axes[0], width, "n", "n")
    axes[0].set_title("H = 10, eta = 1/lambda_max(K_0)", fontsize=10)
    success_curves(axes[1], [r for r in depth + width if r["n"] == 32], "depth", "H")
    axes[1].set_title("n = 32, eta = 1/lambda_max(K_0)", fontsize=10)
    for n in sorted({r["n"] for r in width}):
        sel = sorted((r["ratio"], r["ntk/lambda_min_start"] / r["ntk/lambda_max_start"]) for r in width if r["n"] == n)
        axes[2].plot(*zip(*sel), "o", alpha=0.6, label=f"n={n}")
    axes[2].set_xscale("log", base=2)
    axes[2].set_yscale("log")
    axes[2].set(xlabel="m / n", ylabel="eta lambda_min(K_0) = lambda_min / lambda_max")
    axes[2].set_title("H = 10: what sets the rate (one dot per seed)", fontsize=10)
    axes[2].legend(fontsize=8)
    fig.suptitle(f"max steps {steps_label(width + depth)}", fontsize=8)
    fig.tight_layout()
    fig.savefig(outdir / "resnet_width_success.png", dpi=120)


def fitted(runs: list[dict]) -> list[dict]:
    """Runs with a contraction fit and lambda_min(K_a) > 0 (drops NaN and near-singular kernels)."""
    return [r for r in runs if r["rate_measured"] is not None and 1 - r["rate_predicted"] > 0
            and 1 - r["rate_measured"] > 0]


def contraction_figure(runs: list[dict], outdir: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    fits = fitted(runs)
    for depth in sorted({r["depth"] for r in fits}):
        sel = [r for r in fits if r["depth"] == depth]
        ax.scatter([1 - r["rate_predicted"] for r in sel], [1 - r["rate_measured"] for r in sel], s=12, label=f"H={depth}")
    ends = [1 - r[k] for r in fits for k in ("rate_predicted", "rate_measured")]
    ax.plot([min(ends), max(ends)], [min(ends), max(ends)], "k--", lw=1, label="measured = predicted")
    loglog_axes(ax, "1 - (1 - eta lambda_min(K_a))^2  (linearised prediction)", "1 - fitted per-step loss ratio",
                "per-step contraction of the loss")
    fig.tight_layout()
    fig.savefig(outdir / "resnet_width_contraction.png", dpi=120)


def boundary_figure(boundary: list[dict], outdir: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for depth in sorted({r["depth"] for r in boundary}):
        sel = sorted((r for r in boundary if r["depth"] == depth), key=lambda r: r["m"])
        axes[0].plot([r["m"] for r in sel], [max(r["ntk/lambda_min_start"], 1e-12) for r in sel], "o", alpha=0.6,
                     label=f"H={depth}")
        axes[1].plot([r["m"] for r in sel], [1 / r["train/loss_reduction"] for r in sel], "o", alpha=0.6,
                     label=f"H={depth}")
    n, d = boundary[0]["n"], boundary[0]["d"]
    for ax, ylabel in zip(axes, ["lambda_min(K_0)", f"L_T / L_0 (T = {boundary[0]['max_steps']})"]):
        ax.axvline(n / d, color="k", ls="--", lw=1, label="m = n/d")
        ax.set_yscale("log")
        ax.set(xlabel=f"width m (n = {n}, d = {d})", ylabel=ylabel)
        ax.legend(fontsize=8)
    fig.suptitle(f"n = {n}: rank(G1) <= m d, so below m = n/d only the small deeper blocks keep K invertible "
                 "(lambda_min <= 0 drawn at 1e-12)", fontsize=10)
    fig.tight_layout()
    fig.savefig(outdir / "resnet_width_boundary.png", dpi=120)


def kernel_figure(width: list[dict], outdir: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    for n in sorted({r["n"] for r in width}):
        sel = [r for r in width if r["n"] == n]
        ax.scatter([r["ntk/alpha0_sq_bound"] for r in sel], [r["ntk/lambda_min_start"] for r in sel], s=12,
                   label=f"n={n}")
    ends = [r["ntk/alpha0_sq_bound"] for r in width]
    ax.plot([min(ends), max(ends)], [min(ends), max(ends)], "k--", lw=1, label="= bound")
    loglog_axes(ax, "alpha_0^2 bound (3.21), delta' = 0", "lambda_min(K_0)", "H = 10: NTK at initialisation vs the bound")
    fig.tight_layout()
    fig.savefig(outdir / "resnet_width_kernel.png", dpi=120)


def summary(runs: list[dict]) -> None:
    """Statistics pooled over every run: contraction error, the (3.21) bound, laziness."""
    fits = [r for r in runs if r["rate_measured"] is not None and 1 - r["rate_predicted"] > 0]
    for name, sel in (("runs that reached 1e-8 L_0", [r for r in fits if r["success"]]), ("all fitted runs", fits)):
        errors = sorted(abs(r["rate_measured"] - r["rate_predicted"]) / (1 - r["rate_predicted"]) for r in sel)
        if errors:
            print(f"contraction, {name} ({len(errors)}): |rho_measured - rho_predicted| / (1 - rho_predicted) median "
                  f"{statistics.median(errors):.3g}, 90th percentile {errors[int(0.9 * (len(errors) - 1))]:.3g}, "
                  f"max {errors[-1]:.3g}")
    bound = [r["ntk/lambda_min_start"] / r["ntk/alpha0_sq_bound"] for r in runs if r["ntk/lambda_min_start"] > 0]
    if bound:
        print(f"lambda_min(K_0) / alpha_0^2 bound ({len(bound)} runs): min {min(bound):.3g}, "
              f"median {statistics.median(bound):.3g}")
    lazy = [r["ntk/theta_distance"] / r["radius_R"] for r in runs if r["radius_R"]]
    if lazy:
        print(f"||theta_T - theta_0|| / R ({len(lazy)} runs): max {max(lazy):.3g}, median {statistics.median(lazy):.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=Path, required=True, help="sweep folder of grids/width.yaml")
    parser.add_argument("--depth", type=Path, help="sweep folder of grids/depth.yaml")
    parser.add_argument("--boundary", type=Path, help="sweep folder of grids/boundary.yaml")
    parser.add_argument("--outdir", type=Path, default=Path("docs/results"))
    args = parser.parse_args()
    args.outdir.mkdir(parents=True, exist_ok=True)
    width, depth, boundary = load(args.width), load(args.depth), load(args.boundary)
    if not width:
        parser.error(f"no finished runs under {args.width}")
    success_figure(width, depth, args.outdir)
    contraction_figure(width + depth + boundary, args.outdir)
    kernel_figure(width, args.outdir)
    if boundary:
        boundary_figure(boundary, args.outdir)
    summary(width + depth + boundary)


if __name__ == "__main__":
    main()
