#!/usr/bin/env python
"""Figs. 1-3 of the Gauss-Newton dynamics paper over seeds, from a sweep folder, plus a summary table.

    python scripts/plot_gauss_newton.py --runs DIR --out docs/results/gauss_newton_real [--label "..."]

DIR is the ``--out`` of ``sweep.py configs/gauss_newton/grids/figs1_3_real.yaml`` (``DIR/<cell>/seed_<s>/version_<k>/``,
cells ``{gn,gf}_alpha<a>`` and ``gf_alpha<a>_dt<dt>``; the newest version of each seed is used). Every curve is the
median over seeds at each step, with the min-max band. Writes fig1_gn_loss_distance.png,
fig2_gn_riemannian_gradient_lambda_min.png, fig3_gf_loss_distance.png (+ fig3_gf_stable_dt_vs_gn.png when the
stable-step GF cells have runs) and summary.md (median [min, max] over seeds) into --out.
"""
import argparse
import csv
import json
import math
import re
import statistics
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ALPHAS = ("0.125", "8", "16", "256")
ALPHA_LABEL = {"0.125": "1/8", "8": "8", "16": "16", "256": "256"}


def seed_runs(root: Path, cell: str) -> list[Path]:
    """The newest finished-or-not version of every seed of ``cell``."""
    runs = []
    for seed in sorted((root / cell).glob("seed_*")):
        versions = [p for p in seed.glob("version_*") if (p / "metrics.csv").is_file()]
        if versions:
            runs.append(max(versions, key=lambda p: int(re.sub(r"\D", "", p.name) or -1)))
    return runs


def read_series(run: Path) -> dict[str, list[float]]:
    """Columns of the per-step rows (those with a train/loss), as floats."""
    with open(run / "metrics.csv", newline="") as file:
        rows = [r for r in csv.DictReader(file) if r.get("train/loss")]
    return {k: [float(r[k]) if r.get(k) else math.nan for r in rows] for k in rows[0]} if rows else {}


def over_seeds(series: list[dict[str, list[float]]], key: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """t, median, min and max of ``key`` at each step over the seeds that reached it (NaNs skipped)."""
    t, med, lo, hi = [], [], [], []
    for i in range(max((len(s.get(key, [])) for s in series), default=0)):
        values = [s[key][i] for s in series if i < len(s.get(key, [])) and not math.isnan(s[key][i])]
        if values:
            t.append(next(s["train/t"][i] for s in series if i < len(s["train/t"])))
            med.append(statistics.median(values)), lo.append(min(values)), hi.append(max(values))
    return t, med, lo, hi


FLOOR = 1e-12  # values below (lambda_min after the exit time) are drawn at the floor of the log axis


def panel(ax: plt.Axes, runs: dict[str, list[dict]], key: str, ylabel: str, log: bool) -> None:
    for name, series in runs.items():
        t, med, lo, hi = over_seeds(series, key)
        if not t:
            continue
        clip = (lambda v: [max(x, FLOOR) for x in v]) if log else (lambda v: v)  # noqa: E731
        label = (f"α = {ALPHA_LABEL[name]}" if name in ALPHA_LABEL else name) + f" ({len(series)} seeds)"
        line, = ax.plot(t, clip(med), label=label, lw=1.4)
        ax.fill_between(t, clip(lo), clip(hi), color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel("t"), ax.set_ylabel(ylabel), ax.grid(alpha=0.3), ax.legend(fontsize=8)
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


def spread(values: list[float]) -> str:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return ""
    return f"{statistics.median(values):.4g} [{min(values):.3g}, {max(values):.3g}]"


def loss_at(s: dict, t: float) -> Optional[float]:
    """The loss at the last logged step with time <= t (None if the run ended clearly before t), so runs with
    different Euler steps compare at the same flow time."""
    if not s["train/t"] or s["train/t"][-1] < 0.999 * t:
        return None
    return max((tt, v) for tt, v in zip(s["train/t"], s["train/loss"]) if tt <= t + 1e-9)[1]


def summary_row(label: str, alpha: str, series: list[dict], runs: list[Path]) -> str:
    results = [json.loads((r / "results.json").read_text()) if (r / "results.json").is_file() else {} for r in runs]
    last = lambda key: [s[key][-1] for s in series if s.get(key)]  # noqa: E731
    lam = [min((v for v in s.get("train/lambda_min", []) if not math.isnan(v)), default=math.nan) for s in series]
    return (f"| {label} | {ALPHA_LABEL[alpha]} | {len(series)} | {spread(last('train/t'))} | "
            f"{spread([loss_at(s, 0.5) for s in series])} | {spread([loss_at(s, 3.0) for s in series])} | "
            f"{spread(last('train/loss'))} | {spread([min(s['train/loss']) for s in series])} | "
            f"{spread(last('train/w_dist'))} | {spread(last('train/riem_grad_norm'))} | {spread(lam)} | "
            f"{spread([log_slope(s, 'train/riem_grad_norm', 0.5, 5) for s in series])} | "
            f"{spread([r.get('exit_time') for r in results])} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, required=True, help="the sweep folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--label", default="", help="data label shown in every title, e.g. 'synthetic stand-in'")
    parser.add_argument("--gf-dt", default="0.0005", help="the stable-step GF cells gf_alpha<a>_dt<this>")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = f" — {args.label}" if args.label else ""
    paths = {(kind, a): seed_runs(args.runs, f"{kind}_alpha{a}") for kind in ("gn", "gf", "gf_dt") for a in ALPHAS}
    paths = {(kind, a): seed_runs(args.runs, f"gf_alpha{a}_dt{args.gf_dt}") if kind == "gf_dt" else runs
             for (kind, a), runs in paths.items()}
    series = {key: [s for s in map(read_series, runs) if s] for key, runs in paths.items()}
    by_kind = {kind: {a: series[(kind, a)] for a in ALPHAS if series[(kind, a)]} for kind in ("gn", "gf", "gf_dt")}
    figure(by_kind["gn"], [("train/loss", "loss g(αf(w_t))", True), ("train/w_dist", "‖w_t − w_0‖₂", True)],
           f"Fig. 1: Gauss-Newton flow (ρ = 0){suffix}", args.out / "fig1_gn_loss_distance.png")
    figure(by_kind["gn"], [("train/riem_grad_norm", "‖grad_M g(αf(w_t))‖₂ (norm, not squared)", True),
                           ("train/lambda_min", "λ_min(DfᵀDf)", True)],
           f"Fig. 2: Gauss-Newton flow (ρ = 0){suffix}", args.out / "fig2_gn_riemannian_gradient_lambda_min.png")
    figure(by_kind["gf"], [("train/loss", "loss g(αf(w_t))", True), ("train/w_dist", "‖w_t − w_0‖₂", True)],
           f"Fig. 3: gradient flow (ρ = 1){suffix}", args.out / "fig3_gf_loss_distance.png")
    if by_kind["gf_dt"]:  # GF at a step below 1 / lambda_max(K0) against GN at the same alpha, same t range
        t_end = max(s["train/t"][-1] for runs in by_kind["gf_dt"].values() for s in runs)
        cut = lambda s: {k: [v for t, v in zip(s["train/t"], vals) if t <= t_end] for k, vals in s.items()}  # noqa
        both = {**{f"GN α={ALPHA_LABEL[a]}, Δt=0.01": [cut(s) for s in by_kind["gn"][a]]
                   for a in by_kind["gf_dt"] if a in by_kind["gn"]},
                **{f"GF α={ALPHA_LABEL[a]}, Δt={args.gf_dt}": runs for a, runs in by_kind["gf_dt"].items()}}
        figure(both, [("train/loss", "loss g(αf(w_t))", True), ("train/w_dist", "‖w_t − w_0‖₂", True)],
               f"Fig. 3 with a stable gradient-flow step{suffix}", args.out / "fig3_gf_stable_dt_vs_gn.png")
    header = ["| run | α | seeds | t_end | loss(t=0.5) | loss(t=3) | loss(end) | min loss | ‖w−w0‖ end | ‖grad_M g‖ end | "
              "min λ_min(JᵀJ) | slope of log‖grad_M g‖, t∈[0.5,5] | exit time T |", "|" + "---|" * 13,
              ]
    labels = {"gn": "GN", "gf": "GF", "gf_dt": f"GF Δt={args.gf_dt}"}
    lines = header + [summary_row(labels[kind], a, by_kind[kind][a], paths[(kind, a)])
                      for kind in ("gn", "gf", "gf_dt") for a in by_kind[kind]]
    (args.out / "summary.md").write_text(f"Data: {args.label or 'see the run configs'}; median [min, max] over seeds\n\n"
                                         + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
