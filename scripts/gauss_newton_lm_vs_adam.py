#!/usr/bin/env python
"""Minibatch LM (configs/gauss_newton/lm_cnn2_fmnist.yaml) vs Adam (configs/baseline/cnn2_fmnist.yaml) on CNN2 /
Fashion-MNIST under the same wall-clock budget, same data, seed and batch size; one process after the other.

    python scripts/gauss_newton_lm_vs_adam.py --runs runs/lm_vs_adam --out docs/results/gauss_newton \
        [--seconds 120] [--data-root data] [--batch-size 256]

Writes lm_vs_adam.png (train loss vs wall time, the time axis from each run's mean seconds per step) and
lm_vs_adam.md.
"""
import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import train

CONFIGS = {"LM (square-root GGN, CG)": "configs/gauss_newton/lm_cnn2_fmnist.yaml",
           "Adam lr=1e-3": "configs/baseline/cnn2_fmnist.yaml"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    fig, ax = plt.subplots(figsize=(6, 4))
    lines = ["| optimiser | steps | s/step | final train loss (last logged) | val acc | test acc |", "|---|---|---|---|---|---|"]
    for label, config in CONFIGS.items():
        name = "lm" if "LM" in label else "adam"
        res = train.run(["--config", config, "--data.root", args.data_root, "--data.download", "false",
                           "--data.batch_size", str(args.batch_size), "--trainer.max_epochs", "100",
                           "--trainer.max_time", f"00:00:00:{args.seconds}", "--trainer.log_every_n_steps", "1",
                           "--trainer.default_root_dir", str(args.runs), "--name", name, "--wandb", "false",
                           "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"])
        run = Path(res["run_dir"])
        with open(run / "metrics.csv", newline="") as file:
            rows = [(int(r["step"]), float(r["train/loss"])) for r in csv.DictReader(file) if r.get("train/loss")]
        per_step = res["train_seconds"] / max(res["global_step"], 1)
        ax.plot([s * per_step for s, _ in rows], [v for _, v in rows], label=label)
        lines.append(f"| {label} | {res['global_step']} | {per_step:.3f} | {rows[-1][1]:.4f} | "
                     f"{res.get('val/acc', float('nan')):.4f} | {res.get('test/acc', float('nan')):.4f} |")
    ax.set_xlabel("wall time (s, 1 CPU thread)"), ax.set_ylabel("train loss (minibatch CE)"), ax.set_yscale("log")
    ax.set_title(f"CNN2 / Fashion-MNIST ({args.data_root}), batch {args.batch_size}, {args.seconds} s each")
    ax.legend(), ax.grid(alpha=0.3)
    args.out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(), fig.savefig(args.out / "lm_vs_adam.png", dpi=130)
    (args.out / "lm_vs_adam.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
