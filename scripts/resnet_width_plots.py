"""Plots and a summary table from scripts/resnet_width_sweep.py output.

    .venv/bin/python scripts/resnet_width_plots.py docs/results/resnet_width_sweep.jsonl --outdir docs/results

Writes resnet_width_success.png (success fraction vs m/n, per n at H = 10 and per H at n = 32, and
lambda_min/lambda_max of K_0 vs m/n),
resnet_width_contraction.png (fitted per-step loss contraction vs (1 - eta lambda_min(K_t))^2) and
resnet_width_kernel.png (lambda_min(K_0) vs the alpha_0^2 bound (3.21)) and, when the n = 256 "boundary" grid
ran, resnet_width_boundary.png (lambda_min(K_0) and L_T/L_0 vs m around m = n/d); prints a markdown table.
"""
import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(path: Path) -> list[dict]:
    """One record per (n, m, H, seed, lr_scale, labels): the run with the most steps allowed."""
    best: dict[tuple, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            key = (r["n"], r["m"], r["depth"], r["seed"], r["lr_scale"], r["labels"])
            if key not in best or r["max_steps"] > best[key]["max_steps"]:
                best[key] = r
    return list(best.values())


def steps_label(runs: list[dict]) -> str:
    by_n: dict[int, set] = defaultdict(set)
    for r in runs:
        by_n[r["n"]].add(r["max_steps"])
    return ", ".join(f"n={n}: T={'/'.join(map(str, sorted(t)))}" for n, t in sorted(by_n.items()))


def success_curves(ax: plt.Axes, runs: list[dict], key: str, label: str) -> None:
    groups: dict[int, dict[float, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        groups[r[key]][r["ratio"]].append(r["success"])
    for k, value in enumerate(sorted(groups)):
        ratios = sorted(groups[value])
        offset = 0.015 * k  # keeps overlapping curves visible
        ax.plot(ratios, [sum(groups[value][c]) / len(groups[value][c]) + offset for c in ratios], "o-",
                label=f"{label}={value}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("m / n")
    ax.set_ylabel("success fraction (L_T <= 1e-8 L_0), offset 0.015/curve", fontsize=9)
    ax.set_ylim(-0.05, 1.1)
    ax.legend(fontsize=8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jsonl", type=Path)
    parser.add_argument("--outdir", type=Path, default=Path("docs/results"))
    parser.add_argument("--lr-scale", type=float, default=1.0, help="runs to use; figures only for 1.0 and sign")
    parser.add_argument("--labels", choices=["sign", "gaussian"], default="sign")
    args = parser.parse_args()
    runs = [r for r in load(args.jsonl) if r["lr_scale"] == args.lr_scale and r["labels"] == args.labels]
    if (args.lr_scale, args.labels) == (1.0, "sign"):
        figures(runs, args.outdir)
    table(runs)


def figures(runs: list[dict], outdir: Path) -> None:

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    width_runs = [r for r in runs if r["depth"] == 10 and r["n"] <= 128]
    success_curves(axes[0], width_runs, "n", "n")
    axes[0].set_title("H = 10, eta = 1/lambda_max(K_0)", fontsize=10)
    success_curves(axes[1], [r for r in runs if r["n"] == 32], "depth", "H")
    axes[1].set_title("n = 32, eta = 1/lambda_max(K_0)", fontsize=10)
    for n in sorted({r["n"] for r in width_runs}):
        sel = sorted((r["ratio"], r["start"]["lambda_min"] / r["start"]["lambda_max"]) for r in width_runs if r["n"] == n)
        axes[2].plot(*zip(*sel), "o", alpha=0.6, label=f"n={n}")
    axes[2].set_xscale("log", base=2)
    axes[2].set_yscale("log")
    axes[2].set_xlabel("m / n")
    axes[2].set_ylabel("eta lambda_min(K_0) = lambda_min / lambda_max")
    axes[2].set_title("H = 10: what sets the rate (one dot per seed)", fontsize=10)
    axes[2].legend(fontsize=8)
    fig.suptitle(f"max steps {steps_label(runs)}", fontsize=8)
    fig.tight_layout()
    fig.savefig(outdir / "resnet_width_success.png", dpi=120)

    fig, ax = plt.subplots(figsize=(5, 5))
    fitted = [r for r in runs if r["rate_fit_steps"][1] > r["rate_fit_steps"][0]
              and 1 - r["rate_predicted"] > 0 and 1 - r["rate_measured"] > 0]  # drops lambda_min <= 0 and NaN
    for depth in sorted({r["depth"] for r in fitted}):
        sel = [r for r in fitted if r["depth"] == depth]
        ax.scatter([1 - r["rate_predicted"] for r in sel], [1 - r["rate_measured"] for r in sel], s=12, label=f"H={depth}")
    lo = min(min(1 - r["rate_predicted"], 1 - r["rate_measured"]) for r in fitted)
    hi = max(max(1 - r["rate_predicted"], 1 - r["rate_measured"]) for r in fitted)
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="measured = predicted")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("1 - (1 - eta lambda_min(K_t))^2  (linearised prediction)")
    ax.set_ylabel("1 - fitted per-step loss ratio")
    ax.set_title("per-step contraction of the loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(outdir / "resnet_width_contraction.png", dpi=120)

    boundary = [r for r in runs if r["n"] == 256]
    if boundary:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for depth in sorted({r["depth"] for r in boundary}):
            sel = sorted((r for r in boundary if r["depth"] == depth), key=lambda r: r["m"])
            axes[0].plot([r["m"] for r in sel], [max(r["start"]["lambda_min"], 1e-12) for r in sel], "o",
                         alpha=0.6, label=f"H={depth}")
            axes[1].plot([r["m"] for r in sel], [r["loss_end"] / r["loss_start"] for r in sel], "o", alpha=0.6,
                         label=f"H={depth}")
        for ax, ylabel in zip(axes, ["lambda_min(K_0)", f"L_T / L_0 (T = {boundary[0]['max_steps']})"]):
            ax.axvline(256 / boundary[0]["d"], color="k", ls="--", lw=1, label="m = n/d")
            ax.set_yscale("log")
            ax.set_xlabel("width m (n = 256, d = 10)")
            ax.set_ylabel(ylabel)
            ax.legend(fontsize=8)
        fig.suptitle("n = 256: rank(G1) <= m d, so below m = n/d only the small deeper blocks keep K invertible "
                     "(lambda_min <= 0 drawn at 1e-12)", fontsize=10)
        fig.tight_layout()
        fig.savefig(outdir / "resnet_width_boundary.png", dpi=120)

    fig, ax = plt.subplots(figsize=(5, 5))
    for n in sorted({r["n"] for r in runs}):
        sel = [r for r in runs if r["n"] == n and r["depth"] == 10]
        ax.scatter([r["alpha0_sq_bound"] for r in sel], [r["start"]["lambda_min"] for r in sel], s=12, label=f"n={n}")
    ends = [r["alpha0_sq_bound"] for r in runs]
    ax.plot([min(ends), max(ends)], [min(ends), max(ends)], "k--", lw=1, label="= bound")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("alpha_0^2 bound (3.21), delta' = 0")
    ax.set_ylabel("lambda_min(K_0)")
    ax.set_title("H = 10: NTK at initialisation vs the bound")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(outdir / "resnet_width_kernel.png", dpi=120)



def table(runs: list[dict]) -> None:
    print("| n | m | m/n | H | p | T | seeds | success | median steps to 1e-8 | max L_T/L_0 | median lambda_min(K_0) | median lambda_min(K_T) "
          "| median lambda_min(G1_0)/lambda_min(K_0) | median lambda(X) | median theta dist | median R |")
    print("|" + "---|" * 16)
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        cells[(r["depth"], r["n"], r["m"])].append(r)
    med = lambda xs: statistics.median(xs)  # noqa: E731
    for (depth, n, m), rs in sorted(cells.items()):
        reached = [r["steps_to_1e-8"] for r in rs if r["steps_to_1e-8"] is not None]
        p = m * rs[0]["d"] + (depth - 1) * m * m
        print(f"| {n} | {m} | {m / n:g} | {depth} | {p} | {max(r['max_steps'] for r in rs)} | {len(rs)} "
              f"| {sum(r['success'] for r in rs)}/{len(rs)} | {med(reached) if reached else '-'} "
              f"| {max(r['loss_end'] / r['loss_start'] for r in rs):.1e} | {med([r['start']['lambda_min'] for r in rs]):.3g} "
              f"| {med([r['end']['lambda_min'] for r in rs]):.3g} "
              f"| {med([r['start']['first_layer_lambda_min'] / r['start']['lambda_min'] for r in rs]):.3f} "
              f"| {med([r['data_kernel_lambda_min'] for r in rs]):.3g} | {med([r['theta_distance'] for r in rs]):.3g} "
              f"| {med([r['radius_R'] or float('inf') for r in rs]):.3g} |")

    fitted = [r for r in runs if r["rate_fit_steps"][1] > r["rate_fit_steps"][0] and 1 - r["rate_predicted"] > 0]
    for name, sel in (("runs that reached 1e-8 L_0", [r for r in fitted if r["success"]]), ("all fitted runs", fitted)):
        errors = sorted(abs(r["rate_measured"] - r["rate_predicted"]) / (1 - r["rate_predicted"]) for r in sel)
        if errors:
            print(f"contraction, {name} ({len(errors)}): |rho_measured - rho_predicted| / (1 - rho_predicted) median "
                  f"{statistics.median(errors):.3g}, 90th percentile {errors[int(0.9 * (len(errors) - 1))]:.3g}, "
                  f"max {errors[-1]:.3g}")
    bound = [r["start"]["lambda_min"] / r["alpha0_sq_bound"] for r in runs if r["start"]["lambda_min"] > 0]
    if bound:
        print(f"lambda_min(K_0) / alpha_0^2 bound: min {min(bound):.3g}, median {statistics.median(bound):.3g}")
    lazy = [r["theta_distance"] / r["radius_R"] for r in runs if r["radius_R"]]
    if lazy:
        print(f"||theta_T - theta_0|| / R: max {max(lazy):.3g}, median {statistics.median(lazy):.3g}")


if __name__ == "__main__":
    main()
