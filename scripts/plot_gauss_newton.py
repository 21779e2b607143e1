#!/usr/bin/env python
"""Figs. 1-3 of the Gauss-Newton dynamics paper from the runs' metrics.csv, plus a summary table.

    python scripts/plot_gauss_newton.py --runs ROOT --out docs/results/gauss_newton [--label "synthetic stand-in"]

ROOT holds the runs of scripts/gauss_newton_runs.sh (``<root>/{gn,gf}_alpha<a>/version_<k>/``; the newest
version is used). Writes fig1_gn_loss_distance.png, fig2_gn_riemannian_gradient_lambda_min.png,
fig3_gf_loss_distance.png (+ fig3_gf_stable_dt_vs_gn.png when runs ``gf_alpha<a>_dt<gf-dt>`` exist) and
summary.md into --out.
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


FLOOR = 1e-12  # values below (lambda_min after the exit time) are drawn at the floor of the log axis


def panel(ax: plt.Axes, runs: dict[str, dict], key: str, ylabel: str, log: bool) -> None:
    for alpha, series in runs.items():
        if key in series:
            values = [max(v, FLOOR) for v in series[key]] if log else series[key]
            ax.plot(series["train/t"], values, label=f"α = {ALPHA_LABEL[alpha]}" if alpha in ALPHA_LABEL else alpha, lw=1.4)
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


def log_slope(s: dict, key: str, t0: float, t1: float) -> float:
    """Least-squares slope of log(key) against t on [t0, t1]."""
    pts = [(t, math.log(v)) for t, v in zip(s["train/t"], s.get(key, [])) if t0 <= t <= t1 and v > 0]
    if len(pts) < 2:
        return math.nan
    mt, mv = sum(t for t, _ in pts) / len(pts), sum(v for _, v in pts) / len(pts)
    return sum((t - mt) * (v - mv) for t, v in pts) / sum((t - mt) ** 2 for t, _ in pts)


def summary_row(label: str, alpha: str, s: dict, run: Path) -> str:
    res = json.loads((run / "results.json").read_text()) if (run / "results.json").is_file() else {}
    lam = [v for v in s.get("train/lambda_min", []) if not math.isnan(v)]
    return (f"| {label} | {ALPHA_LABEL[alpha]} | {len(s['train/loss'])} | {s['train/t'][-1]:.2f} | "
            f"{s['train/loss'][0]:.4g} | {s['train/loss'][-1]:.4g} | {min(s['train/loss']):.4g} | "
            f"{s['train/w_dist'][-1]:.4g} | {s.get('train/riem_grad_norm', [math.nan])[-1]:.3g} | "
            f"{min(lam) if lam else math.nan:.3g} | {log_slope(s, 'train/riem_grad_norm', 0.5, 5):.3g} | "
            f"{res.get('exit_time')} | {res.get('fallback_step')} | {res.get('theory/linearised_lsq_loss', '')} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--label", default="", help="data label shown in every title, e.g. 'synthetic stand-in'")
    parser.add_argument("--gf-dt", default="0.001", help="also plot runs named gf_alpha<a>_dt<this> if present")
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
              "min λ_min(JᵀJ) | slope of log‖grad_M g‖, t∈[0.5,5] | exit time T | first fallback step | "
              "‖(I−P0)y‖² |", "|" + "---|" * 14]
    stable = {a: read_series(r) for a in ALPHAS if (r := newest_run(args.runs, f"gf_alpha{a}_dt{args.gf_dt}"))}
    if stable:  # GF at a step below 1 / lambda_max(K0) against GN at the same alpha, same t range
        t_end = max(s["train/t"][-1] for s in stable.values())
        both = {**{f"GN α={ALPHA_LABEL[a]}, Δt=0.01": {k: [v for t, v in zip(s["train/t"], vals) if t <= t_end]
                                            for k, vals in s.items()} for a, s in runs["gn"].items() if a in stable},
                **{f"GF α={ALPHA_LABEL[a]}, Δt={args.gf_dt}": s for a, s in stable.items()}}
        figure(both, [("train/loss", "loss g(αf(w_t))", True), ("train/w_dist", "‖w_t − w_0‖₂", True)],
               f"Fig. 3 with a stable gradient-flow step{suffix}", args.out / "fig3_gf_stable_dt_vs_gn.png")
    lines = header + [summary_row(kind.upper(), a, s, newest_run(args.runs, f"{kind}_alpha{a}"))
                      for kind in ("gn", "gf") for a, s in runs[kind].items()]
    lines += [summary_row(f"GF Δt={args.gf_dt}", a, s, newest_run(args.runs, f"gf_alpha{a}_dt{args.gf_dt}"))
              for a, s in stable.items()]
    (args.out / "summary.md").write_text(f"Data: {args.label or 'see the run configs'}\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
