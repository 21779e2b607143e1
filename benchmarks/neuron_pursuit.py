"""Neuron Pursuit timings: GD step (Lightning vs a hand loop, explicit backprop vs autograd) and one NP iteration.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/neuron_pursuit.py [--steps 20000] [--task fig6 --n 500]

Baselines are measured in the same run, on the same net (Fig. 6 task, widths [2, 1] by default). Times are
process CPU time (the machine is shared), the best of ``--repeats`` interleaved rounds.
"""
import argparse
import tempfile
import time

import pytorch_lightning as pl
import torch

from nets.neuron_pursuit.ncf import growth_objective, growth_problems, pga
from datamodules.synthetic import SparseFunctionDataModule
from lit_modules.neuron_pursuit import NeuronPursuitModule


def make_module(dm: SparseFunctionDataModule, widths: list[int], steps_per_batch: int) -> NeuronPursuitModule:
    x, _ = dm.train_tensors()
    module = NeuronPursuitModule(x.shape[1], 1, len(widths) + 1, 0.0, 1, widths, lr=1e-3,
                                 gd_steps_per_batch=steps_per_batch, init_radius=1.0)
    return module


def hand_loop(module: NeuronPursuitModule, x: torch.Tensor, y: torch.Tensor, steps: int, autograd: bool) -> float:
    net, params = module.net, list(module.net.weights)
    opt = torch.optim.SGD(params, lr=1e-3, foreach=True)
    start = time.process_time()
    for _ in range(steps):
        if autograd:
            grads = torch.autograd.grad((net(x) - y).square().mean(), params)
        else:
            grads = net.mse_and_grads(x, y)[1]
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
    return (time.process_time() - start) / steps


def lightning_loop(dm: SparseFunctionDataModule, widths: list[int], steps: int, per_batch: int, ckpt: bool) -> float:
    module = make_module(dm, widths, per_batch)
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(max_epochs=steps // per_batch, logger=pl.loggers.CSVLogger(root), default_root_dir=root,
                             enable_checkpointing=ckpt, enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0, log_every_n_steps=1, accelerator="cpu", devices=1)
        start = time.process_time()
        trainer.fit(module, datamodule=dm)
        return (time.process_time() - start) / steps


def np_iteration(dm: SparseFunctionDataModule, widths: list[int], restarts: int, pga_steps: int) -> float:
    module = make_module(dm, widths, 1)
    x, y = dm.train_tensors()
    gen = torch.Generator().manual_seed(0)
    start = time.process_time()
    for g, c in growth_problems(module.net, x, y):
        pga(growth_objective(g, c, 0.0, 1), g.shape[1] + c.shape[1], restarts, 0.2, pga_steps, gen)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="fig6")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--widths", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--per_batch", type=int, default=1000)
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--pga_steps", type=int, default=2500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    dm = SparseFunctionDataModule(args.task, args.n, 1000)
    x, y = dm.train_tensors()
    module = make_module(dm, args.widths, 1)
    hand_loop(module, x, y, 500, autograd=False)  # warm-up
    rounds = [(hand_loop(module, x, y, args.steps, autograd=False),
               hand_loop(module, x, y, args.steps // 4, autograd=True),
               lightning_loop(dm, args.widths, args.steps, args.per_batch, ckpt=False),
               lightning_loop(dm, args.widths, args.steps, args.per_batch, ckpt=True)) for _ in range(args.repeats)]
    manual, auto, lightning, lightning_ckpt = (min(r[i] for r in rounds) for i in range(4))
    np_it = np_iteration(dm, args.widths, args.restarts, args.pga_steps)
    print(f"task {args.task}, n={args.n}, widths {args.widths}, float64, {torch.get_num_threads()} thread(s)")
    print(f"hand loop, explicit backprop : {manual * 1e6:8.1f} us / GD step")
    print(f"hand loop, autograd          : {auto * 1e6:8.1f} us / GD step  ({auto / manual:.2f}x explicit)")
    print(f"Lightning, {args.per_batch} GD steps/step : {lightning * 1e6:8.1f} us / GD step  "
          f"(ratio to hand loop {lightning / manual:.3f})")
    print(f"  + checkpoint every epoch   : {lightning_ckpt * 1e6:8.1f} us / GD step  "
          f"(ratio to hand loop {lightning_ckpt / manual:.3f})")
    print(f"NP growth iteration (PGA H={args.restarts} x {args.pga_steps} steps, all layers): {np_it:.2f} s "
          f"= {np_it / manual:.0f} GD steps")


if __name__ == "__main__":
    main()
