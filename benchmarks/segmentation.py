#!/usr/bin/env python
"""Training images/s of CNN3 trained through a Mapping Network (Table 6 configs) / plain CNN3, at 256x256.

    python benchmarks/segmentation.py [--batch-size 16] [--steps 20] [--warmup 3] [--size 256] [--device auto]
                                      [--pairs 5]

Each variant is built from its config's model section (``configs/baseline/cnn3_cityscapes.yaml``,
``configs/mapping/cnn3_cityscapes.yaml`` with the mappings of ``configs/mapping/grids/table6_cityscapes.yaml``;
"task loss": all lambdas 0, so without the stability
term's second forward pass) and trained by a Lightning ``Trainer`` on random images
and labels already on the device (so data loading is not measured: this is the model + optimiser cost). The
clock runs from the end of warm-up step ``warmup`` to the last step. All variants run in this process in alternating
rounds (order reversed every other round); each variant's time ratio to plain CNN3 (always measured) is the median
of ``--pairs`` alternating pairs, spread min-max.
"""
import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("WANDB_MODE", "disabled")

import pytorch_lightning as pl
import torch
import yaml
from jsonargparse import ArgumentParser

from pairs import alternating_rounds, ratios_to, summary

MAPPED = "configs/mapping/cnn3_cityscapes.yaml"
SLVT, LWT = ({"mapping": {"class_path": "nets.mapping.LatentMapping",
                          "init_args": {"strategy": strategy, "latent_dim": d, "projector": "hadamard"}}}
             for strategy, d in (("slvt", 8192), ("lwt", 9126)))
TASK_ONLY = {"lambda_stab": 0.0, "lambda_smooth": 0.0, "lambda_align": 0.0}  # no second forward pass
VARIANTS = {
    "CNN3": ("configs/baseline/cnn3_cityscapes.yaml", {}),
    "mapping SLVT 8192": (MAPPED, SLVT),
    "mapping LWT 9126": (MAPPED, LWT),
    "SLVT 8192 task loss": (MAPPED, {**SLVT, **TASK_ONLY}),
    "LWT 9126 task loss": (MAPPED, {**LWT, **TASK_ONLY}),
}


def build_model(config: str, overrides: dict[str, Any]) -> pl.LightningModule:
    """The LightningModule of a config file (with ``init_args`` overrides), instantiated as train.py would."""
    parser = ArgumentParser()
    parser.add_subclass_arguments(pl.LightningModule, "model")
    model = yaml.safe_load((ROOT / config).read_text())["model"]
    model["init_args"].update(overrides)
    cfg = parser.parse_object({"model": model})
    return parser.instantiate(cfg).model


class StepClock(pl.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def sync(self, module: pl.LightningModule) -> float:
        if module.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any) -> None:
        if trainer.global_step == self.warmup:
            self.start = self.sync(module)
        self.end = self.sync(module)


def seconds_per_image(config: str, overrides: dict[str, Any], batch: int, steps: int, warmup: int, size: int,
                      device: str) -> float:
    torch.manual_seed(0)
    model = build_model(config, overrides)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 19, (batch, size, size))
    y[:, :8] = 255  # some ignored pixels, as in Cityscapes
    data = [(x, y)] * (warmup + steps)
    clock = StepClock(warmup)
    trainer = pl.Trainer(accelerator=device, devices=1, max_epochs=1, max_steps=warmup + steps, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[clock], limit_val_batches=0)
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=None))
    return (clock.end - clock.start) / (steps * batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--pairs", type=int, default=5)
    opts = parser.parse_args()
    labels = ["CNN3"] + [label for label in opts.variants if label != "CNN3"]  # the baseline of every ratio
    on_gpu = torch.cuda.is_available() and opts.device != "cpu"
    where = torch.cuda.get_device_name() if on_gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"{opts.size}x{opts.size}, batch {opts.batch_size}, {opts.steps} timed steps after {opts.warmup}, {where}")
    seconds = alternating_rounds({label: (lambda label=label: seconds_per_image(
        *VARIANTS[label], opts.batch_size, opts.steps, opts.warmup, opts.size, opts.device)) for label in labels},
        opts.pairs, "s/image", base="CNN3")
    ratios = ratios_to(seconds, "CNN3")
    print()
    for label in labels:
        rate = f"{1 / statistics.median(seconds[label]):8.2f} images/s (median)"
        print(f"{label:22s} {rate}" + (f"   {summary(ratios[label], 'time ratio')}" if label in ratios else ""))


if __name__ == "__main__":
    main()
