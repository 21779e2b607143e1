#!/usr/bin/env python
"""Time per training step and peak memory of CIFAR ResNet-18 trained through LWT latents (Table 11) vs plain.

    python benchmarks/mapping_resnet18.py [--batch 32] [--steps 6] [--budgets 10000 20000] [--task-only]
                                          [--cuda] [--pairs 5]

Each variant runs in a fresh process: build, one warm-up step, then ``steps`` timed steps (forward, the full
Mapping Loss as the Table 11 configs ship it -- incl. the stability term's second forward pass on 32 samples --,
backward, Adam step); the median step time is reported. ``--task-only`` adds a run per budget with all lambdas 0
(generation + one forward pass), separating the cost of the mapping from that of the regularisers. Plain:
ResNet-18 with cross-entropy and SGD. Memory is peak RSS of the process (CPU) or peak CUDA memory with --cuda,
from the first round. All variants and the plain net run in alternating rounds (order reversed every other round,
a fresh process each); each variant's step-time ratio to plain is the median of ``--pairs`` alternating pairs,
spread min-max.
"""
import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

from pairs import alternating_rounds, ratios_to, summary

ROOT = Path(__file__).resolve().parent.parent


def child(budget: int, batch: int, steps: int, cuda: bool, task_only: bool) -> dict:
    import torch

    import nets
    from lit_modules import MappingNetModule
    from nets.mapping import LatentMapping

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    device = "cuda" if cuda else "cpu"
    start = time.perf_counter()
    net = nets.CifarResNet18(num_classes=10)
    lambdas = dict(lambda_stab=0.0, lambda_smooth=0.0, lambda_align=0.0) if task_only else {}
    mapping = functools.partial(LatentMapping, strategy="lwt", latent_dim=budget)
    module = MappingNetModule(net, mapping, num_classes=10, **lambdas) if budget else net
    module = module.to(device)
    build = time.perf_counter() - start
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=0.03) if budget else torch.optim.SGD(params, lr=0.1, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    times = []
    for _ in range(steps + 1):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        opt.zero_grad()
        loss = module.training_step((x, y), 0) if budget else torch.nn.functional.cross_entropy(module(x), y)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    out = {"build_s": round(build, 2), "step_s": round(statistics.median(times[1:]), 5),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "trainable": sum(p.numel() for p in params)}
    if budget:
        out["mapper_mb"] = round(module.mapping.memory_bytes() / 2**20, 1)
    if cuda:
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def run_child(budget: int, opts: argparse.Namespace, task_only: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", str(budget), "--batch", str(opts.batch), "--steps", str(opts.steps)]
    cmd += (["--cuda"] if opts.cuda else []) + (["--task-only"] if task_only else [])
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "WANDB_MODE": "disabled"})
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--budgets", type=int, nargs="+", default=[20_000])
    parser.add_argument("--task-only", action="store_true")
    parser.add_argument("--cuda", action="store_true")
    parser.add_argument("--pairs", type=int, default=5)
    opts = parser.parse_args()
    if opts.child is not None:
        print(json.dumps(child(opts.child, opts.batch, opts.steps, opts.cuda, opts.task_only and opts.child > 0)))
        return
    import torch

    key = "peak_cuda_mb" if opts.cuda else "peak_rss_mb"
    print(f"batch {opts.batch}, median of {opts.steps} steps after 1 warm-up, torch threads "
          f"{torch.get_num_threads()}, {'CUDA' if opts.cuda else 'CPU'}")
    variants = {"plain ResNet-18": (0, False)} | {f"LWT {b}": (b, False) for b in opts.budgets} | \
        ({f"LWT {b}, task loss only": (b, True) for b in opts.budgets} if opts.task_only else {})
    runs: dict[str, list[dict]] = {label: [] for label in variants}

    def step_s(label: str) -> float:
        runs[label].append(run_child(variants[label][0], opts, variants[label][1]))
        return runs[label][-1]["step_s"]

    seconds = alternating_rounds({label: (lambda label=label: step_s(label)) for label in variants}, opts.pairs,
                                 "s/step", base="plain ResNet-18")
    for label, rows in runs.items():
        print(f"{label} (first round): {json.dumps(rows[0])}")
    plain = runs["plain ResNet-18"][0][key]
    for label, ratios in ratios_to(seconds, "plain ResNet-18").items():
        mapped = runs[label][0][key]
        print(f"{label} / plain: {summary(ratios, 'step time ratio')}; {key} {mapped / plain:.2f}x "
              f"({mapped - plain:+.0f} MB)", flush=True)


if __name__ == "__main__":
    main()
