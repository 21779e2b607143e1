"""Neuron Pursuit throughput: GD steps/s of NeuronPursuitModule's inner loop vs a plain PyTorch full-batch loop.

    OMP_NUM_THREADS=1 python benchmarks/neuron_pursuit.py [--sizes fig6 g1 pvr] [--pairs 5]

For each size (Fig. 6: 500 x 20, widths [2, 1], ReLU; g1: 1600 x 50, widths [4, 1], leaky ReLU 0.5; PVR: the
paper's 100,000 x 21 with its final widths [34, 9], ReLU), both loops run on the same net (float64, the configs'
dtype) and data:
- plain: ``opt.zero_grad(); ((net(x) - y) ** 2).mean().backward(); opt.step()`` with ``torch.optim.SGD``;
- module: ``NeuronPursuitModule`` in a Lightning ``Trainer`` (manual optimisation, ``gd_steps_per_batch`` GD steps
  per Lightning step, ``last.ckpt`` written every epoch as train.py does); the time of its second epoch, from the
  epoch start to the end of fit, so Lightning's per-step and per-epoch work counts and its one-off setup does not.
The ratio (module steps/s over plain steps/s) is the median of ``--pairs`` alternating pairs in one process,
spread min-max. The target is >= 0.8. Also printed: the plain loop in float32 (what the
module would gain from float32; NP keeps float64, docs/neuron_pursuit.md "Performance") and one NP growth
iteration (PGA, H = 10 restarts x 2500 steps on every layer) in GD steps of the module.
"""
import argparse
import logging
import statistics
import tempfile
import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from datamodules.synthetic import FullBatchDataModule
from lit_modules.neuron_pursuit import NeuronPursuitModule
from nets.neuron_pursuit.ncf import growth_objective, growth_problems, pga
from pairs import alternating_rounds, ratios_to, summary

# name -> (n, d, widths, alpha, GD steps per measurement)
SIZES: dict[str, tuple[int, int, list[int], float, int]] = {
    "fig6": (500, 20, [2, 1], 0.0, 2000),
    "g1": (1600, 50, [4, 1], 0.5, 2000),
    "pvr": (100_000, 21, [34, 9], 0.0, 60),
}


class Tensors(FullBatchDataModule):
    """Fixed tensors as a full-batch datamodule (one batch per epoch, like the NP datamodules)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        super().__init__()
        self.x, self.y = x, y

    def generate(self, generator: torch.Generator) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {"train": (self.x, self.y), "test": (self.x[:10], self.y[:10])}


class LastEpochTimer(Callback):
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds = time.perf_counter() - self.start


def problem(n: int, d: int, widths: list[int], alpha: float) -> tuple[NeuronPursuitModule, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (n, d), generator=gen).double() * 2 - 1
    y = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    module = NeuronPursuitModule(d, 1, len(widths) + 1, alpha, 1, widths, lr=1e-4, init_radius=1.0)
    return module, x, y


def plain_steps_per_s(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    opt = torch.optim.SGD(net.parameters(), lr=1e-4)
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        ((net(x) - y) ** 2).mean().backward()
        opt.step()
    return steps / (time.perf_counter() - start)


def module_steps_per_s(module: NeuronPursuitModule, data: Tensors, steps: int) -> float:
    module.gd_steps_per_batch = steps
    timer = LastEpochTimer()
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(max_epochs=2, logger=pl.loggers.CSVLogger(root), default_root_dir=root,
                             callbacks=[timer, ModelCheckpoint(dirpath=f"{root}/checkpoints", save_last=True)],
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                             log_every_n_steps=1, accelerator="cpu", devices=1)
        trainer.fit(module, datamodule=data)
    return steps / timer.seconds


def growth_iteration_seconds(module: NeuronPursuitModule, x: torch.Tensor, y: torch.Tensor) -> float:
    gen = torch.Generator().manual_seed(0)
    net = module.net
    start = time.perf_counter()
    for g, c in growth_problems(net, x, y):
        pga(growth_objective(g, c, net.alpha, net.power), g.shape[1] + c.shape[1], 10, 0.2, 2500, gen)
    return time.perf_counter() - start


def measure(name: str, pairs: int, growth: bool) -> dict[str, Any]:
    n, d, widths, alpha, steps = SIZES[name]
    module, x, y = problem(n, d, widths, alpha)
    data = Tensors(x, y)
    plain_net = module.net  # the same net object: both loops move the same weights from wherever they are
    plain_steps_per_s(plain_net, x, y, max(steps // 10, 2))  # warm-up
    print(f"{name}: GD steps/s")
    values = alternating_rounds({"module": lambda: module_steps_per_s(module, data, steps),
                                 "plain": lambda: plain_steps_per_s(plain_net, x, y, steps)}, pairs, base="plain")
    ratios = ratios_to(values, "plain")["module"]
    print(summary(ratios, f"{name}: ratio module / plain", ">= 0.8"), flush=True)
    net32 = type(plain_net)(d, 1, len(widths) + 1, alpha, 1, widths, dtype=torch.float32)
    net32.set_flat(plain_net.flat().float())
    plain32 = statistics.median(plain_steps_per_s(net32, x.float(), y.float(), steps) for _ in range(3))
    out = {"size": name, "n": n, "widths": widths, "plain": statistics.median(values["plain"]),
           "module": statistics.median(values["module"]), "ratio": statistics.median(ratios),
           "ratio_min": min(ratios), "ratio_max": max(ratios), "plain_float32": plain32}
    if growth:
        out["growth_s"] = growth_iteration_seconds(module, x, y)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)  # one Trainer per pair: no banners
    results = [measure(name, args.pairs, growth=name != "pvr") for name in args.sizes]
    print(f"\nGD steps/s, float64, {torch.get_num_threads()} thread(s), median of {args.pairs} alternating pairs, "
          f"ratio spread min-max")
    print("| size | n | widths | plain loop | NP module | ratio (min-max) | plain loop float32 | growth iteration |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        name = r["size"]
        growth = f"{r['growth_s']:.2f} s = {r['growth_s'] * r['module']:.0f} GD steps" if "growth_s" in r else "-"
        print(f"| {name} | {r['n']} | {r['widths']} | {r['plain']:.0f} | {r['module']:.0f} | **{r['ratio']:.2f}** "
              f"({r['ratio_min']:.2f}-{r['ratio_max']:.2f}) | {r['plain_float32']:.0f} | {growth} |", flush=True)


if __name__ == "__main__":
    main()
