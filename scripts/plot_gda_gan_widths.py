#!/usr/bin/env python
"""The Fashion-MNIST WGAN-GP width sweeps (issue 18): FID vs width, FID vs generator step, sample grids.

    python scripts/plot_gda_gan_widths.py --kg DIR_KG --kd DIR_KD --mlp DIR_MLP --out docs/results

DIR_* are the ``--out`` folders of ``sweep.py configs/gan/grids/fmnist_dcgan_kg.yaml`` / ``fmnist_dcgan_kd.yaml`` /
``fmnist_mlp_k.yaml``; a missing or unfinished one leaves its panel empty. Writes
``gda_gan_fmnist_widths.png`` (final FID on the train and test references, median over seeds, band = min..max),
``gda_gan_fmnist_curves.png`` (FID on the train reference at each evaluation, median over seeds per width) and
``gda_gan_fmnist_samples.png`` (seed-0 sample grids of the best and worst generator width of the k_g sweep).
Prints, as a markdown table, every other feature space that ``train.py test`` evaluated the k_g sweep's final
generators in (``version_0/eval_*/results_test.json``, e.g. Inception FID) beside the run's own domain FID.
"""
import argparse
import csv
import json
import statistics
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

from plot_gda_gan_theory import by_width, spread  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GRIDS = (("kg", "fmnist_dcgan_kg", "DCGAN-32, k_g swept (k_d = 16)", "generator width k_g"),
         ("kd", "fmnist_dcgan_kd", "DCGAN-32, k_d swept (k_g = 32)", "critic width k_d"),
         ("mlp", "fmnist_mlp_k", "MLP GAN, k = k_g = k_d", "width k"))
SPACE = "fmnist"  # the domain feature space every Fashion-MNIST GAN config uses by default


def widths(out: Optional[Path], grid: str) -> dict[int, list[dict]]:
    """k -> the finished seeds' results (one cell family per grid)."""
    if out is None or not out.is_dir():
        return {}
    families = by_width(out, ROOT / "configs/gan/grids" / f"{grid}.yaml")
    return next(iter(families.values()), {})


def fid_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(generator step, FID on the train reference) at each evaluation during training.

    The CSV repeats the latest value on every logged row; an evaluation is where the value changes, at the
    multiple of ``every_n_gen_iters`` the row's generator step has reached."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    callbacks = config["trainer"]["callbacks"]
    every = next(c["init_args"]["every_n_gen_iters"] for c in (callbacks if isinstance(callbacks, list) else
                                                                [callbacks]) if c["class_path"].endswith(".FID"))
    curve, last = [], None
    for row in csv.DictReader((run_dir / "metrics.csv").open()):
        value, step = row.get(f"train/fid_{SPACE}_train"), row.get("train/gen_iters")
        if value and step and value != last:
            curve.append((int(float(step)) // every * every, float(value)))
            last = value
    return curve


def plot_widths(sweeps: dict[str, dict[int, list[dict]]], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
    for ax, (key, _, title, xlabel) in zip(axes, GRIDS):
        runs, ks = sweeps[key], sorted(sweeps[key])
        for split, style in (("train", "o-"), ("test", "s--")) if ks else ():
            mid, low, high = zip(*(spread([r.get(f"test/fid_{SPACE}_{split}") for r in runs[k]]) for k in ks))
            line, = ax.plot(ks, mid, style, label=f"FID vs {split} images")
            ax.fill_between(ks, low, high, alpha=0.2, color=line.get_color())
        ax.set(xlabel=xlabel, title=f"{title}\n(n = {min(map(len, runs.values()), default=0)}+ seeds)")
        if ks:
            ax.set_xscale("log", base=2)
        finish_panel(ax, bool(ks))
    save(fig, axes, f"domain FID (fid_{SPACE}, lower is better)",
         "Fashion-MNIST WGAN-GP at the end of training (median over seeds, band = min..max)", path)


def plot_curves(sweeps: dict[str, dict[int, list[dict]]], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
    for ax, (key, _, title, xlabel) in zip(axes, GRIDS):
        for k, runs in sorted(sweeps[key].items()):
            curves = [dict(fid_curve(Path(r["run_dir"]))) for r in runs]
            steps = sorted(set.intersection(*(set(c) for c in curves)))
            ax.plot(steps, [statistics.median(c[s] for c in curves) for s in steps], "o-", label=f"{xlabel} {k}")
        ax.set(yscale="log", xlabel="generator step", title=title)
        finish_panel(ax, bool(sweeps[key]))
    save(fig, axes, f"domain FID vs train images (fid_{SPACE})", "FID during training (median over seeds)", path)


def finish_panel(ax: plt.Axes, has_runs: bool) -> None:
    if has_runs:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "not run yet", ha="center", transform=ax.transAxes)


def save(fig: plt.Figure, axes: list[plt.Axes], ylabel: str, title: str, path: Path) -> None:
    axes[0].set_ylabel(ylabel)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_samples(runs: dict[int, list[dict]], path: Path) -> None:
    """The seed-0 sample grids of the generator widths with the best and the worst median test FID."""
    score = {k: statistics.median(r[f"test/fid_{SPACE}_test"] for r in rs) for k, rs in runs.items()}
    best, worst = min(score, key=score.get), max(score, key=score.get)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.4))
    for ax, (label, k) in zip(axes, (("best", best), ("worst", worst))):
        run = next(r for r in runs[k] if r["run_dir"].split("/")[-2] == "seed_0")
        ax.imshow(mpimg.imread(Path(run["run_dir"]) / "figures" / "samples.png"), cmap="gray")
        ax.set_title(f"{label}: k_g = {k}, seed 0 (FID vs test {run[f'test/fid_{SPACE}_test']:.0f}; "
                     f"median {score[k]:.0f})", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluations_table(runs: dict[int, list[dict]]) -> str:
    """Per width: each seed's FIDs from later evaluations of its final generator, beside its domain FID."""
    rows = []
    for k, results in sorted(runs.items()):
        for r in sorted(results, key=lambda r: r["run_dir"]):
            for path in sorted(Path(r["run_dir"]).glob("eval_*/results_test.json")):
                ev = json.loads(path.read_text())
                for space in sorted({key.split("_")[1] for key in ev if key.startswith("fid_") and
                                     key.endswith("_num_samples")} - {SPACE}):
                    rows.append(f"| {k} | {Path(r['run_dir']).parent.name} | {space} | {ev[f'fid_{space}_num_samples']} | "
                                f"{ev[f'test/fid_{space}_train']:.1f} | {ev[f'test/fid_{space}_test']:.1f} | "
                                f"{r[f'test/fid_{SPACE}_train']:.1f} | {r[f'test/fid_{SPACE}_test']:.1f} |")
    head = (f"| k_g | seed | space | samples | FID vs train | FID vs test | fid_{SPACE} train | fid_{SPACE} test |\n"
            "|---|---|---|---|---|---|---|---|")
    return "\n".join([head, *rows]) if rows else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for key, grid, _, _ in GRIDS:
        parser.add_argument(f"--{key}", type=Path, help=f"sweep folder of grids/{grid}.yaml")
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sweeps = {key: widths(getattr(args, key), grid) for key, grid, _, _ in GRIDS}
    plot_widths(sweeps, args.out / "gda_gan_fmnist_widths.png")
    plot_curves(sweeps, args.out / "gda_gan_fmnist_curves.png")
    if sweeps["kg"]:
        plot_samples(sweeps["kg"], args.out / "gda_gan_fmnist_samples.png")
        print(evaluations_table(sweeps["kg"]))


if __name__ == "__main__":
    main()
