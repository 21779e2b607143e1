"""Sample-size sweep of Neuron Pursuit vs the small-initialisation GD baseline (Figs. 7-9 style).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/np_sample_sweep.py --task g1 --n 100 400 1600 --seeds 0 1 \
        --np_epochs_per_stage 10 --max_iterations 8 --gd_epochs 60 --n_test 20000

For every (n, seed) it runs train.py in-process for NP (configs/neuron_pursuit/<np config>.yaml) at each of the
paper's two NP step sizes and for the GD baseline (configs/neuron_pursuit/gd_baseline_<task>.yaml) at each of the
paper's three step sizes (``--np_lrs`` / ``--gd_lrs`` override them). It reports NP by the C.1.1 rule and GD by
the lowest test error, and writes <out>.json (every run plus the reported ones) and <out>.png (test relative
error, NP training error and NP iteration count against n; one point per seed, lines through the means).
Each Lightning step of these configs is 1000 GD steps (``lightning_steps`` in the JSON).
"""
import argparse
import json
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent

# task -> (NP config, the paper's two NP step sizes, the paper's three GD-baseline step sizes) (paper Figs. 7-9, App. C)
TASKS: dict[str, tuple[str, tuple[float, ...], tuple[float, ...]]] = {
    "f1": ("hypersphere_f1", (0.005, 0.002), (0.05, 0.01, 0.005)),
    "f2": ("hypersphere_f2", (0.002, 0.001), (0.005, 0.002, 0.001)),
    "g1": ("hypercube_g1", (0.005, 0.002), (0.05, 0.01, 0.005)),
    "g2": ("hypercube_g2", (0.002, 0.001), (0.02, 0.01, 0.005)),
    "h1": ("gaussian_h1", (0.005, 0.002), (0.02, 0.01, 0.005)),
    "h2": ("gaussian_h2", (0.005, 0.002), (0.02, 0.01, 0.005)),
}
QUIET = ["--wandb", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
TEST_OK, TRAIN_OK = 0.005, 1e-3  # C.1.1 thresholds


def run(config: str, name: str, root: Path, extra: list[str]) -> dict:
    import train

    return train.run(["--config", str(ROOT / "configs/neuron_pursuit" / f"{config}.yaml"), "--name", name,
                      "--trainer.default_root_dir", str(root), *QUIET, *extra])


def np_report(runs: list[dict]) -> dict:
    """C.1.1: fewest iterations among test error < 0.005, else lowest test error among train error < 1e-3,
    else lowest train error."""
    good = [r for r in runs if r["test_rel_err"] < TEST_OK]
    if good:
        return min(good, key=lambda r: (r["np_iterations"], r["test_rel_err"]))
    fitted = [r for r in runs if r["train_rel_err"] < TRAIN_OK]
    if fitted:
        return min(fitted, key=lambda r: r["test_rel_err"])
    return min(runs, key=lambda r: r["train_rel_err"])


def gd_report(runs: list[dict]) -> dict:
    """The baseline's rule: the step size with the lowest test error."""
    return min(runs, key=lambda r: r["test_rel_err"])


def sweep_point(task: str, n: int, seed: int, args: argparse.Namespace, root: Path) -> list[dict]:
    """Every NP and GD run at one (n, seed); returns their rows."""
    np_config, paper_np, paper_gd = TASKS[task]
    common = ["--data.n_train", str(n), "--data.n_test", str(args.n_test), "--data.seed", str(seed),
              "--seed", str(seed)]
    if args.steps_per_epoch:
        common += ["--model.gd_steps_per_batch", str(args.steps_per_epoch)]
    stage = ["--trainer.callbacks.init_args.epochs_per_stage", str(args.np_epochs_per_stage)]
    longest = args.np_epochs_per_stage
    if task.startswith("h"):  # Gaussian configs lengthen stages 3x once the loss is < 0.05 (100k -> 300k steps)
        longest = 3 * args.np_epochs_per_stage
        stage += ["--trainer.callbacks.init_args.long_stage_epochs", str(longest)]
    rows = []
    for lr in args.np_lrs or paper_np:
        res = run(np_config, f"np_{task}_n{n}_s{seed}_lr{lr}", root,
                  [*common, "--model.lr", str(lr), "--trainer.callbacks.init_args.seed", str(seed),
                   *stage, "--trainer.callbacks.init_args.max_iterations", str(args.max_iterations),
                   *(["--trainer.callbacks.init_args.pga_steps", str(args.pga_steps)] if args.pga_steps else []),
                   "--trainer.max_epochs", str(longest * args.max_iterations)])
        rows.append({"method": "np", "n": n, "seed": seed, "lr": lr, "test_rel_err": res["test/rel_err"],
                     "train_rel_err": res["train/rel_err"], "np_iterations": res["np_iterations"],
                     "widths": res["widths"], "stop": res["np_stop_reason"], "lightning_steps": res["global_step"]})
    for lr in args.gd_lrs or paper_gd:
        res = run(f"gd_baseline_{task}", f"gd_{task}_n{n}_s{seed}_lr{lr}", root,
                  [*common, "--model.lr", str(lr), "--trainer.max_epochs", str(args.gd_epochs)])
        rows.append({"method": "gd", "n": n, "seed": seed, "lr": lr, "test_rel_err": res["test/rel_err"],
                     "train_rel_err": res["train/rel_err"], "lightning_steps": res["global_step"]})
    return rows


def report(rows: list[dict]) -> list[dict]:
    """The reported run per (method, n, seed)."""
    out = []
    for key in sorted({(r["method"], r["n"], r["seed"]) for r in rows}):
        runs = [r for r in rows if (r["method"], r["n"], r["seed"]) == key]
        out.append((np_report if key[0] == "np" else gd_report)(runs))
    return out


def summary(reported: list[dict]) -> list[dict]:
    """Per (method, n): mean test/train error, mean NP iterations and NP runs that missed train error 1e-3."""
    out = []
    for method, n in sorted({(r["method"], r["n"]) for r in reported}):
        mine = [r for r in reported if (r["method"], r["n"]) == (method, n)]
        row: dict[str, Any] = {"method": method, "n": n, "runs": len(mine),
                               "mean_test_rel_err": sum(r["test_rel_err"] for r in mine) / len(mine),
                               "mean_train_rel_err": sum(r["train_rel_err"] for r in mine) / len(mine),
                               "not_fitted": sum(r["train_rel_err"] >= TRAIN_OK for r in mine)}
        if method == "np":
            row["mean_np_iterations"] = sum(r["np_iterations"] for r in mine) / len(mine)
        out.append(row)
    return out


def plot(reported: list[dict], path: Path, task: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_err, ax_it) = plt.subplots(1, 2, figsize=(10, 4))
    rows = summary(reported)
    for method, color in (("np", "C0"), ("gd", "C1")):
        mine = [r for r in reported if r["method"] == method]
        means = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        ns = [r["n"] for r in means]
        ax_err.scatter([r["n"] for r in mine], [r["test_rel_err"] for r in mine], color=color, alpha=0.5)
        ax_err.plot(ns, [r["mean_test_rel_err"] for r in means], color=color, label=f"{method.upper()} test")
        if method == "np":
            ax_err.plot(ns, [r["mean_train_rel_err"] for r in means], color=color, linestyle="--", label="NP train")
            ax_it.scatter([r["n"] for r in mine], [r["np_iterations"] for r in mine], color=color, alpha=0.5)
            ax_it.plot(ns, [r["mean_np_iterations"] for r in means], color=color)
    ax_err.set(xscale="log", yscale="log", xlabel="training samples n", ylabel="relative error", title=task)
    ax_err.legend()
    ax_it.set(xscale="log", xlabel="training samples n", ylabel="NP iterations", title=f"{task}: NP iterations")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="f1", choices=sorted(TASKS))
    parser.add_argument("--n", type=int, nargs="+", default=[100, 200, 400, 800])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--np_epochs_per_stage", type=int, default=70,
                        help="x1000 GD steps per NP iteration (Gaussian tasks: x3 once the loss is < 0.05)")
    parser.add_argument("--max_iterations", type=int, default=31)
    parser.add_argument("--gd_epochs", type=int, default=3000, help="x1000 GD steps for the baseline")
    parser.add_argument("--np_lrs", "--np_lr", type=float, nargs="+", default=None,
                        help="NP GD step sizes (default: the paper's two for the task)")
    parser.add_argument("--gd_lrs", "--gd_lr", type=float, nargs="+", default=None,
                        help="baseline step sizes (default: the paper's three for the task)")
    parser.add_argument("--steps_per_epoch", type=int, default=None, help="override gd_steps_per_batch (1000)")
    parser.add_argument("--pga_steps", type=int, default=None, help="override the PGA iterations (2500)")
    parser.add_argument("--n_test", type=int, default=100_000)
    parser.add_argument("--root", default="runs/np_sweep")
    parser.add_argument("--out", default=None, help="output prefix (default docs/results/np_sweep_<task>)")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> dict:
    args = parse_args(argv)
    out = Path(args.out or ROOT / "docs/results" / f"np_sweep_{args.task}")
    root = Path(args.root)
    rows = []
    for n in args.n:
        for seed in args.seeds:
            point = sweep_point(args.task, n, seed, args, root)
            rows += point
            print(json.dumps(point), flush=True)
    reported = report(rows)
    result = {"args": vars(args), "summary": summary(reported), "reported": reported, "runs": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(reported, Path(f"{out}.png"), args.task)
    return result


if __name__ == "__main__":
    main()
