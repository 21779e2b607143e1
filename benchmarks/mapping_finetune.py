#!/usr/bin/env python
"""Memory and time per step of Eq. 25 fine-tuning of ResNet-50 vs ordinary fine-tuning, each case in a fresh process.

    python benchmarks/mapping_finetune.py [--size 112] [--batch 4] [--steps 3] [--cuda] [--pairs 5] [--cases 0 2]

Cases: plain fine-tuning of all weights / of layer4+fc (Adam on the weights), and the mapping with L = 1, 250,
25000 on both layer sets (d = 2048 / 1024, the configs' Mapping Loss: stability on 8 samples, smoothness,
alignment), and L = 1 on all weights with the task loss only (``task-only``: no second forward pass). Per case: the mapper's bytes, the RSS the method adds on top of the loaded pretrained net
(``added_mb``: building the module, its optimizer and the steps; CPU) or peak CUDA memory, and the median step
time. Ratios are against plain fine-tuning of all weights (always measured): all cases run in alternating rounds
(order reversed every other round, a fresh process each); the time ratio is the median of ``--pairs`` alternating
pairs, spread min-max; memory comes from the first round. The pretrained weights are a
random torchvision ResNet-50 saved once to a temporary .pth (only the shapes matter here).
"""
import argparse
import functools
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from pairs import alternating_rounds, ratios_to, summary


CASES = [("plain", "all", 0), ("plain", "layer4+fc", 0)] + [
    ("mapping", layers, tie) for layers in ("all", "layer4+fc") for tie in (1, 250, 25000)] + [("task-only", "all", 1)]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def checksum(module: torch.nn.Module) -> torch.Tensor:
    return torch.stack([p.detach().double().sum() for p in module.parameters()])


def one(kind: str, layers: str, tie: int, size: int, batch: int, steps: int, weights: str, cuda: bool) -> dict:
    """Build, then ``steps`` training steps; JSON-able measurements."""
    from lit_modules import FineTuneModule, MappingFineTuneModule
    from nets import ResNet50
    from nets.mapping import ModulationMapping

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    device = "cuda" if cuda else "cpu"
    net = ResNet50(num_classes=2, weights_path=weights).to(device)
    before_module = rss_mb()
    start = time.perf_counter()
    if kind in ("mapping", "task-only"):
        lambdas = dict(lambda_stab=0.0, lambda_smooth=0.0, lambda_align=0.0) if kind == "task-only" else {}
        mapping = functools.partial(ModulationMapping, layers=layers, tie=tie,
                                    latent_dim=2048 if layers == "all" else 1024)
        module = MappingFineTuneModule(net, mapping, stab_samples=min(8, batch), num_classes=2, **lambdas).to(device)
    else:
        module = FineTuneModule(net, layers)
    build_s = time.perf_counter() - start
    optimizer = module.configure_optimizers()
    module.train()
    frozen = checksum(module.net)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 2, (batch,), device=device)
    times = []
    for _ in range(steps):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = module.training_step((x, y), 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    row = {"kind": kind, "layers": layers, "tie": tie, "build_s": round(build_s, 2),
           "step_s": round(statistics.median(times), 5),
           "added_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before_module, 1),
           "trainable_params": module.parameter_counts()["trainable_params"] if kind != "plain" else
           sum(p.numel() for p in module.parameters() if p.requires_grad)}
    if cuda:
        row["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    if kind != "plain":
        row.update(finetuned_params=module.mapping.size, elements=module.mapping.elements,
                   projector=module.mapping.projector.kind, mapper_mb=round(module.mapping.memory_bytes() / 2**20, 2),
                   z_changed=bool(module.mapping.latents[0].abs().sum() > 0),
                   frozen_unchanged=bool(torch.equal(frozen, checksum(module.net))))
    return row


def name(kind: str, layers: str, tie: int) -> str:
    return f"{kind} {layers}" + (f" L={tie}" if kind != "plain" else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--cuda", action="store_true")
    parser.add_argument("--weights", help="torchvision ResNet-50 .pth (default: a random one in a temp folder)")
    parser.add_argument("--one", choices=("plain", "mapping", "task-only"), help="measure one case in this process")
    parser.add_argument("--layers", default="all")
    parser.add_argument("--tie", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--cases", type=int, nargs="+", default=list(range(len(CASES))), choices=range(len(CASES)),
                        help=f"indices into {CASES} (0, plain fine-tuning of all weights, is always measured)")
    args = parser.parse_args()
    common = ["--size", str(args.size), "--batch", str(args.batch), "--steps", str(args.steps)]
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights or str(Path(tmp) / "resnet50_random.pth")
        if not Path(weights).is_file():
            import torchvision

            torch.manual_seed(0)
            torch.save(torchvision.models.resnet50().state_dict(), weights)
        if args.one:
            print(json.dumps(one(args.one, args.layers, args.tie, args.size, args.batch, args.steps, weights,
                                 args.cuda)))
            return
        cases = {name(*CASES[i]): CASES[i] for i in [0] + [i for i in args.cases if i != 0]}
        rows: dict[str, list[dict]] = {label: [] for label in cases}

        def step_s(label: str) -> float:
            kind, layers, tie = cases[label]
            cmd = [sys.executable, __file__, "--one", kind, "--layers", layers, "--tie", str(tie), "--weights",
                   weights, *common, *(["--cuda"] if args.cuda else [])]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows[label].append(json.loads(out.stdout.strip().splitlines()[-1]))
            return rows[label][-1]["step_s"]

        base = name(*CASES[0])
        seconds = alternating_rounds({label: (lambda label=label: step_s(label)) for label in cases}, args.pairs,
                                     "s/step", base=base)
    ratios = ratios_to(seconds, base)
    mem = "peak_cuda_mb" if args.cuda else "added_mb"
    print(f"\nResNet-50, {args.size}x{args.size}, batch {args.batch}, median of {args.steps} steps, "
          f"{'CUDA' if args.cuda else 'CPU 1 thread'}; ratios vs plain fine-tuning of all weights (time: median of "
          f"{args.pairs} alternating pairs, spread min-max; memory: first round)")
    print(f"{'case':<26}{'trainable':>12}{'mapper MB':>11}{mem:>13}{'step s':>9}{'mem x':>7}  time x")
    for label, runs in rows.items():
        r = runs[0]
        time_x = summary(ratios[label], "time ratio") if label in ratios else ""
        print(f"{label:<26}{r['trainable_params']:>12,}{r.get('mapper_mb', 0):>11.1f}{r[mem]:>13.1f}"
              f"{statistics.median(seconds[label]):>9.3f}{r[mem] / rows[base][0][mem]:>7.2f}  {time_x}")


if __name__ == "__main__":
    main()
