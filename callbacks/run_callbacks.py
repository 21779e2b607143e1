"""Callbacks every run gets: parameter counts, throughput/memory stats, NaN guard, RNG state."""
import math
import random
import resource
import signal
import subprocess
import time
from typing import Any, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from callbacks.csv_logger import write_logs


def parameter_counts(module: torch.nn.Module) -> dict[str, int]:
    """``trainable_params`` and ``total_params``; a module may define ``parameter_counts()`` to report
    the count its paper uses (e.g. latent length for mapping networks)."""
    own = getattr(module, "parameter_counts", None)
    if callable(own):
        return own()
    counts = {"trainable_params": sum(p.numel() for p in module.parameters() if p.requires_grad),
              "total_params": sum(p.numel() for p in module.parameters())}
    nonzero = getattr(getattr(module, "net", None), "nonzero_params", None)  # a pruned net counts what it uses
    if callable(nonzero):
        counts["inference_params"] = nonzero()
    return counts


class ParameterCounts(Callback):
    """Logs total and trainable parameter counts at fit start."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        counts = parameter_counts(pl_module)
        for logger in trainer.loggers:
            logger.log_hyperparams(counts)
        pl.utilities.rank_zero_info(", ".join(f"{k}: {v:,}" for k, v in counts.items()))


class RunStats(Callback):
    """Training wall time and samples seen, accumulated across resumes (kept in the checkpoint)."""

    def __init__(self) -> None:
        self.train_seconds, self.samples, self._start = 0.0, 0, None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        first = batch[0] if isinstance(batch, (tuple, list)) else batch
        self.samples += (len(first) if hasattr(first, "__len__") else 1) * trainer.world_size

    def _elapsed(self) -> float:
        return self.train_seconds + (time.perf_counter() - self._start if self._start is not None else 0.0)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.train_seconds, self._start = self._elapsed(), None

    def state_dict(self) -> dict[str, Any]:
        return {"train_seconds": self._elapsed(), "samples": self.samples}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_seconds, self.samples = state_dict["train_seconds"], state_dict["samples"]

    def summary(self) -> dict[str, float]:
        seconds = self._elapsed()
        stats = {"train_seconds": round(seconds, 3),
                 "train_samples_per_second": round(self.samples / seconds, 2) if seconds > 0 else 0.0,
                 "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            stats["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return stats


class NonFiniteLossError(RuntimeError):
    """Training produced NaN or Inf."""


class NaNGuard(Callback):
    """Stops the run at the first non-finite training loss (or logged ``train/*`` metric).

    Raising before ``ModelCheckpoint`` runs its batch-end hook keeps the last good checkpoint untouched. A loss on
    the CPU is checked every step. One on a GPU is folded into a flag on the device instead (reading a value back
    every step would make the host wait for the GPU's queue), which is read on the steps the loggers write, before
    every checkpoint is written and at the end of training; the error still names the first bad step.
    """

    def __init__(self) -> None:
        self._first_bad: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # (step or -1, its loss), on the device

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and loss.device.type != "cpu":
            self._fold(loss.detach(), trainer.global_step)
            if trainer._logger_connector.should_update_logs or trainer.is_last_batch:  # (Lightning's writing rule)
                self._raise_if_bad()
            return
        if isinstance(loss, torch.Tensor):
            values = {"train/loss": loss}
        else:  # manual optimisation that returns nothing: look at what it logged (costly, so only then)
            values = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
        for name, value in values.items():
            value = float(value.detach()) if isinstance(value, torch.Tensor) and value.numel() == 1 else value
            if isinstance(value, float) and not math.isfinite(value):
                raise NonFiniteLossError(non_finite_message(name, value, trainer.global_step))

    def _fold(self, loss: torch.Tensor, step: int) -> None:
        if self._first_bad is None:
            self._first_bad = (torch.full((), -1, device=loss.device), torch.zeros((), device=loss.device))
        first_step, first_loss = self._first_bad
        new = (first_step < 0) & ~torch.isfinite(loss).all()
        self._first_bad = (torch.where(new, step, first_step), torch.where(new, loss.sum(), first_loss))

    def _raise_if_bad(self) -> None:
        if self._first_bad is not None and int(self._first_bad[0]) >= 0:
            step, loss = self._first_bad
            raise NonFiniteLossError(non_finite_message("train/loss", float(loss), int(step)))

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        self._raise_if_bad()  # before the file is written: no checkpoint holds weights past a non-finite loss

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._raise_if_bad()


def non_finite_message(name: str, value: float, step: int) -> str:
    return f"non-finite {name} ({value}) at step {step}; stopped, the last good checkpoint is kept"


class RNGState(Callback):
    """Saves and restores the Python, NumPy and torch RNGs so a resumed run draws the same numbers."""

    def state_dict(self) -> dict[str, Any]:
        # NumPy's key array goes in as a tensor so checkpoints stay loadable with torch.load(weights_only=True)
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {"python": random.getstate(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                         gauss), "torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        random.setstate(state_dict["python"])
        name, keys, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


class FlushLogsOnCheckpoint(Callback):
    """Writes buffered metrics with every checkpoint and records how many CSV rows it covers, so a resumed
    run first cuts its log back to exactly the checkpoint (``truncate_metrics``). The row that Lightning logs right
    after a checkpoint and that belongs to it is written at the next hook, so that a run killed then keeps it."""

    def __init__(self) -> None:
        self._row_pending = False

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        write_logs(trainer.loggers)
        for logger in trainer.loggers:
            rows = getattr(logger.experiment, "rows_written", None) if trainer.is_global_zero else None
            if rows is not None:
                checkpoint["csv_rows"] = rows
                # a save at a validation's end comes after that validation's rows; one inside a training batch or
                # at an epoch's end comes just before the batch's or the epoch's row
                checkpoint["csv_row_follows"] = self._row_pending = not trainer.validating

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._write_pending_row(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write_pending_row(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write_pending_row(trainer)

    def _write_pending_row(self, trainer: pl.Trainer) -> None:
        if self._row_pending:
            self._row_pending = False
            for logger in trainer.loggers:
                logger.save()


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint (best by the module's monitor, once per epoch) whose ``last.ckpt`` is also written every
    ``last_every_n_steps`` steps and where ``max_steps`` (or a callback) stops training mid-epoch, always at a
    point from which Lightning resumes the same trajectory (``save_last_for_step``).

    Lightning's own ``every_n_train_steps`` defers saving until the monitored metric exists, i.e. until the
    first validation; crash recovery needs ``last.ckpt`` from the first steps on.
    """

    def __init__(self, *args: Any, last_every_n_steps: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if last_every_n_steps is not None and last_every_n_steps <= 0:
            raise ValueError(f"--checkpoint_every_n_steps must be positive, got {last_every_n_steps}")
        self.last_every_n_steps = last_every_n_steps
        self._saving_in_step = False
        self._due: Optional[str] = None  # "validation" or "epoch": the save for this step waits for it
        self._best_saved_at = -1  # the step whose epoch-end best checkpoint was made at its validation's end
        self._epoch_last_at = -1  # the step whose last.ckpt was written inside its epoch's last batch

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        periodic = self.last_every_n_steps and trainer.global_step % self.last_every_n_steps == 0
        stopping = trainer.should_stop or 0 < trainer.max_steps <= trainer.global_step
        # every epoch's last.ckpt of a run with max_steps too (see save_last_for_step)
        if periodic or stopping or (self.save_last and trainer.is_last_batch and trainer.max_steps > 0):
            self.save_last_for_step(trainer)

    def save_last_for_step(self, trainer: pl.Trainer) -> None:
        """Writes ``last.ckpt`` for the step just taken; call from ``on_train_batch_end``.

        Lightning resumes a checkpoint written inside a batch as if the validation and the epoch end that follow
        the batch had run, so when a validation follows, the save waits for its end. At an epoch's last batch
        without one, a run with ``max_epochs`` saves at the epoch's end, where Lightning's own checkpoint resumes
        it exactly (callbacks such as NeuronPursuit read the epoch's logged metrics there); in a run with
        ``max_steps`` that checkpoint resumes with one batch too many (Lightning issue 19403), so it saves inside
        the batch, marked so that the resumed run still ends the epoch (``on_save_checkpoint``).
        """
        if self._last_global_step_saved == trainer.global_step:
            return
        if trainer.fit_loop.epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher):
            self._due = "validation"
        elif trainer.is_last_batch and trainer.max_steps <= 0:
            self._due = "epoch"
        else:
            self._saving_in_step = True
            try:
                self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            finally:
                self._saving_in_step = False
            if trainer.is_last_batch:
                self._epoch_last_at = trainer.global_step

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if self._due != "validation":
            return
        self._due = None
        if self._last_global_step_saved != trainer.global_step:
            candidates = self._monitor_candidates(trainer)
            if self._saves_best_at_epoch_end(trainer):
                # made now: a run resumed from this checkpoint has no validation metrics at the epoch's end
                self._save_topk_checkpoint(trainer, candidates)
                self._best_saved_at = trainer.global_step
            self._save_last_checkpoint(trainer, candidates)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning's end-of-epoch save, less last.ckpt where it was written at the epoch's last batch or validation;
        # none after a stop inside the epoch (its step is saved)
        step = trainer.global_step
        stopped_inside = self._last_global_step_saved == step and self._epoch_last_at != step
        if trainer.fast_dev_run or trainer.sanity_checking or self._best_saved_at == step or stopped_inside:
            return
        due, self._due = self._due == "epoch", None
        candidates = self._monitor_candidates(trainer)
        last = due or (self.save_last and trainer.max_steps <= 0 and self._should_save_on_train_epoch_end(trainer)
                       and self._last_global_step_saved != step)
        if self._saves_best_at_epoch_end(trainer):
            self._save_topk_checkpoint(trainer, candidates)
        if last:
            self._save_last_checkpoint(trainer, candidates)

    def _saves_best_at_epoch_end(self, trainer: pl.Trainer) -> bool:
        return (self._should_save_on_train_epoch_end(trainer) and self._every_n_epochs >= 1
                and (trainer.current_epoch + 1) % self._every_n_epochs == 0)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_saved_at": self._best_saved_at}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._best_saved_at = state_dict.get("best_saved_at", -1)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        # Lightning resumes a checkpoint written inside an epoch's last batch past that epoch's end: the epoch's
        # train metrics, LR-scheduler logging and epoch hooks never run. Saying the batch was not the last makes the
        # resumed run end the epoch (no validation follows such a batch: that case saves after it).
        if self._saving_in_step:
            checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["is_last_batch"] = False


class SlurmRequeue(Callback):
    """SLURM preemption: on ``SIGUSR1`` (``#SBATCH --signal=USR1@90``) write ``last.ckpt`` at the end of the current
    step, then ``scontrol requeue`` the job; the requeued job finds its run folder and continues from there
    (``train.requeued_run``). It replaces Lightning's own auto-requeue handler, which saves inside the step that
    the signal interrupts, so that a resumed run loses that step.
    """

    def __init__(self, job_id: str, checkpoint: RunCheckpoint) -> None:
        self.job_id, self.checkpoint, self.pending = job_id, checkpoint, False
        self._requeue_at: Optional[int] = None  # the step whose checkpoint must exist before the job is requeued

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        signal.signal(signal.SIGUSR1, self._notice)

    def _notice(self, signum: int, frame: Any) -> None:
        self.pending = True

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # every process saves at the same step (the signal may reach them during different steps)
        if not trainer.strategy.reduce_boolean_decision(self.pending, all=False):
            return
        self.pending = False
        self.checkpoint.save_last_for_step(trainer)
        self._requeue_at = trainer.global_step
        self._requeue_once_saved(trainer)

    # a save that waits for the batch's validation or epoch end (RunCheckpoint.save_last_for_step) is done by the
    # next of these
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._requeue_once_saved(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._requeue_once_saved(trainer)

    def _requeue_once_saved(self, trainer: pl.Trainer) -> None:
        if self._requeue_at is None or self.checkpoint._last_global_step_saved < self._requeue_at:
            return
        self._requeue_at = None
        if trainer.is_global_zero:
            done = subprocess.call(["scontrol", "requeue", self.job_id])
            pl.utilities.rank_zero_info(f"SLURM job {self.job_id} requeued at step {trainer.global_step}" if done == 0
                                        else f"scontrol requeue {self.job_id} failed ({done}); training goes on")
