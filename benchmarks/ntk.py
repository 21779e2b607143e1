"""Exact NTK of the Gulcu ResNet: layer factors (nets.resnet_width.ntk) vs the full Jacobian from torch.func.jacrev.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ntk.py [--n 256 --m 256 --depth 10 --pairs 5]

Memory: each method computes the kernel once in its own subprocess so its peak RSS is its own; memory is the peak
RSS growth over the RSS after building the net and data. Time: both methods in this process, after one warm-up
call each; the time ratio callback/jacrev is the median of ``--pairs`` alternating pairs, spread min-max. Prints
both kernels' agreement and the time and memory ratios.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Callable

import torch

from pairs import alternating_pairs, summary


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        line = next(ln for ln in status if ln.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def kernel_fn(method: str, n: int, m: int, depth: int, d: int) -> tuple[Callable[[], torch.Tensor], int]:
    """The kernel computation of ``method`` on a fixed net and data, and the net's parameter count."""
    from torch.func import functional_call, jacrev

    from datamodules.sphere import sphere_data
    from nets.resnet_width import GulcuResNet
    from nets.resnet_width.ntk import ntk

    torch.manual_seed(0)
    x, y = sphere_data(n, d, "sign", torch.Generator().manual_seed(0))
    net = GulcuResNet(d, m, depth).double()
    net.set_output(y)
    params = {k: v.detach() for k, v in net.named_parameters()}

    def by_jacrev() -> torch.Tensor:
        jac = jacrev(lambda p: functional_call(net, p, (x,)))(params)
        flat = torch.cat([j.reshape(n, -1) for j in jac.values()], dim=1)
        return flat @ flat.T

    return (lambda: ntk(net, x)) if method == "callback" else by_jacrev, sum(p.numel() for p in params.values())


def measure_memory(method: str, n: int, m: int, depth: int, d: int, out: str) -> None:
    compute, params = kernel_fn(method, n, m, depth, d)
    before = rss_mb()
    torch.save(compute(), out)
    print(json.dumps({"extra_mb": peak_rss_mb() - before, "params": params}))


def seconds(compute: Callable[[], torch.Tensor]) -> float:
    start = time.perf_counter()
    compute()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--m", type=int, default=256)
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--d", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--method", choices=["callback", "jacrev"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = (args.n, args.m, args.depth, args.d)
    if args.method:
        measure_memory(args.method, *sizes, args.out)
        return
    stats, kernels = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("jacrev", "callback"):
            out = os.path.join(tmp, f"{method}.pt")
            cmd = [sys.executable, __file__, "--method", method, "--out", out,
                   *[f"--{k}={getattr(args, k)}" for k in ("n", "m", "depth", "d")]]
            stats[method] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            kernels[method] = torch.load(out)
    rel = float((kernels["callback"] - kernels["jacrev"]).norm() / kernels["jacrev"].norm())
    print(f"n={args.n} m={args.m} H={args.depth} d={args.d} p={stats['jacrev']['params']:,} float64, "
          f"threads={torch.get_num_threads()}")
    for method, s in stats.items():
        print(f"  {method:8s} peak RSS growth {s['extra_mb']:9.1f} MB")
    print(f"  relative difference of the kernels: {rel:.2e}")
    callback, jacrev = kernel_fn("callback", *sizes)[0], kernel_fn("jacrev", *sizes)[0]
    callback(), jacrev()  # warm-up
    ratios = alternating_pairs(lambda: seconds(callback), lambda: seconds(jacrev), args.pairs, "s",
                               labels=("callback", "jacrev"))
    print(f"memory ratio callback/jacrev: {stats['callback']['extra_mb'] / max(stats['jacrev']['extra_mb'], 1e-9):.4f}")
    print(summary(ratios, "time ratio callback/jacrev", "<= 0.1"))


if __name__ == "__main__":
    main()
