#!/usr/bin/env python
"""Peak memory of one training step through a Mapping Network vs the plain net (each in a fresh process).

    python benchmarks/mapping_memory.py [--r18-batch 64] [--r50-batch 2] [--cases r18 r50] [--pairs 5]

ResNet-18 (CIFAR, 10 classes) LWT with 20,000 latents vs plain ResNet-18 (target: < 1 GB extra; a dense
mapping would need ~40 GB), and ResNet-50 (1000 classes, 25.6M generated parameters) SLVT d=2048 vs plain
ResNet-50 (target: < 4 GB RSS; dense: ~209 GB). Memory is peak RSS (CPU) or peak CUDA memory with --cuda, from
the first pair's processes. The step-time ratio mapped/plain is the median of ``--pairs`` alternating pairs of
fresh processes (one step each), spread min-max.
"""
import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

from pairs import alternating_rounds, ratios_to, summary

ROOT = Path(__file__).resolve().parent.parent

CASES = {"r18": ("nets.CifarResNet18", dict(num_classes=10), (3, 32, 32), dict(strategy="lwt", latent_dim=20_000)),
         "r50": ("nets.ResNet50", dict(num_classes=1000), (3, 224, 224), dict(strategy="slvt", latent_dim=2048))}


def child(case: str, mapped: bool, batch: int, cuda: bool) -> dict:
    import torch

    import nets
    from lit_modules import MappingNetModule
    from nets.mapping import LatentMapping

    warnings.filterwarnings("ignore")
    cls, kwargs, shape, mapping = CASES[case]
    device = "cuda" if cuda else "cpu"
    torch.manual_seed(0)
    start = time.perf_counter()
    net = getattr(nets, cls.split(".")[1])(**kwargs)
    module = MappingNetModule(net, functools.partial(LatentMapping, **mapping), num_classes=kwargs["num_classes"]) \
        if mapped else net
    module = module.to(device)
    build = time.perf_counter() - start
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-3)
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, kwargs["num_classes"], (batch,), device=device)
    start = time.perf_counter()
    loss = module.training_step((x, y), 0) if mapped else torch.nn.functional.cross_entropy(module(x), y)
    loss.backward()
    opt.step()
    step = time.perf_counter() - start
    out = {"build_s": round(build, 2), "step_s": round(step, 4),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "trainable": sum(p.numel() for p in module.parameters() if p.requires_grad)}
    if mapped:
        out.update(mapper_mb=round(module.mapping.memory_bytes() / 2**20, 1),
                   latent_count=module.mapping.latent_count(), generated=sum(p.numel() for p in net.parameters()))
    if cuda:
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def run_child(case: str, mapped: bool, batch: int, cuda: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", case, "--batch", str(batch)] + (["--mapped"] if mapped else []) + \
          (["--cuda"] if cuda else [])
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "WANDB_MODE": "disabled"})
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", choices=list(CASES))
    parser.add_argument("--mapped", action="store_true")
    parser.add_argument("--batch", type=int, default=0)
    parser.add_argument("--r18-batch", type=int, default=64)
    parser.add_argument("--r50-batch", type=int, default=2)
    parser.add_argument("--cuda", action="store_true")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--pairs", type=int, default=5)
    opts = parser.parse_args()
    if opts.child:
        print(json.dumps(child(opts.child, opts.mapped, opts.batch, opts.cuda)))
        return
    key = "peak_cuda_mb" if opts.cuda else "peak_rss_mb"
    labels = {"r18": ("ResNet-18 LWT 20K", opts.r18_batch), "r50": ("ResNet-50 SLVT 2048", opts.r50_batch)}
    for case in opts.cases:
        label, batch = labels[case]
        rows: dict[bool, list[dict]] = {False: [], True: []}

        def step_s(mapped: bool) -> float:
            rows[mapped].append(run_child(case, mapped, batch, opts.cuda))
            return rows[mapped][-1]["step_s"]

        print(f"{label} (batch {batch}): step s, each in a fresh process", flush=True)
        seconds = alternating_rounds({"mapped": lambda: step_s(True), "plain": lambda: step_s(False)}, opts.pairs,
                                     "s", base="plain")
        plain, mapped = rows[False][0], rows[True][0]
        print(f"{label} (batch {batch}): plain {json.dumps(plain)}")
        print(f"{label} (batch {batch}): mapped {json.dumps(mapped)}")
        print(f"{label}: {key} plain {plain[key]:.0f} MB, mapped {mapped[key]:.0f} MB, extra "
              f"{mapped[key] - plain[key]:.0f} MB; {summary(ratios_to(seconds, 'plain')['mapped'], 'step time ratio')}",
              flush=True)


if __name__ == "__main__":
    main()
