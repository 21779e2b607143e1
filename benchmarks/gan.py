#!/usr/bin/env python
"""WGAN-GP generator iterations per second: WGANGPModule under Lightning vs. a hand-written loop.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gan.py [--net dcgan32 --k 16 --gen-iters 20 --pairs 5]

Same nets (same init), batch 64, n_critic 5, GP 10, Adam(1e-4, (0.5, 0.999)), the same loader of in-memory random
images; the hand loop does exactly the module's per-step work (one critic pass over [real; fake; interpolates],
double backward, toggled critic for the generator step) without Lightning. Both run with freed heap memory kept, as
train.py does (``train.keep_freed_memory``; without it glibc's trimming costs both sides page faults, ~30 %). Both
time the generator iterations after ``--warmup`` of them, by process CPU time (the machine is shared). Prints the
ratio Lightning / hand loop of gen it/s as the median of ``--pairs`` alternating pairs in one process, spread
min-max (>= 0.95 is the target).
"""
import argparse
import tempfile
import time

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

import train
from lit_modules.gda_gan import WGANGPModule, critic_loss
from nets.gda_gan import DCGANCritic32, DCGANGenerator32, MLPCritic, MLPGenerator, ResNetCritic32, ResNetGenerator32
from pairs import alternating_pairs, summary

NETS = {"dcgan32": (DCGANGenerator32, DCGANCritic32, (3, 32, 32)), "resnet32": (ResNetGenerator32, ResNetCritic32,
        (3, 32, 32)), "mlp": (MLPGenerator, MLPCritic, (1, 28, 28))}


def make_nets(name: str, k: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    gen, crit, _ = NETS[name]
    torch.manual_seed(0)
    return gen(k=k), crit(k=k)


class Images(Dataset):
    """Random images in [0, 1] handed out a batch at a time (the in-memory path of the vision datamodules)."""

    def __init__(self, name: str, batches: int) -> None:
        self.x = torch.rand(batches * 64, *NETS[name][2], generator=torch.Generator().manual_seed(1))

    def __len__(self) -> int:
        return len(self.x)

    def __getitems__(self, idx: list[int]) -> tuple[torch.Tensor]:
        return (self.x[idx],)


def loader(name: str, batches: int) -> DataLoader:
    return DataLoader(Images(name, batches), batch_size=64, drop_last=True, collate_fn=lambda batch: batch)


def hand_loop(name: str, k: int, gen_iters: int, warmup: int) -> float:
    generator, critic = make_nets(name, k)
    opt_d = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-4, betas=(0.5, 0.999))
    start, critic_iters, done = None, 0, 0
    for (images,) in loader(name, 5 * (gen_iters + warmup)):
        real = images * 2 - 1
        with torch.no_grad():
            fake = generator(torch.randn(64, generator.latent_dim))
        loss_d, _, _ = critic_loss(critic, real, fake, 10.0)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        critic_iters += 1
        if critic_iters % 5 == 0:
            critic.requires_grad_(False)
            loss_g = -critic(generator(torch.randn(64, generator.latent_dim))).mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            critic.requires_grad_(True)
            done += 1
            if done == warmup:
                start = time.process_time()
    return gen_iters / (time.process_time() - start)


class Clock(pl.Callback):
    """Starts the clock when the module reaches ``warmup`` generator iterations."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start = warmup, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.start is None and pl_module.gen_iters == self.warmup:
            self.start = time.process_time()


def lightning_loop(name: str, k: int, gen_iters: int, warmup: int) -> float:
    generator, critic = make_nets(name, k)
    module = WGANGPModule(generator, critic, diag_every=10 ** 9, sample_every=10 ** 9)
    clock = Clock(warmup)
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(max_epochs=-1, max_steps=gen_iters + warmup, logger=pl.loggers.CSVLogger(root),
                             default_root_dir=root,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0, log_every_n_steps=50, accelerator="cpu", devices=1,
                             callbacks=[clock])
        trainer.fit(module, train_dataloaders=loader(name, 5 * (gen_iters + warmup)))
    return gen_iters / (time.process_time() - clock.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", choices=sorted(NETS), default="dcgan32")
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--gen-iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    allocator = "freed memory kept (glibc, as train.py)" if train.keep_freed_memory() else "default allocator"
    print(f"net={args.net} k={args.k} batch=64 n_critic=5 gen_iters={args.gen_iters} (after {args.warmup} warmup), "
          f"{allocator}; "
          f"Lightning vs hand-written loop, gen it/s (process CPU time)")
    ratios = alternating_pairs(lambda: lightning_loop(args.net, args.k, args.gen_iters, args.warmup),
                               lambda: hand_loop(args.net, args.k, args.gen_iters, args.warmup), args.pairs,
                               "gen it/s", labels=("lightning", "hand"))
    print(summary(ratios, "ratio Lightning / hand", ">= 0.95"))


if __name__ == "__main__":
    main()
