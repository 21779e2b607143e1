"""Sample-size sweep of Neuron Pursuit vs the small-initialisation GD baseline (Figs. 7-9 style).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/np_sample_sweep.py --task f1 --n 100 200 400 --seeds 0 1 \
        --np_epochs_per_stage 10 --max_iterations 8 --gd_epochs 200 --out docs/results/np_sweep_f1

Runs train.py in-process per (n, seed) for NP (configs/neuron_pursuit/<np_config>.yaml) and GD
(configs/neuron_pursuit/gd_baseline_<task>.yaml when it exists), then writes <out>.json and <out>.png
(test relative error and NP iteration count against n; one point per seed, lines through the means).
Each Lightning step of these configs is 1000 GD steps (`lightning_steps` in the JSON).
"""
import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NP_CONFIGS = {"f1": "hypersphere_f1", "f2": "hypersphere_f2", "g1": "hypercube_g1", "g2": "hypercube_g2",
              "h1": "gaussian_h1", "h2": "gaussian_h2"}
QUIET = ["--wandb", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def run(config: str, name: str, root: Path, extra: list[str]) -> dict:
    import train

    code = train.main(["--config", str(ROOT / "configs/neuron_pursuit" / f"{config}.yaml"), "--name", name,
                       "--trainer.default_root_dir", str(root), *QUIET, *extra])
    if code != 0:
        raise RuntimeError(f"{name} failed with exit code {code}")
    latest = max((root / name).glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    return json.loads((latest / "results.json").read_text())


def lr_flag(lr: float | None) -> list[str]:
    return [] if lr is None else ["--model.lr", str(lr)]


def plot(rows: list[dict], path: Path, task: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_err, ax_it) = plt.subplots(1, 2, figsize=(10, 4))
    for method, color in (("np", "C0"), ("gd", "C1")):
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        ns = sorted({r["n"] for r in mine})
        ax_err.scatter([r["n"] for r in mine], [r["test_rel_err"] for r in mine], color=color, alpha=0.5)
        means = [sum(r["test_rel_err"] for r in mine if r["n"] == n) / sum(r["n"] == n for r in mine) for n in ns]
        ax_err.plot(ns, means, color=color, label=f"{method.upper()} test")
        if method == "np":
            train_means = [sum(r["train_rel_err"] for r in mine if r["n"] == n) / sum(r["n"] == n for r in mine)
                           for n in ns]
            ax_err.plot(ns, train_means, color=color, linestyle="--", label="NP train")
            its = [sum(r["np_iterations"] for r in mine if r["n"] == n) / sum(r["n"] == n for r in mine) for n in ns]
            ax_it.scatter([r["n"] for r in mine], [r["np_iterations"] for r in mine], color=color, alpha=0.5)
            ax_it.plot(ns, its, color=color)
    ax_err.set(xscale="log", yscale="log", xlabel="training samples n", ylabel="relative error", title=task)
    ax_err.legend()
    ax_it.set(xscale="log", xlabel="training samples n", ylabel="NP iterations", title=f"{task}: NP iterations")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="f1", choices=sorted(NP_CONFIGS))
    parser.add_argument("--n", type=int, nargs="+", default=[100, 200, 400, 800])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--np_epochs_per_stage", type=int, default=70, help="x1000 GD steps per NP iteration")
    parser.add_argument("--max_iterations", type=int, default=31)
    parser.add_argument("--gd_epochs", type=int, default=3000, help="x1000 GD steps for the baseline")
    parser.add_argument("--np_lr", type=float, default=None, help="override the NP config's GD step size")
    parser.add_argument("--gd_lr", type=float, default=None, help="override the baseline's GD step size")
    parser.add_argument("--n_test", type=int, default=100_000)
    parser.add_argument("--root", default="runs/np_sweep")
    parser.add_argument("--out", default=None, help="output prefix (default docs/results/np_sweep_<task>)")
    args = parser.parse_args()
    out = Path(args.out or ROOT / "docs/results" / f"np_sweep_{args.task}")
    root = Path(args.root)
    gd_config = f"gd_baseline_{args.task}"
    has_gd = (ROOT / "configs/neuron_pursuit" / f"{gd_config}.yaml").is_file()
    rows = []
    for n in args.n:
        for seed in args.seeds:
            common = ["--data.n_train", str(n), "--data.n_test", str(args.n_test), "--data.seed", str(seed),
                      "--seed", str(seed)]
            res = run(NP_CONFIGS[args.task], f"np_{args.task}_n{n}_s{seed}", root,
                      [*common, *lr_flag(args.np_lr), "--trainer.callbacks.init_args.seed", str(seed),
                       "--trainer.callbacks.init_args.epochs_per_stage", str(args.np_epochs_per_stage),
                       "--trainer.callbacks.init_args.max_iterations", str(args.max_iterations),
                       "--trainer.max_epochs", str(args.np_epochs_per_stage * args.max_iterations)])
            rows.append({"method": "np", "n": n, "seed": seed, "test_rel_err": res["test/rel_err"],
                         "train_rel_err": res["train/rel_err"], "np_iterations": res["np_iterations"],
                         "widths": res["widths"], "stop": res["np_stop_reason"]})
            if has_gd:
                res = run(gd_config, f"gd_{args.task}_n{n}_s{seed}", root,
                          [*common, *lr_flag(args.gd_lr), "--trainer.max_epochs", str(args.gd_epochs)])
                rows.append({"method": "gd", "n": n, "seed": seed, "test_rel_err": res["test/rel_err"],
                             "train_rel_err": res["train/rel_err"], "lightning_steps": res["global_step"]})
            print(json.dumps(rows[-2:] if has_gd else rows[-1:]), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1) + "\n")
    plot(rows, Path(f"{out}.png"), args.task)


if __name__ == "__main__":
    main()
