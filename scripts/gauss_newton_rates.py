#!/usr/bin/env python
"""Rates of LM flow vs rho and conditioning (extension, Theorem 1) from a sweep folder of
``configs/gauss_newton/grids/overparam_rates.yaml``.

    python scripts/gauss_newton_rates.py DIR [--seed 0] [--out FILE.md]

Per cell: the least-squares slope of log loss against t over the second half of the run (the asymptotic,
slowest-mode rate), leaving out steps where the loss is below 1e-10 of its start (round-off floor), beside the
linearised prediction -4 gamma / ((1 - rho) gamma + rho) (gamma = lambda_min(K0), the slowest NTK mode) and
Theorem 1's bound -2 nu lambda_0^2 / (rho + (1 - rho) lambda_0^2) (nu = 2). gamma and lambda_0 come from the
run's results.json, rho and dt from its config.yaml, the loss curve from its metrics.csv.
"""
import argparse
import csv
from pathlib import Path

import numpy as np
import yaml

import sweep as grid_runner

NU = 2.0
GRID = Path(__file__).resolve().parents[1] / "configs/gauss_newton/grids/overparam_rates.yaml"


def fitted_slope(run: Path) -> tuple[float, float, float, int]:
    """(slope, last t, last loss, logged steps) of the run's per-step log-loss curve."""
    with open(run / "metrics.csv", newline="") as file:
        rows = [(float(r["train/t"]), float(r["train/loss"])) for r in csv.DictReader(file) if r.get("train/loss")]
    t, loss = np.array(rows).T
    keep = (loss > 1e-10 * loss[0]) & (t >= t[-1] / 2)
    return float(np.polyfit(t[keep], np.log(loss[keep]), 1)[0]), float(t[-1]), float(loss[-1]), len(rows)


def table(out: Path, seed: int) -> str:
    lines = ["| cell | λ_min(K0) = γ | λ0² | ρ | Δt | steps (t) | fitted slope | linearised −4γ/((1−ρ)γ+ρ) | "
             "Theorem 1 bound −2νλ0²/(ρ+(1−ρ)λ0²) | final loss |", "|" + "---|" * 10]
    for cell in grid_runner.load_grid(GRID).cells:
        results = grid_runner.finished_results(out, cell, seed)
        if results is None:
            lines.append(f"| `{cell}` | not run |" + " |" * 8)
            continue
        run = Path(results["run_dir"])
        model = yaml.safe_load((run / "config.yaml").read_text())["model"]["init_args"]
        rho, dt = float(model["rho"]), float(model["dt"])
        gamma, lam0_sq = results["theory/lambda_min_JtJ0"], results["theory/lambda0"] ** 2
        slope, t_end, final, steps = fitted_slope(run)
        linear = -4 * gamma / ((1 - rho) * gamma + rho)
        bound = -2 * NU * lam0_sq / (rho + (1 - rho) * lam0_sq)
        lines.append(f"| `{cell}` | {gamma:.4g} | {lam0_sq:.4g} | {rho:.3g} | {dt:.3g} | {steps} ({t_end:.2f}) | "
                     f"{slope:.4g} | {linear:.4g} | {bound:.4g} | {final:.3g} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, help="the sweep's --out folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args()
    text = table(args.sweep, args.seed)
    if args.out:
        args.out.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
