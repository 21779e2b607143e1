"""On a GPU, reading a value back to the host makes it wait for the device's queue: ordinary training steps must not.

Counted on the CPU by the aten ops that read back (``item``/``float``/``bool``, data-dependent shapes), so it holds
without a GPU. Found on an H200: NaNGuard's per-step ``float(loss)`` and Lightning converting the progress-bar loss
after every batch (even with the bar off) held the train.py path to 0.40-0.56x of a plain loop (benchmarks/overhead.py).
"""
import sys
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import train
from callbacks import NaNGuard, NonFiniteLossError
from tests.conftest import FMNIST_SLICE, QUIET

READS = {"_local_scalar_dense", "is_nonzero", "nonzero", "_unique2", "unique_dim", "unique_consecutive",
         "masked_select", "equal"}
# by design: a non-capturable optimizer keeps its step counter on the host; NaNGuard reads a CPU loss every step
# (free there) and folds a GPU one into a device flag instead (test_a_gpu_loss_is_folded_and_read_at_log_steps)
HOST_SIDE = {NaNGuard.on_train_batch_end.__code__}


class HostReads(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        if func.__name__.split(".")[0] in READS and not self._host_side():
            self.count += 1
        return func(*args, **(kwargs or {}))

    @staticmethod
    def _host_side() -> bool:
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_code in HOST_SIDE or "torch/optim/" in frame.f_code.co_filename.replace("\\", "/"):
                return True
            frame = frame.f_back
        return False


class ReadsPerBatch(pl.Callback):
    """Counts reads during training, from one batch's start to the next's, and whether that batch writes logs.

    Given to train.py as ``--trainer.callbacks+``; each instance adds itself to ``RUNS``."""

    def __init__(self) -> None:
        self.reads, self.marks = HostReads(), []
        RUNS.append(self)

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.reads.__enter__()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.marks.append((self.reads.count, pl_module.logs_this_step()))

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.reads.__exit__(None, None, None)
        self.marks.append((self.reads.count, True))


RUNS: list[ReadsPerBatch] = []


@pytest.mark.parametrize("config,bar", [("configs/default.yaml", False), ("configs/default.yaml", True),
                                        ("configs/mapping/cnn2_fmnist.yaml", False)])
def test_ordinary_steps_read_nothing_back(config: str, bar: bool, tmp_path: Path) -> None:
    args = ["--config", config, "--data.root", str(FMNIST_SLICE), "--data.max_train_samples", "640",
            "--data.batch_size", "20", "--trainer.max_epochs", "1", "--trainer.log_every_n_steps", "7",
            "--data.val_fraction", "0.05", "--trainer.limit_test_batches", "1",
            "--trainer.callbacks+", f"{__name__}.ReadsPerBatch", "--trainer.default_root_dir", str(tmp_path), *QUIET,
            "--trainer.enable_progress_bar", str(bar).lower()]
    if "mapping" in config:
        args += ["--model.mapping.latent_dim", "64"]
    RUNS.clear()
    train.run(args)
    (run,) = RUNS
    per_batch = [(b - a, writes) for (a, writes), (b, _) in zip(run.marks, run.marks[1:])]
    ordinary = [n for n, writes in per_batch[:-1] if not writes]  # the last batch closes the epoch (metrics, saves)
    assert len(ordinary) >= 25 and ordinary == [0] * len(ordinary)
    assert sum(n for n, writes in per_batch if writes) > 0  # the count sees the written steps' reads


def test_a_gpu_loss_is_folded_and_read_at_log_steps() -> None:
    guard = NaNGuard()
    for step, loss in enumerate([1.0, 0.5, float("nan"), float("inf"), 0.2], start=1):
        guard._fold(torch.tensor(loss), step)
    with pytest.raises(NonFiniteLossError, match=r"non-finite train/loss \(nan\) at step 3"):
        guard._raise_if_bad()
    fine = NaNGuard()
    fine._fold(torch.tensor(2.0), 1)
    fine._raise_if_bad()
