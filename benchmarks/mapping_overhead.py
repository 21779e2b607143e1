#!/usr/bin/env python
"""Epoch time of CNN2 trained through a Mapping Network (SLVT, d=2048) / plain CNN2, same data and batch.

    python benchmarks/mapping_overhead.py [--data-root data] [--samples 6000] [--repeats 2]

Runs train.py in this process for one epoch per variant (no validation), alternating variants ``repeats``
times and keeping each variant's fastest epoch (``train_seconds`` from results.json). Variants: the
Table 4 config as shipped (full Mapping Loss: the stability term's second forward pass on 32 samples),
and task loss only (all lambdas 0). Target: <= 1.5x.
"""
import argparse
import os
import tempfile
import time

os.environ.setdefault("WANDB_MODE", "disabled")

VARIANTS = {
    "plain CNN2": ["--config", "configs/baseline/cnn2_fmnist.yaml"],
    "mapping SLVT 2048, full loss": ["--config", "configs/mapping/cnn2_fmnist.yaml"],
    "mapping SLVT 2048, task loss": ["--config", "configs/mapping/cnn2_fmnist.yaml",
                                     "--model.lambda_stab", "0", "--model.lambda_smooth", "0",
                                     "--model.lambda_align", "0"],
}


def one_epoch(args: list[str], data_root: str, samples: int, root: str, name: str) -> tuple[float, float]:
    import train

    common = ["--data.root", data_root, "--data.max_train_samples", str(samples), "--trainer.max_epochs", "1",
              "--trainer.limit_val_batches", "0", "--trainer.limit_test_batches", "1", "--wandb", "false",
              "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
              "--trainer.default_root_dir", root, "--name", name]
    start = time.perf_counter()
    results = train.run([*args, *common])
    total = time.perf_counter() - start
    return results["train_seconds"], total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--samples", type=int, default=6000)
    parser.add_argument("--repeats", type=int, default=2)
    opts = parser.parse_args()
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as root:
        for rep in range(opts.repeats):
            for i, (label, args) in enumerate(VARIANTS.items()):
                seconds, total = one_epoch(args, opts.data_root, opts.samples, root, f"v{i}_r{rep}")
                best[label] = min(best.get(label, float("inf")), seconds)
                print(f"[{rep}] {label}: epoch {seconds:.2f} s (whole run incl. setup/test {total:.1f} s)", flush=True)
    import torch

    print(f"\n{opts.samples} samples/epoch, batch 128, torch threads {torch.get_num_threads()}")
    base = best["plain CNN2"]
    for label, seconds in best.items():
        print(f"{label:32s} {seconds:7.2f} s/epoch   ratio {seconds / base:.2f}x")


if __name__ == "__main__":
    main()
