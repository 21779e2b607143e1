#!/usr/bin/env python
"""Width sweeps of the GDA theory model: Fig. 2 (Gaussian mean) and Fig. 9 (Two-Moons) of Balaji et al. 2021.

    python scripts/gda_gan_sweep.py --out docs/results [--ks 1 2 4 ... 1024] [--seeds 0 1 2] [--steps 10000]
    python scripts/gda_gan_sweep.py --out docs/results --plot-only

Each point builds exactly the state ``train.py --config configs/gan/synthetic_gaussian_k<k>.yaml --seed S`` builds
(SyntheticGDAModule after seeding, the datamodule's data), then iterates the closed-form updates of
nets/gda_gan/theory.py, which tests/gda_gan/test_synthetic_module.py checks against the Lightning steps: a loop without the
trainer is ~20x faster on CPU. Writes gda_gan_sweep.json and gda_gan_fig2.png / gda_gan_fig9.png.
"""
import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from datamodules import GaussianMeanDataModule, TwoMoonsDataModule
from lit_modules import SyntheticGDAModule
from nets.gda_gan import theory

CONVERGED = 1e-12  # residual ratio below which the empirical rate stops being measured (float64 floor)


def run_point(dataset: str, solver: str, k: int, seed: int, steps: int, eta: float | None,
              record_every: int) -> dict[str, Any]:
    data = GaussianMeanDataModule(dim=5, n=100, mean_scale=3.0, seed=0) if dataset == "gaussian" else \
        TwoMoonsDataModule(n=100, noise=0.1, seed=0)
    data.setup()
    torch.manual_seed(seed)
    model = SyntheticGDAModule(data_dim=data.dim, latent_dim=4, k=k, n_latent=100, solver=solver, mu=0.5, eta=eta)
    V, Z, W0, x_bar = model.V, model.Z, model.W0, data.data.mean(0)
    W, d = W0.clone(), torch.zeros_like(x_bar)
    r0 = float(torch.linalg.vector_norm(theory.generator_mean(W, V, Z) - x_bar))
    curve, t_conv, ratio = [], steps, 1.0
    for t in range(1, steps + 1):
        if solver == "gda":
            W, d = theory.gda_step(W, d, V, Z, x_bar, model.eta, 0.5)
        else:
            W = theory.optimal_d_step(W, V, Z, x_bar, model.eta)
        if t % record_every == 0 or t == steps:
            ratio = float(torch.linalg.vector_norm(theory.generator_mean(W, V, Z) - x_bar)) / r0
            curve.append(ratio)
            if ratio < CONVERGED and t_conv == steps:
                t_conv = t
            if not math.isfinite(ratio):
                break
    residual = ratio * r0
    rate_ratio = curve[t_conv // record_every - 1] if t_conv < steps else ratio
    return {"dataset": dataset, "solver": solver, "eta_rule": "fixed" if eta else "theory", "k": k, "seed": seed,
            "steps": steps, "eta": model.eta, "beta_hat": model.beta_hat, "alpha_hat": model.alpha_hat,
            "residual": residual, "residual_ratio": ratio, "mse": residual ** 2 / x_bar.numel(),
            "w_move_rel": float(torch.linalg.matrix_norm(W - W0) / torch.linalg.matrix_norm(W0)),
            "rate_empirical": rate_ratio ** (1 / t_conv) if math.isfinite(rate_ratio) and rate_ratio > 0 else None,
            "rate_predicted": model.rate_predicted, "curve_every": record_every, "curve": curve}


def summarize(points: list[dict[str, Any]], key: str) -> dict[tuple, tuple[float, float, float]]:
    """(dataset, solver, eta_rule, k) -> (median, min, max) of ``key`` over seeds."""
    groups: dict[tuple, list[float]] = {}
    for p in points:
        if p[key] is not None and math.isfinite(p[key]):
            groups.setdefault((p["dataset"], p["solver"], p["eta_rule"], p["k"]), []).append(p[key])
    return {g: (sorted(v)[len(v) // 2], min(v), max(v)) for g, v in groups.items()}


def plot(points: list[dict[str, Any]], dataset: str, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, key, label in zip(axes, ("mse", "w_move_rel", "rate_empirical"),
                              ("final MSE |f(W_T) - x_bar|^2 / m", "|W_T - W_0|_F / |W_0|_F",
                               "empirical rate per step (solid) vs predicted (dashed)")):
        stats = summarize(points, key)
        for (solver, rule), style in ((("gda", "theory"), "o-"), (("optimal_d", "theory"), "s-"),
                                      (("gda", "fixed"), "^:")):
            rows = sorted((k, v) for (d, s, r, k), v in stats.items() if (d, s, r) == (dataset, solver, rule))
            if not rows:
                continue
            ks, (mid, low, high) = [k for k, _ in rows], zip(*(v for _, v in rows))
            line, = ax.plot(ks, mid, style, label=f"{solver} ({rule} eta)")
            ax.fill_between(ks, low, high, alpha=0.2, color=line.get_color())
            if key == "rate_empirical":
                pred = summarize(points, "rate_predicted")
                ax.plot(ks, [pred[(dataset, solver, rule, k)][0] for k in ks], "--", color=line.get_color())
        ax.set_xscale("log", base=2)
        ax.set_yscale("log" if key != "rate_empirical" else "linear")
        ax.set_xlabel("hidden width k")
        ax.set_title(label, fontsize=9)
    axes[0].legend(fontsize=8)
    fig.suptitle(title + " (median over seeds, band = min..max)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plots(points: list[dict[str, Any]], out: Path) -> None:
    plot(points, "gaussian", out / "gda_gan_fig2.png", "Fig. 2: Gaussian mean matching, m=5, d=4, n=100")
    plot(points, "moons", out / "gda_gan_fig9.png", "Fig. 9: Two-Moons, m=2, d=4, n=100")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--ks", type=int, nargs="+", default=[2 ** i for i in range(11)])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--fixed-eta", type=float, default=1e-3, help="the k-independent step of the Fig. 2 confound")
    parser.add_argument("--record-every", type=int, default=100)
    parser.add_argument("--plot-only", action="store_true", help="redraw the PNGs from OUT/gda_gan_sweep.json")
    args = parser.parse_args()
    if args.plot_only:
        plots(json.loads((args.out / "gda_gan_sweep.json").read_text())["points"], args.out)
        return
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    start, points = time.time(), []
    for dataset in ("gaussian", "moons"):
        variants = [("gda", None), ("optimal_d", None)] + ([("gda", args.fixed_eta)] if dataset == "gaussian" else [])
        for solver, eta in variants:
            for k in args.ks:
                for seed in args.seeds:
                    points.append(run_point(dataset, solver, k, seed, args.steps, eta, args.record_every))
                    p = points[-1]
                    print(f"{dataset:8s} {solver:9s} {p['eta_rule']:6s} k={k:5d} seed={seed} mse={p['mse']:.3g} "
                          f"move={p['w_move_rel']:.3f} rate={p['rate_empirical']} pred={p['rate_predicted']:.6f}",
                          flush=True)
    flags = " ".join(f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                     for k, v in vars(args).items() if k != "plot_only")
    meta = {"command": f"python scripts/gda_gan_sweep.py {flags}",
        "m_gaussian": 5, "m_moons": 2, "latent_dim": 4, "n": 100, "mu": 0.5, "sigmas": 1.0,
        "beta_hat": "2 |J(W_0)| measured", "seconds": round(time.time() - start, 1)}
    (args.out / "gda_gan_sweep.json").write_text(json.dumps({"meta": meta, "points": points}, indent=1) + "\n")
    plots(points, args.out)
    print(f"done in {meta['seconds']} s")


if __name__ == "__main__":
    main()
