"""Width-vs-n sweep for the Gulcu ResNet (spec section 3.1): full-batch GD with eta = c / lambda_max(K_0).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/resnet_width_sweep.py --grid width --out docs/results/resnet_width_sweep.jsonl

One JSON line per run (appended; runs already in the file are skipped, so an interrupted sweep continues).
Runs the same net (nets.GulcuResNet), data (datamodules.sphere.sphere_data) and exact NTK (nets.resnet_width.ntk) as
``train.py --config configs/resnet_width/...``, in a plain loop because thousands of tiny full-batch steps per
run would spend most of their time in Lightning's per-step machinery.
"""
import argparse
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any, Optional

import torch


from nets.resnet_width.ntk import eig_extremes, jacobian_features, layer_grams
from datamodules.sphere import sphere_data
from nets.resnet_width.net import GulcuResNet, data_kernel

# (n values, m/n ratios, depths, seeds); m is rounded to even. Skipped: m < d, and runs whose per-step cost n m^2 H
# exceeds that of n = 64, m = 256, H = 10 (what a shared 2-core CPU can do in minutes)
MAX_COST = 64 * 256**2 * 10
GRIDS = {
    "width": ([16, 32, 64, 128], [1 / 8, 1 / 4, 1 / 2, 1, 2, 4], [10], [0, 1, 2]),
    "depth": ([32], [1 / 4, 1 / 2, 1, 2], [2, 5, 20, 50], [0, 1, 2]),
    "long": ([128], [1 / 8, 1 / 4, 1 / 2, 1], [10], [0, 1, 2]),  # rerun with --steps 8000: 2000 is too few at n = 128
    "boundary": ([256], [m / 256 for m in (10, 12, 14, 16, 20, 24, 32)], [2, 10], [0, 1, 2]),  # p = md + (H-1)m^2 near n
    "small": ([16, 32, 64], [1 / 2, 1, 2], [10], [0, 1, 2]),  # for --lr-scale 0.5 and --labels gaussian
    "smoke": ([16], [1 / 2, 1], [2, 10], [0]),
}


def width_for(n: int, ratio: float) -> int:
    return max(2, 2 * round(n * ratio / 2))


def ntk_summary(net: GulcuResNet, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    grams = layer_grams(jacobian_features(net, x)[1])
    kernel = grams.sum(0)
    lam_min, lam_max = eig_extremes(kernel)
    return kernel, {"lambda_min": lam_min, "lambda_max": lam_max, "first_layer_lambda_min": eig_extremes(grams[0])[0],
                    "first_layer_share": float(grams[0].trace() / kernel.trace())}


def first_below(losses: list[float], level: float) -> Optional[int]:
    return next((t for t, value in enumerate(losses) if value <= level), None)


def run(n: int, m: int, depth: int, seed: int, lr_scale: float, steps: int, d: int, labels: str,
        c_res: float) -> dict[str, Any]:
    x, y = sphere_data(n, d, labels, torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    net = GulcuResNet(d, m, depth, c_res).double()
    net.set_output(y)
    theta0 = [p.detach().clone() for p in net.parameters()]
    _, start = ntk_summary(net, x)
    eta = lr_scale / start["lambda_max"]
    optimizer = torch.optim.SGD(net.parameters(), lr=eta)
    losses: list[float] = []
    # the contraction is fitted once the loss is 1e-4 L_0 (past the fast modes) up to 1e-8 L_0 or the end
    fit_start: Optional[tuple[int, float]] = None
    began = time.perf_counter()
    for t in range(steps + 1):
        loss = 0.5 * (net(x) - y).pow(2).sum()
        losses.append(loss.item())
        if fit_start is None and losses[-1] <= 1e-4 * losses[0]:
            fit_start = (t, ntk_summary(net, x)[1]["lambda_min"])
        if t == steps or losses[-1] <= 1e-10 * losses[0] or not math.isfinite(losses[-1]):
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - began
    _, end = ntk_summary(net, x)
    distance = math.sqrt(sum(float((p.detach() - p0).pow(2).sum()) for p, p0 in zip(net.parameters(), theta0)))
    lam_x = eig_extremes(data_kernel(x))[0]
    if fit_start is None:  # never got to 1e-4 L_0: fit over the second half of the run
        fit_start = (len(losses) // 2, end["lambda_min"])
    t_a, lam_a = fit_start
    t_b = first_below(losses, 1e-8 * losses[0]) or len(losses) - 1
    measured = (losses[t_b] / losses[t_a]) ** (1 / (t_b - t_a)) if t_b > t_a else float("nan")
    return {"n": n, "m": m, "ratio": m / n, "depth": depth, "seed": seed, "lr_scale": lr_scale, "d": d,
            "labels": labels, "c_res": c_res, "eta": eta, "steps_run": len(losses) - 1, "max_steps": steps,
            "loss_start": losses[0], "loss_end": losses[-1], "success": losses[-1] <= 1e-8 * losses[0],
            "steps_to_1e-8": first_below(losses, 1e-8 * losses[0]),
            "start": start, "end": end, "theta_distance": distance,
            "radius_R": 4 * math.sqrt(2 * losses[0] / start["lambda_min"]) if start["lambda_min"] > 0 else None,
            "data_kernel_lambda_min": lam_x,
            "alpha0_sq_bound": net.c_phi * float(y @ y) / n * math.exp(-4 * c_res) * lam_x,  # (3.21), delta'=0, B=1
            "rate_fit_steps": [t_a, t_b], "rate_measured": measured, "rate_predicted": (1 - eta * lam_a) ** 2,
            "seconds": round(seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", choices=sorted(GRIDS), default="smoke")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr-scale", type=float, nargs="+", default=[1.0])
    parser.add_argument("--d", type=int, default=10)
    parser.add_argument("--labels", choices=["sign", "gaussian"], default="sign")
    parser.add_argument("--c-res", type=float, default=0.5)
    args = parser.parse_args()
    done = set()
    if args.out.is_file():
        done = {tuple(json.loads(line)[k] for k in ("n", "m", "depth", "seed", "lr_scale", "labels", "max_steps"))
                for line in args.out.read_text().splitlines() if line.strip()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    ns, ratios, depths, seeds = GRIDS[args.grid]
    for n, ratio, depth, seed, lr_scale in itertools.product(ns, ratios, depths, seeds, args.lr_scale):
        m = width_for(n, ratio)
        if m < args.d or n * m * m * depth > MAX_COST or (n, m, depth, seed, lr_scale, args.labels, args.steps) in done:
            continue
        record = run(n, m, depth, seed, lr_scale, args.steps, args.d, args.labels, args.c_res)
        with args.out.open("a") as file:
            file.write(json.dumps(record) + "\n")
        print(f"n={n:4d} m={m:4d} H={depth:3d} seed={seed} c={lr_scale}: L_T/L_0={record['loss_end'] / record['loss_start']:.1e}"
              f" in {record['steps_run']} steps, rate {record['rate_measured']:.5f} vs {record['rate_predicted']:.5f}"
              f" ({record['seconds']} s)", flush=True)


if __name__ == "__main__":
    main()
