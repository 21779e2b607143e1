#!/usr/bin/env python
"""Gauss-Newton / Levenberg-Marquardt solver benchmarks (CPU, one thread unless OMP_NUM_THREADS says otherwise).

    python benchmarks/gauss_newton.py [--part lm|memory|all] [--steps K] [--pairs 5]

``lm``: our ``lm_step`` against ``torch-levenberg-marquardt`` (PyPI) on the same model, data, batch, float32 and
initial weights: a 1-20-20-1 tanh MLP fitting sinc on 1,000 points (its README example). Both take the
classic LM step (J^T J + lam I) d = J^T r with lam = N * 1e-3 reset at every step, x10 / x0.1 Marquardt
updates, up to 10 attempts, so they follow the same trajectory. Each variant runs K steps from the same initial
weights (the first untimed), the variants in alternating rounds in one process (order reversed every other round);
prints the median time per step, the loss after K steps, and the time ratios of ours (primal) to theirs (Cholesky,
QR), each the median of ``--pairs`` alternating pairs, spread min-max.

``lm-real``: the same comparison on the real California Housing (``--data-root``: the folder with
california_housing.csv) with the model of the LM-vs-Adam grid: a tanh MLP 8-``--hidden``-1 (nets.TanhMLP) on the
first ``--batch`` rows of the fixed seeded 16,000-row training split (standardised features, target in $100k).

``memory``: one damped GN direction for an MLP 784-W-1 on n = 256 samples at growing p, dense (per-sample
n x p J, n x n dual solve) against matrix-free CG (JVP/VJP, at most 100 iterations); each case runs in its own
process and reports the peak resident memory above the level before the solve (sampled every ms).
"""
import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import threading
import time

import torch
from torch import nn

from nets.gauss_newton.solver import (AnalyticJacobianNet, Damping, DenseJacobian, FuncJacobian, MarquardtSchedule,
                                   gn_direction, lm_step, per_sample_jacobian)
from pairs import alternating_rounds, ratios_to, summary


def flat_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """theta -> residuals model(x; theta) - y (theta the flat parameter vector), its per-sample version
    (theta, (x_i, y_i)) -> residual_i, and theta."""
    names = [(n, p.shape, p.numel()) for n, p in model.named_parameters()]

    def call(theta: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        chunks = theta.split([k for _, _, k in names])
        return torch.func.functional_call(model, {n: c.view(s) for (n, s, _), c in zip(names, chunks)}, (inputs,))

    def fn(theta: torch.Tensor) -> torch.Tensor:
        return (call(theta, x) - y).reshape(-1)

    def single(theta: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        return (call(theta, xy[None, :-1]) - xy[-1]).reshape(-1)
    return fn, single, torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def sinc_problem(n: int = 1000, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    x = torch.linspace(-10, 10, n).unsqueeze(1)
    y = torch.sinc(x / torch.pi) + 0.05 * torch.randn(n, 1)  # torch.sinc is sin(pi x)/(pi x)
    model = nn.Sequential(nn.Linear(1, 20), nn.Tanh(), nn.Linear(20, 20), nn.Tanh(), nn.Linear(20, 1))
    return model, x, y


def housing_problem(root: str, hidden: int, batch: int, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The LM-vs-Adam grid's model and data (configs/gauss_newton/mlp_california.yaml), float32, ``batch`` rows."""
    from datamodules import CaliforniaHousingDataModule
    from nets import TanhMLP

    data = CaliforniaHousingDataModule(root=root, n_train=16000, n_val=2000, n_test=2000, seed=0)
    data.setup("fit")
    x, y = (t[:batch].float() for t in data.train_xy)
    torch.manual_seed(seed)
    return TanhMLP(8, [hidden]), x, y.unsqueeze(1)


def bench_lm(steps: int, pairs: int, problem: tuple[nn.Module, torch.Tensor, torch.Tensor], label: str) -> dict:
    from torch_levenberg_marquardt.damping import StandardDampingStrategy
    from torch_levenberg_marquardt.training import LevenbergMarquardtModule

    model, x, y = problem
    n = len(x)
    out = {"problem": f"{label}, N={n}, p={sum(p.numel() for p in model.parameters())}, float32, {steps} steps"}

    def theirs(solve_method: str):
        lm = LevenbergMarquardtModule(copy.deepcopy(model), learning_rate=1.0, attempts_per_step=10,
                                      solve_method=solve_method,
                                      damping_strategy=StandardDampingStrategy(starting_value=1e-3))

        def step() -> float:
            return float(lm.training_step(x, y)[1])
        return step

    def ours(method: str):
        fn, single, theta = flat_fn(copy.deepcopy(model), x, y)
        xy = torch.cat([x, y], 1)
        if method.startswith("cg"):
            dense = None
        elif isinstance(model, AnalyticJacobianNet):  # TanhMLP writes J itself at theta, as the LM module uses it
            dense = lambda t: DenseJacobian(model.per_sample_jacobian(x, t).reshape(n, -1))  # noqa: E731
        else:
            dense = lambda t: per_sample_jacobian(single, t, xy)  # noqa: E731
        kwargs = dict(method=method, jacobian=dense, cg_tol=1e-6, cg_maxiter=200)  # float32: tol 1e-6
        state = {"theta": theta}

        def step() -> float:
            # a fresh schedule each step: torch-levenberg-marquardt resets its damping after every accepted step
            state["theta"], loss, _ = lm_step(fn, state["theta"], MarquardtSchedule(lam=n * 1e-3, down=10, up=10),
                                              **kwargs)
            return 2 * loss / n  # their loss: the mean squared residual
        return step

    variants = {"theirs_cholesky": lambda: theirs("cholesky"), "theirs_qr": lambda: theirs("qr"),
                "ours_primal": lambda: ours("primal"), "ours_cg": lambda: ours("cg")}
    losses = {}

    def sec_per_step(name: str) -> float:
        step = variants[name]()  # fresh from the same initial weights
        step()  # the first step is warm-up
        start = time.perf_counter()
        for _ in range(steps - 1):
            losses[name] = step()
        return (time.perf_counter() - start) / (steps - 1)

    print(f"{out['problem']}: s/step", flush=True)
    seconds = alternating_rounds({name: (lambda name=name: sec_per_step(name)) for name in variants}, pairs, "s/step")
    for name in variants:
        out[name] = {"sec_per_step": round(statistics.median(seconds[name]), 5), "mse_after_K": losses[name]}
    for theirs_name in ("theirs_cholesky", "theirs_qr"):
        out[f"ratio_ours_primal_vs_{theirs_name}"] = summary(ratios_to(seconds, theirs_name)["ours_primal"],
                                                             f"time ratio ours_primal/{theirs_name}")
    return out


class PeakRSS:
    """Samples this process's resident set size every millisecond in a thread; ``peak_mb`` above the start."""

    def __init__(self) -> None:
        self.page = resource.getpagesize()
        self.base = self.peak = self.rss()
        self.running = True
        self.thread = threading.Thread(target=self.poll, daemon=True)
        self.thread.start()

    def rss(self) -> int:
        with open("/proc/self/statm") as file:
            return int(file.read().split()[1]) * self.page

    def poll(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.001)

    def stop(self) -> float:
        self.running = False
        self.thread.join()
        return (max(self.peak, self.rss()) - self.base) / 2**20


def memory_case(mode: str, width: int, n: int = 256) -> dict:
    """One damped GN direction (dense: per-sample Jacobian + n x n dual solve; matrix-free: CG on JVP/VJP)."""
    torch.manual_seed(0)
    x, y = torch.randn(n, 784), torch.randn(n, 1)
    model = nn.Sequential(nn.Linear(784, width), nn.Tanh(), nn.Linear(width, 1))
    fn, single, theta = flat_fn(model, x, y)
    with torch.no_grad():
        r = fn(theta)
    meter, start = PeakRSS(), time.perf_counter()
    if mode == "dense":
        jac, method = per_sample_jacobian(single, theta, torch.cat([x, y], 1)), "dual"
    else:
        jac, method = FuncJacobian(fn, theta), "cg"
    v, info = gn_direction(jac, r, Damping.additive(1e-3 * n), method=method, cg_maxiter=100, cg_tol=1e-6)
    sec, extra = time.perf_counter() - start, meter.stop()
    return {"mode": mode, "width": width, "p": theta.numel(), "n": n, "sec": round(sec, 3),
            "peak_extra_mb": round(extra, 1), "cg_iters": info.cg_iters, "v_norm": round(float(v.norm()), 5)}


def bench_memory(widths: list[int], dense_max_p: int) -> list[dict]:
    rows = []
    for width in widths:
        for mode in ("dense", "matrix_free"):
            p = 786 * width + 1
            if mode == "dense" and p > dense_max_p:
                rows.append({"mode": mode, "width": width, "p": p, "skipped": f"n x p J would be {256 * p * 4 / 2**20:.0f} MB"})
                continue
            cmd = [sys.executable, __file__, "--memory-case", mode, str(width)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["lm", "lm-real", "memory", "all"], default="all")
    parser.add_argument("--data-root", default="data", help="lm-real: the folder with california_housing.csv")
    parser.add_argument("--hidden", type=int, default=18, help="lm-real: hidden width of the tanh MLP")
    parser.add_argument("--batch", type=int, default=1024, help="lm-real: rows per step (at most 16,000)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 128, 320, 1280])
    parser.add_argument("--dense-max-p", type=int, default=300_000)
    parser.add_argument("--memory-case", nargs=2, metavar=("MODE", "WIDTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.memory_case:
        print(json.dumps(memory_case(args.memory_case[0], int(args.memory_case[1]))))
        return
    if args.steps < 2:
        raise SystemExit("error: --steps must be >= 2 (the first is warm-up)")
    if args.part in ("lm", "all"):
        print(json.dumps(bench_lm(args.steps, args.pairs, sinc_problem(), "sinc fit, MLP 1-20-20-1 tanh"), indent=2),
              flush=True)
    if args.part == "lm-real":
        problem = housing_problem(args.data_root, args.hidden, args.batch)
        label = f"California Housing, tanh MLP 8-{args.hidden}-1"
        print(json.dumps(bench_lm(args.steps, args.pairs, problem, label), indent=2), flush=True)
    if args.part in ("memory", "all"):
        print(json.dumps(bench_memory(args.widths, args.dense_max_p), indent=2))


if __name__ == "__main__":
    main()
