#!/usr/bin/env python
"""Figs. 1-3 of the Gauss-Newton dynamics paper from the runs' metrics.csv, plus a summary table.

    python scripts/plot_gauss_newton.py --runs ROOT --out docs/results/gauss_newton [--label "synthetic stand-in"]

ROOT holds the runs of scripts/gauss_newton_runs.sh (``<root>/{gn,gf}_alpha<a>/version_<k>/``; the newest
version is used). Writes fig1_gn_loss_distance.png, fig2_gn_riemannian_gradient_lambda_min.png,
fig3_gf_loss_distance.png and summary.md into --out.
"""
import argparse
import csv
import json
import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ALPHAS = ("0.125", "8", "16", "256")
ALPHA_LABEL = {"0.125": "1/8", "8": "8", "16": "16", "256": "256"}


def newest_run(root: Path, name: str) -> Path | None:
    versions = [p for p in (root / name).glob("version_*") if (p / "metrics.csv").is_file()]
    return max(versions, key=lambda p: int(re.sub(r"\D", "", p.name) or -1)) if versions else None


def read_series(run: Path) -> dict[str, list[float]]:
    """Columns of the per-step rows (those with a train/loss), as floats."""
    with open(run / "metrics.csv", newline="") as file:
        rows = [r for r in csv.DictReader(file) if r.get("train/loss")]
    return {k: [float(r[k]) if r.get(k) else math.nan for r in rows] for k in rows[0]} if rows else {}


def panel(ax: plt.Axes, runs: dict[str, dict], key: str, ylabel: str, log: bool) -> None:
    for alpha, series in runs.items():
        if key in series:
            ax.plot(series["train/t"], series[key], label=f"α = {ALPHA_LABEL[alpha]}", lw=1.4)
    ax.set_xlabel("t"), ax.set_ylabel(ylabel), ax.grid(alpha=0.3), ax.legend()
    if log:
        ax.set_yscale("log")


def figure(runs: dict[str, dict], panels: list[tuple[str, str, bool]], title: str, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (key, ylabel, log), tag in zip(axes, panels, "ab"):
        panel(ax, runs, key, ylabel, log)
        ax.set_title(f"({tag}) {ylabel}", fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def summary_rows(kind: str, runs: dict[str, dict], root: Path) -> list[str]:
    rows = []
    for alpha, s in runs.items():
        results_file = newest_run(root, f"{kind}_alpha{alpha}") / "results.json"
        res = json.loads(results_file.read_text()) if results_file.is_file() else {}
        lam = [v for v in s.get("train/lambda_min", []) if not math.isnan(v)]
        rows.append(f"| {kind.upper()} | {ALPHA_LABEL[alpha]} | {len(s['train/loss'])} | {s['train/t'][-1]:.2f} | "
                    f"{s['train/loss'][0]:.4g} | {s['train/loss'][-1]:.4g} | {min(s['train/loss']):.4g} | "
                    f"{s['train/w_dist'][-1]:.4g} | {s.get('train/riem_grad_norm', [math.nan])[-1]:.3g} | "
                    f"{min(lam) if lam else math.nan:.3g} | {res.get('exit_time')} | {res.get('fallback_step')} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--label", default="", help="data label shown in every title, e.g. 'synthetic stand-in'")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = f" — {args.label}" if args.label else ""
    runs = {kind: {a: read_series(r) for a in ALPHAS if (r := newest_run(args.runs, f"{kind}_alpha{a}"))}
            for kind in ("gn", "gf")}
    figure(runs["gn"], [("train/loss", "loss g(αf(w_t))", True), ("train/w_dist", "‖w_t − w_0‖₂", True)],
           f"Fig. 1: Gauss-Newton flow (ρ = 0){suffix}", args.out / "fig1_gn_loss_distance.png")
    figure(runs["gn"], [("train/riem_grad_norm", "‖grad_M g(αf(w_t))‖₂ (norm, not squared)", True),
                        ("train/lambda_min", "λ_min(DfᵀDf)", True)],
           f"Fig. 2: Gauss-Newton flow (ρ = 0){suffix}", args.out / "fig2_gn_riemannian_gradient_lambda_min.png")
    figure(runs["gf"], [("train/loss", "loss g(αf(w_t))", True), ("train/w_dist", "‖w_t − w_0‖₂", True)],
           f"Fig. 3: gradient flow (ρ = 1){suffix}", args.out / "fig3_gf_loss_distance.png")
    header = ["| run | α | steps | t_end | loss(0) | loss(end) | min loss | ‖w−w0‖ end | ‖grad_M g‖ end | "
              "min λ_min(JᵀJ) | exit time T | first fallback step |", "|" + "---|" * 12]
    lines = header + summary_rows("gn", runs["gn"], args.runs) + summary_rows("gf", runs["gf"], args.runs)
    (args.out / "summary.md").write_text(f"Data: {args.label or 'see the run configs'}\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
