"""Neuron Pursuit reports read from a ``sweep.py`` folder (the runs' results.json and config.yaml).

    python scripts/np_report.py samples DIR [--out PREFIX]   # Figs. 7-9 (grids fig7_*, fig8_*, fig9_*)
    python scripts/np_report.py delta DIR [--out PREFIX]     # saddle escape vs delta (grids saddle_delta_*)

``samples``: per (n, seed) NP is reported by the paper's C.1.1 rule over its step sizes (fewest NP iterations
among test error < 0.005, else lowest test error among training error < 1e-3, else lowest training error) and the
GD baseline by its lowest test error (both rules read the test set, as in the paper); then median and quartiles
over seeds per n, the NP runs that did not reach training error 1e-3 (the paper's "fails within 31 iterations"),
and the figure: relative errors and NP iterations against n.
``delta``: the escape step per (delta, seed), its median per delta, and the law of Thm 7 / Lemma 4: for p >= 2 a
log-log fit of escape against delta (predicted slope 1 - p), for p = 1 a line in ln(1/delta).
Both write PREFIX.md (default DIR/np_report.md) and PREFIX.png.
"""
import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any, Optional

import yaml

TEST_OK, TRAIN_OK = 0.005, 1e-3  # C.1.1 thresholds


def runs(sweep: Path) -> list[dict[str, Any]]:
    """One row per finished run: its results and the settings the reports group by (from its config.yaml)."""
    rows = []
    for path in sorted(sweep.glob("*/seed_*/version_*/results.json")):
        results = json.loads(path.read_text())
        config = yaml.safe_load((path.parent / "config.yaml").read_text())
        model, data = config["model"]["init_args"], config["data"]["init_args"]
        rows.append({"cell": path.parts[-4], "seed": int(path.parts[-3].removeprefix("seed_")),
                     "method": "np" if "np_iterations" in results else "gd", "n": data.get("n_train"),
                     "lr": model["lr"], "delta": model.get("delta"), "power": model["power"],
                     "test_rel_err": results.get("test/rel_err"), "train_rel_err": results.get("train/rel_err"),
                     "np_iterations": results.get("np_iterations"), "escape": results.get("saddle_escape_step")})
    if not rows:
        raise SystemExit(f"error: no finished runs (*/seed_*/version_*/results.json) under {sweep}")
    return rows


def np_report(candidates: list[dict]) -> dict:
    """C.1.1: fewest iterations among test error < 0.005, else lowest test error among train error < 1e-3,
    else lowest train error."""
    good = [r for r in candidates if r["test_rel_err"] < TEST_OK]
    if good:
        return min(good, key=lambda r: (r["np_iterations"], r["test_rel_err"]))
    fitted = [r for r in candidates if r["train_rel_err"] < TRAIN_OK]
    if fitted:
        return min(fitted, key=lambda r: r["test_rel_err"])
    return min(candidates, key=lambda r: r["train_rel_err"])


def gd_report(candidates: list[dict]) -> dict:
    """The baseline's rule: the step size with the lowest test error."""
    return min(candidates, key=lambda r: r["test_rel_err"])


def reported(rows: list[dict]) -> list[dict]:
    """The reported run per (method, n, seed)."""
    keys = sorted({(r["method"], r["n"], r["seed"]) for r in rows})
    return [(np_report if method == "np" else gd_report)([r for r in rows if (r["method"], r["n"], r["seed"]) == (
        method, n, seed)]) for method, n, seed in keys]


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def summary(picked: list[dict]) -> list[dict]:
    out = []
    for method, n in sorted({(r["method"], r["n"]) for r in picked}):
        mine = [r for r in picked if (r["method"], r["n"]) == (method, n)]
        row = {"method": method, "n": n, "seeds": len(mine), "test": quartiles([r["test_rel_err"] for r in mine]),
               "train": quartiles([r["train_rel_err"] for r in mine]),
               "not_fitted": sum(r["train_rel_err"] >= TRAIN_OK for r in mine),
               "lrs": sorted({r["lr"] for r in mine})}
        if method == "np":
            row["iterations"] = quartiles([float(r["np_iterations"]) for r in mine])
        out.append(row)
    return out


def fmt(q: tuple[float, float, float], digits: str = ".3g") -> str:
    return f"{q[1]:{digits}} [{q[0]:{digits}}, {q[2]:{digits}}]"


def samples_report(sweep: Path, prefix: Path) -> list[dict]:
    rows = summary(reported(runs(sweep)))
    lines = [f"Source: `{sweep}` ({(sweep / 'command.txt').read_text().strip() if (sweep / 'command.txt').is_file() else 'sweep.py'}),",
             "reported by `python scripts/np_report.py samples` (C.1.1 for NP, lowest test error for GD; median "
             "[quartiles] over seeds).", "",
             "| method | n | seeds | test rel. err | train rel. err | NP iterations | not fitted (train ≥ 1e-3) | "
             "reported lrs |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        its = fmt(r["iterations"], ".1f") if "iterations" in r else "–"
        lines.append(f"| {r['method'].upper()} | {r['n']} | {r['seeds']} | {fmt(r['test'])} | {fmt(r['train'])} | "
                     f"{its} | {r['not_fitted']}/{r['seeds']} | {', '.join(map(str, r['lrs']))} |")
    prefix.with_suffix(".md").write_text("\n".join(lines) + "\n")
    plot_samples(rows, prefix.with_suffix(".png"), sweep.name)
    return rows


def plot_samples(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_err, ax_it) = plt.subplots(2, 1, figsize=(6, 7), sharex=True)
    for method, color in (("np", "C0"), ("gd", "C1")):
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        ns = [r["n"] for r in mine]
        for key, style, label in (("test", "-", "test"), ("train", "--", "train")):
            ax_err.plot(ns, [r[key][1] for r in mine], style, color=color, marker="o", label=f"{method.upper()} {label}")
            ax_err.fill_between(ns, [r[key][0] for r in mine], [r[key][2] for r in mine], color=color, alpha=0.15)
        if method == "np":
            ax_it.plot(ns, [r["iterations"][1] for r in mine], color=color, marker="o")
            ax_it.fill_between(ns, [r["iterations"][0] for r in mine], [r["iterations"][2] for r in mine],
                               color=color, alpha=0.15)
    ax_err.set(xscale="log", yscale="log", ylabel="relative error (median, quartiles)", title=title)
    ax_err.legend(fontsize=8)
    ax_it.set(xscale="log", xlabel="training samples n", ylabel="NP iterations")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares slope and intercept."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


def delta_report(sweep: Path, prefix: Path) -> dict[str, Any]:
    every = runs(sweep)
    rows = [r for r in every if r["escape"] is not None]
    stuck = [r for r in every if r["escape"] is None]
    if not rows:
        raise SystemExit(f"error: no run under {sweep} escaped its saddle")
    power = rows[0]["power"]
    deltas = sorted({r["delta"] for r in rows})
    medians = [statistics.median(r["escape"] for r in rows if r["delta"] == d) for d in deltas]
    # p = 1: escape = slope ln(1/delta) + c; p >= 2: ln escape = slope ln delta + c (slope predicted 1 - p)
    xs = [math.log(1 / d) if power == 1 else math.log(d) for d in deltas]
    ys = medians if power == 1 else [math.log(m) for m in medians]
    fit: Optional[tuple[float, float]] = fit_line(xs, ys) if len(deltas) >= 2 else None
    law = "escape = slope · ln(1/δ) + c" if power == 1 else f"ln escape = slope · ln δ + c (predicted slope {1 - power})"
    lines = [f"Source: `{sweep}`, reported by `python scripts/np_report.py delta` (p = {power}).", "",
             "| δ | seeds | escape step (median) | escape steps | " + ("escape · δ^(p−1) |" if power > 1 else "ln(1/δ) |"),
             "|---|---|---|---|---|"]
    for d, m in zip(deltas, medians):
        mine = sorted(r["escape"] for r in rows if r["delta"] == d)
        scaled = f"{m * d ** (power - 1):.4g}" if power > 1 else f"{math.log(1 / d):.3f}"
        lines.append(f"| {d:g} | {len(mine)} | {m:g} | {', '.join(f'{e:g}' for e in mine)} | {scaled} |")
    if stuck:
        lines += ["", "Not escaped within their steps (left out above): " + ", ".join(
            f"δ = {r['delta']:g} seed {r['seed']}" for r in sorted(stuck, key=lambda r: (r["delta"], r["seed"]))) + "."]
    if fit:
        lines += ["", f"Fit over the medians, {law}: slope **{fit[0]:.4g}**, intercept {fit[1]:.4g}."]
    prefix.with_suffix(".md").write_text("\n".join(lines) + "\n")
    plot_delta(deltas, medians, power, prefix.with_suffix(".png"), sweep.name)
    return {"power": power, "deltas": deltas, "medians": medians, "slope": fit[0] if fit else None}


def plot_delta(deltas: list[float], medians: list[float], power: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_raw, ax_scaled) = plt.subplots(1, 2, figsize=(10, 4))
    ax_raw.loglog(deltas, medians, "o-")
    ax_raw.set(xlabel="δ", ylabel="escape step (median over seeds)", title=f"{title}: escape vs δ")
    if power >= 2:
        scaled = [m * d ** (power - 1) for d, m in zip(deltas, medians)]
        ax_scaled.semilogx(deltas, scaled, "o-")
        ax_scaled.set(xlabel="δ", ylabel=f"escape step × δ^{power - 1}", title="Thm 7: flat for p ≥ 2",
                      ylim=(0, 1.2 * max(scaled)))
    else:
        ax_scaled.plot([math.log(1 / d) for d in deltas], medians, "o-")
        ax_scaled.set(xlabel="ln(1/δ)", ylabel="escape step", title="p = 1: linear in ln(1/δ)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[list[str]] = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", choices=["samples", "delta"])
    parser.add_argument("sweep", type=Path, help="a sweep.py --out folder")
    parser.add_argument("--out", type=Path, default=None, help="output prefix (default DIR/np_report)")
    args = parser.parse_args(argv)
    if not args.sweep.is_dir():
        raise SystemExit(f"error: no sweep folder {args.sweep}")
    prefix = args.out or args.sweep / "np_report"
    prefix.parent.mkdir(parents=True, exist_ok=True)
    result = (samples_report if args.report == "samples" else delta_report)(args.sweep, prefix)
    print(prefix.with_suffix(".md").read_text(), end="")
    return result


if __name__ == "__main__":
    main()
