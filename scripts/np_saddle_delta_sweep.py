"""Escape time from a sparse saddle against the perturbation size delta (paper Sec. 3, Figs. 1-4; docs/neuron_pursuit.md).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/np_saddle_delta_sweep.py --config saddle_x2 \
        --deltas 0.005 0.01 0.02 0.04 --max_epochs 600

Runs train.py in-process with configs/neuron_pursuit/<config>.yaml once per delta (same saddle, same directions
n and z), stopping at the escape step (first GD step with L(w)/L(w_bar) < 0.9, ``SaddleMonitor``). Thm 7 and
Lemma 4 predict escape ~ 1/delta^{p-1} for p >= 2 (so escape * delta^{p-1} is flat) and escape ~ ln(1/delta) for
p = 1. Writes <out>.json (delta, escape step, the scaled quantity, a least-squares fit) and <out>.png.
"""
import argparse
import json
import math
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
QUIET = ["--wandb", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def escape_step(config: str, delta: float, root: Path, extra: list[str]) -> Optional[float]:
    import train

    results = train.run(["--config", str(ROOT / "configs/neuron_pursuit" / f"{config}.yaml"),
                         "--name", f"{config}_delta{delta:g}", "--trainer.default_root_dir", str(root), *QUIET,
                         "--trainer.callbacks.init_args.stop_after_escape", "true",
                         "--trainer.callbacks.init_args.plots", "false", *extra, "--model.delta", str(delta)])
    return results["saddle_escape_step"]


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares slope and intercept."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


def config_power(config: str) -> int:
    import yaml

    cfg = yaml.safe_load((ROOT / "configs/neuron_pursuit" / f"{config}.yaml").read_text())
    return int(cfg["model"]["init_args"]["power"])


def plot(rows: list[dict], power: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["escape_step"] is not None]
    if not done:
        return
    fig, (ax_raw, ax_scaled) = plt.subplots(1, 2, figsize=(10, 4))
    ax_raw.loglog([r["delta"] for r in done], [r["escape_step"] for r in done], "o-")
    ax_raw.set(xlabel="δ", ylabel="escape step", title=f"{title}: escape step vs δ")
    if power >= 2:
        ax_scaled.semilogx([r["delta"] for r in done], [r["scaled"] for r in done], "o-")
        ax_scaled.set(xlabel="δ", ylabel=f"escape step × δ^{power - 1}", title="Thm 7: flat for p ≥ 2")
        ax_scaled.set_ylim(0, 1.2 * max(r["scaled"] for r in done))
    else:
        ax_scaled.plot([r["scaled"] for r in done], [r["escape_step"] for r in done], "o-")
        ax_scaled.set(xlabel="ln(1/δ)", ylabel="escape step", title="p = 1: linear in ln(1/δ)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[list[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="saddle_x2")
    parser.add_argument("--deltas", type=float, nargs="+", default=[0.005, 0.01, 0.02, 0.04])
    parser.add_argument("--max_epochs", type=int, default=None, help="budget per run (default: the config's)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train.py flags (last)")
    parser.add_argument("--root", default="runs/np_saddle_delta")
    parser.add_argument("--out", default=None, help="output prefix (default docs/results/np_saddle_delta_<cfg>)")
    args = parser.parse_args(argv)
    power = config_power(args.config)
    extra = (["--trainer.max_epochs", str(args.max_epochs)] if args.max_epochs else []) + args.extra
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag == "--model.power":
            power = int(value)
    rows = []
    for delta in args.deltas:
        step = escape_step(args.config, delta, Path(args.root), extra)
        scaled = math.log(1 / delta) if power == 1 else (None if step is None else step * delta ** (power - 1))
        rows.append({"delta": delta, "escape_step": step, "scaled": scaled})
        print(json.dumps(rows[-1]), flush=True)
    done = [r for r in rows if r["escape_step"] is not None]
    fit = None
    if len(done) >= 2:  # p = 1: escape = a ln(1/delta) + b; p >= 2: log escape = s log delta + c (s ~ 1 - p)
        xs = [r["scaled"] if power == 1 else math.log(r["delta"]) for r in done]
        ys = [r["escape_step"] if power == 1 else math.log(r["escape_step"]) for r in done]
        slope, intercept = fit_line(xs, ys)
        fit = {"model": "escape = slope ln(1/delta) + intercept" if power == 1 else
               "ln escape = slope ln delta + intercept (predicted slope 1 - p)", "slope": slope,
               "intercept": intercept}
    out = Path(args.out or ROOT / "docs/results" / f"np_saddle_delta_{args.config.removeprefix('saddle_')}")
    result = {"args": vars(args), "power": power, "rows": rows, "fit": fit}
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(rows, power, Path(f"{out}.png"), args.config)
    return result


if __name__ == "__main__":
    main()
