"""train.py vs bare Lightning vs a hand-written PyTorch loop: CNN2 on Fashion-MNIST, same data, batch, optimizer.

    python benchmarks/overhead.py --data-root ../shared/data [--steps 1000] [--pairs 5] [--device cuda]

The ``train.py`` side is ``train.run`` (exactly what ``python train.py`` runs: our datamodule, SupervisedModule with
its torchmetrics, CSV logging, checkpoint/NaN/RNG callbacks), timed by the run's own ``train_samples_per_second``;
the hand loop indexes the same in-memory tensors, normalises, and steps the same Adam. With ``--device cuda`` both
train on the GPU and the hand loop copies each batch there, as a DataLoader-fed loop does. Prints the median of the
per-round throughput ratios over alternating rounds and their spread (target train.py/hand >= 0.95).

A third side, ``bare``, is Lightning's own loop with nothing of ours but the datamodule: a minimal LightningModule
(CNN2, cross-entropy, Adam) in a ``pl.Trainer`` without logger, checkpoints or callbacks (``RunStats`` times it), so
the output separates what Lightning's loop costs per step (bare/hand) from what our stack adds (train.py/bare).
All sides run with freed heap memory kept (``train.keep_freed_memory``, what train.py does by default): otherwise
glibc's trimming makes one side or the other pay page faults depending on the heap's layout, not on its own work.
"""
import argparse
import tempfile
import time

import pytorch_lightning as pl
import torch

import train
from callbacks import RunStats
from nets import CNN2
from pairs import alternating_rounds, ratios_to, summary


def lightning_run(data_root: str, batch_size: int, steps: int, out: str, device: str) -> float:
    """Samples/s of the train.py path over ``steps`` optimizer steps (no validation; the final test is not timed)."""
    args = ["--config", "configs/default.yaml", "--data.root", data_root, "--data.batch_size", str(batch_size),
            "--trainer.max_steps", str(steps), "--trainer.max_epochs", "-1", "--trainer.limit_val_batches", "0",
            "--trainer.limit_test_batches", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--wandb", "false", "--trainer.default_root_dir", out,
            "--trainer.accelerator", "gpu" if device == "cuda" else "cpu", "--trainer.devices", "1"]
    return train.run(args)["train_samples_per_second"]


class MinimalModule(pl.LightningModule):
    """The least a LightningModule needs to train CNN2: what a user would write before adding anything."""

    def __init__(self) -> None:
        super().__init__()
        self.net, self.loss_fn = CNN2(), torch.nn.CrossEntropyLoss()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return self.loss_fn(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def bare_run(data_root: str, batch_size: int, steps: int, out: str, device: str) -> float:
    """Samples/s of Lightning's loop alone on our datamodule (no logger, checkpoints or callbacks but the timer)."""
    from datamodules import FashionMNISTDataModule

    pl.seed_everything(0, verbose=False)
    timer = RunStats()
    trainer = pl.Trainer(max_steps=steps, max_epochs=-1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[timer], default_root_dir=out,
                         accelerator="gpu" if device == "cuda" else "cpu", devices=1)
    trainer.fit(MinimalModule(), FashionMNISTDataModule(root=data_root, download=False, batch_size=batch_size))
    return timer.summary()["train_samples_per_second"]


def hand_run(images: torch.Tensor, targets: torch.Tensor, mean: float, std: float, batch_size: int,
             steps: int, device: str) -> float:
    torch.manual_seed(0)
    net = CNN2().to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    done, start = 0, time.perf_counter()
    while done < steps:
        order = torch.randperm(len(targets))
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            x = (images[idx].to(device, non_blocking=True).float().div_(255) - mean) / std
            loss = loss_fn(net(x), targets[idx].to(device, non_blocking=True))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    opts = parser.parse_args()
    if opts.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but torch sees no CUDA device")

    from datamodules import FashionMNISTDataModule

    allocator = "freed memory kept (glibc)" if train.keep_freed_memory() else "default allocator"
    train.quiet_console()
    dm = FashionMNISTDataModule(root=opts.data_root, download=False)
    dm.prepare_data()
    dm.setup("fit")
    images, targets = dm.train_set.images, dm.train_set.targets
    print(f"CNN2 / Fashion-MNIST ({len(targets)} train images at {opts.data_root}), batch {opts.batch_size}, "
          f"{opts.steps} steps per run, {opts.device}, torch threads {torch.get_num_threads()}, {allocator}; "
          "train.py path, bare Lightning loop and hand loop, samples/s")
    run_args = (opts.data_root, opts.batch_size, opts.steps)
    with tempfile.TemporaryDirectory() as out:
        values = alternating_rounds({
            "train.py": lambda: lightning_run(*run_args, out, opts.device),
            "bare": lambda: bare_run(*run_args, out, opts.device),
            "hand": lambda: hand_run(images, targets, dm.mean[0], dm.std[0], opts.batch_size, opts.steps, opts.device),
        }, opts.pairs, "samples/s", base="hand")
    to_hand = ratios_to(values, "hand")
    print(summary(to_hand["train.py"], "throughput ratio train.py/hand", ">= 0.95"))
    print(summary(to_hand["bare"], "throughput ratio bare Lightning/hand (Lightning's own loop)"))
    print(summary(ratios_to(values, "bare")["train.py"], "throughput ratio train.py/bare Lightning (our stack)"))


if __name__ == "__main__":
    main()
