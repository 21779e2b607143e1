#!/usr/bin/env python
"""Extension (not in the paper): LM flow in the overparameterised regime, rates vs rho and vs conditioning.

    python scripts/gauss_newton_overparam.py --runs runs/gn_overparam --out docs/results/gauss_newton

Synthetic data (n = 64, d = 8, no test split), TwoLayerTanh with m = 40 (p = 320 > n), alpha = 8, dual solver.
For each conditioning (independent rows, near-duplicate rows with eps = 0.05) and rho in {1 (gradient flow),
lambda_0^2, 0.01} it runs to t = 4 (at most 4,000 Euler steps), fits the slope of log g(alpha f(w_t)) against t
over the second half of the run and prints it next to the
linearised prediction -4 gamma / ((1 - rho) gamma + rho) (gamma = lambda_min(K_0), the slowest NTK mode) and
Theorem 1's bound -2 nu lambda_0^2 / (rho + (1 - rho) lambda_0^2) (lambda_0^2 = gamma / 4, nu = 2).
"""
import argparse
import csv
import math
from pathlib import Path

import numpy as np

import train
from datamodules import SyntheticRegressionDataModule
from nets import TwoLayerTanh

N, WIDTH, ALPHA, T_END, MAX_STEPS = 64, 40, 8.0, 4.0, 4000


def spectrum(eps: float) -> tuple[float, float]:
    dm = SyntheticRegressionDataModule(n_train=N, n_test=0, near_duplicates=eps)
    dm.setup()
    J = TwoLayerTanh(8, WIDTH).jacobian(dm.train_xy[0]).detach()
    eig = np.linalg.eigvalsh((J @ J.T).numpy())
    return float(eig[0]), float(eig[-1])


def slope(path: Path) -> tuple[float, float, float]:
    """Least-squares slope of log loss vs t over the second half of the run (the asymptotic, slowest-mode rate),
    leaving out steps where the loss is below 1e-10 of its start (round-off floor)."""
    with open(path / "metrics.csv", newline="") as file:
        rows = [(float(r["train/t"]), float(r["train/loss"])) for r in csv.DictReader(file) if r.get("train/loss")]
    t, loss = np.array(rows).T
    keep = (loss > 1e-10 * loss[0]) & (t >= t[-1] / 2)
    return float(np.polyfit(t[keep], np.log(loss[keep]), 1)[0]), float(t[-1]), float(loss[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    lines = ["| rows | λ_min(K0) = γ | λ0² = γ/4 | ρ | dt | steps | slope of log loss, 2nd half of run | linearised "
             "−4γ/((1−ρ)γ+ρ) | Theorem 1 bound −2νλ0²/(ρ+(1−ρ)λ0²) | final loss |", "|" + "---|" * 10]
    for eps in (0.0, 0.05):
        gamma, gamma_max = spectrum(eps)
        lam0_sq = gamma / 4
        for rho in (1.0, min(lam0_sq, 0.5), 0.01):
            # Euler is stable for dt < 1 / max_mode and the preconditioned spectrum is at most 1 / (1 - rho)
            top = gamma_max / ((1 - rho) * gamma_max + rho)
            dt = min(0.01, 0.5 / top)
            steps = min(MAX_STEPS, math.ceil(T_END / dt))
            name = f"over_eps{eps}_rho{rho:.3g}"
            run = Path(train.run([
                "--model", "lit_modules.GaussNewtonModule", "--model.net", "nets.TwoLayerTanh",
                "--model.net.width", str(WIDTH), "--model.alpha", str(ALPHA), "--model.dt", str(dt),
                "--model.rho", str(rho), "--model.method", "dual" if rho < 1 else "primal",
                "--data", "datamodules.SyntheticRegressionDataModule", "--data.n_train", str(N),
                "--data.n_test", "0", "--data.near_duplicates", str(eps),
                "--trainer.precision", "64-true", "--trainer.accelerator", "cpu",
                "--trainer.max_steps", str(steps), "--trainer.log_every_n_steps", "1",
                "--trainer.default_root_dir", str(args.runs), "--name", name, "--wandb", "false",
                "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"])["run_dir"])
            fitted, t_end, final = slope(run)
            linear = -4 * gamma / ((1 - rho) * gamma + rho)
            bound = -4 * lam0_sq / (rho + (1 - rho) * lam0_sq)
            lines.append(f"| {'near-duplicates ε=0.05' if eps else 'independent'} | {gamma:.4g} | {lam0_sq:.4g} | "
                         f"{rho:.3g} | {dt:.3g} | {steps} (t={t_end:.2f}) | {fitted:.4g} | {linear:.4g} | "
                         f"{bound:.4g} | {final:.3g} |")
            print(lines[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overparam_rates.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
