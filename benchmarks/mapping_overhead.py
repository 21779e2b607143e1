#!/usr/bin/env python
"""Epoch time of CNN2 trained through a Mapping Network (SLVT, d=2048) / plain CNN2, same data, batch 128.

    python benchmarks/mapping_overhead.py [--data-root data] [--samples 6000] [--pairs 5]

One process; each round trains every variant for one epoch through ``train.run`` (no validation), the order
reversed every other round (``pairs.alternating_rounds``), so each round gives one ratio per mapped variant against
the plain epoch of the same round. Printed: the median ratio over the rounds and its spread (min-max). Variants: the Table 4 config as shipped (the full Mapping Loss,
the stability term's noisy pass on 32 samples), the same with the stability term on 16 samples (an unbiased
estimate of the same expectation with a larger variance, measured by ``--variance``), and task loss only
(all lambdas 0). Targets (issue 16): full loss <= 1.5x, task loss only <= 1.15x.

``--variance`` also prints the per-step spread of the stability estimate at 32 and 16 samples (fixed z, fresh
eps and batch per draw), so the cheaper setting's extra noise is on record.
"""
import argparse
import itertools
import os
import statistics
import tempfile
from functools import partial

from pairs import alternating_rounds, ratios_to, summary

os.environ.setdefault("WANDB_MODE", "disabled")

MAPPED = ["--config", "configs/mapping/cnn2_fmnist.yaml"]  # SLVT 2048
VARIANTS = {
    "plain CNN2": ["--config", "configs/baseline/cnn2_fmnist.yaml"],
    "mapping, full loss": MAPPED,
    "mapping, full loss, stab 16": [*MAPPED, "--model.stab_samples", "16"],
    "mapping, task loss only": [*MAPPED, "--model.lambda_stab", "0", "--model.lambda_smooth", "0",
                                "--model.lambda_align", "0"],
}


def one_epoch(args: list[str], data_root: str, samples: int, root: str, name: str) -> float:
    import train

    results = train.run([*args, "--data.root", data_root, "--data.max_train_samples", str(samples),
                         "--data.batch_size", "128", "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0",
                         "--trainer.limit_test_batches", "1", "--wandb", "false",
                         "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                         "--trainer.default_root_dir", root, "--name", name])
    return results["train_seconds"]


def stability_spread(data_root: str, draws: int) -> None:
    """Mean and std over draws of the stability estimate at a trained-like latent (||z|| ~ 20)."""
    import torch
    from torch.func import functional_call

    from datamodules import FashionMNISTDataModule
    from lit_modules import MappingNetModule
    from nets import CNN2
    from nets.mapping import LatentMapping

    torch.manual_seed(0)
    module = MappingNetModule(CNN2(), partial(LatentMapping, strategy="slvt", latent_dim=2048,
                                              latent_init_std=20 / 2048 ** 0.5))
    data = FashionMNISTDataModule(root=data_root, batch_size=128, max_train_samples=128 * draws)
    data.setup("fit")
    with torch.no_grad():
        for k in (32, 16):
            module.hparams.stab_samples = k
            values = []
            for batch in data.train_dataloader():
                x, _ = data.on_after_batch_transfer(batch, 0)
                params, aux = module.generated()
                values.append(float(module.stability(x, functional_call(module.net, params, (x,)), params, aux)))
            mean, std = statistics.fmean(values), statistics.stdev(values)
            print(f"stability estimate on {k} samples: mean {mean:.4g}, std over {len(values)} steps {std:.3g} "
                  f"({std / mean:.1%} of the mean)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--samples", type=int, default=6000)
    parser.add_argument("--pairs", type=int, default=5, help="rounds (>= 5: one ratio per round and variant)")
    parser.add_argument("--variance", action="store_true", help="also print the stability estimate's spread")
    opts = parser.parse_args()
    runs = itertools.count()
    with tempfile.TemporaryDirectory() as root:
        one_epoch(VARIANTS["plain CNN2"], opts.data_root, 256, root, "warmup")  # imports, data decoding
        epoch = lambda args: one_epoch(args, opts.data_root, opts.samples, root, f"run{next(runs)}")  # noqa: E731
        seconds = alternating_rounds({label: partial(epoch, args) for label, args in VARIANTS.items()}, opts.pairs,
                                     "s/epoch", base="plain CNN2")
    import torch

    base = seconds["plain CNN2"]
    print(f"\n{opts.samples} samples/epoch, batch 128, torch threads {torch.get_num_threads()}, {opts.pairs} rounds")
    print(f"{'plain CNN2':30s} median {statistics.median(base):6.2f} s/epoch (min {min(base):.2f}, max {max(base):.2f})")
    targets = {"mapping, full loss": "<= 1.5", "mapping, task loss only": "<= 1.15"}
    for label, ratios in ratios_to(seconds, "plain CNN2").items():
        print(summary(ratios, f"{label} / plain CNN2, epoch time ratio", targets.get(label, "")))
    if opts.variance:
        stability_spread(opts.data_root, 20)


if __name__ == "__main__":
    main()
