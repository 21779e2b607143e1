#!/usr/bin/env python
"""overparam entry point.

    python train.py [fit|validate|test|predict|export] --config configs/<method>/<name>.yaml [--model.* ...]
                    [--data.* ...] [--trainer.* ...] [--seed N] [--ckpt_path best|last|PATH] [--name NAME]
                    [--wandb false]

Without a subcommand: fits, then tests the best checkpoint, and writes ``<root>/<name>/version_<k>/`` with
``config.yaml``, ``metrics.csv``, ``checkpoints/{last,best-*}.ckpt`` and ``results.json``. ``validate``, ``test``,
``predict`` and ``export`` evaluate a checkpoint into a new ``eval_<k>/`` of its run folder (its ``config.yaml`` is
used when no ``--config`` is given). In Python, ``train.run(args)`` does the same and returns the results.
"""
import argparse
import ctypes
import ctypes.util
import json
import netrc
import os
import re
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union
from urllib.parse import urlparse

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import Callback, LearningRateMonitor
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.utilities.model_helpers import is_overridden

import datamodules  # noqa: F401  (registers the datamodules for --help and short class names)
import lit_modules  # noqa: F401  (registers the modules)
from datamodules import DataError
from callbacks import (FlushLogsOnCheckpoint, NaNGuard, ParameterCounts, ResumableCSVLogger, RNGState, RunCheckpoint,
                       RunStats, SlurmRequeue,
                       parameter_counts, truncate_metrics)
from callbacks.console import RunModelSummary, RunProgressBar, quiet_console
from callbacks.figures import Figures
from callbacks.predictions import PredictionWriter, save_samples


def plain_cuda_check_without_gpus() -> None:
    """Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 (a CUDA check that cannot poison fork), and torch's Adam asks
    for that check on every step: on a machine without GPUs each step then fails to dlopen libnvidia-ml (~70 us a
    step, more than the whole Adam update of a small net). Without GPUs there is no CUDA state to protect."""
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1" and torch.cuda.device_count() == 0:
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"


plain_cuda_check_without_gpus()

RUN_DIR_ENV = "OVERPARAM_RUN_DIR"  # hands rank 0's run folder to the processes Lightning's DDP launcher starts
SUBCOMMANDS = ("fit", "validate", "test", "predict", "export")
EVALUATIONS = ("validate", "test", "predict", "export")  # read a checkpoint, write into a new eval_<k>/
WANDB_MODES = ("online", "offline", "disabled")


class UsageError(Exception):
    """Bad input from the user (flag, config, data, checkpoint); its message is the one line to report."""


# errors that mean the input was wrong, not the code: run() turns them into UsageError with a one-line message
INPUT_ERRORS = (argparse.ArgumentError, ValueError, FileNotFoundError, DataError)


class SaveRunConfig(SaveConfigCallback):
    """Writes the resolved ``config.yaml`` into the run folder and sends it (once, without jsonargparse's internal
    keys) to W&B."""

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.WandbLogger):
                logger.experiment.config.update(public_keys(self.config.as_dict()), allow_val_change=True)


def public_keys(value: Any) -> Any:
    """``value`` without keys that start with ``_`` (jsonargparse's ``__path__``, Lightning's ``_instantiator``)."""
    if isinstance(value, dict):
        return {k: public_keys(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list):
        return [public_keys(v) for v in value]
    return str(value) if isinstance(value, Path) else value


class CheckpointMetadata(Callback):
    """Stamps each checkpoint with the classes that wrote it, so a mismatched resume fails clearly."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint["overparam"] = {"model_class": qualified_name(pl_module)}


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Stops glibc from handing freed heap memory back to the OS, and fixes its mmap threshold at the 32 MiB maximum,
    for the rest of the process; returns False where the C library is not glibc.

    With glibc's defaults a step's activations come back as fresh pages that fault on first touch whenever the top
    of the heap is free, which depends on what else lives there: a hand-written CNN2 loop took ~4,000 minor page
    faults and 50 % longer per step in its first runs of a process, and ``train.py`` on the WGAN-GP DCGAN-32 (k 16,
    one thread) ran 13-21 % faster with this (same peak RSS; docs/results/foundation.md)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        return bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)) and bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 25))
    except (OSError, AttributeError, TypeError):
        return False


def qualified_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def process_rank() -> int:
    for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if os.environ.get(var):
            return int(os.environ[var])
    return 0


class OverparamCLI(LightningCLI):
    def __init__(self, args: Optional[list[str]] = None, command: Optional[str] = None) -> None:
        self.command = command  # None: fit, then test the best checkpoint
        self.run_dir: Optional[Path] = None
        self.resume_ckpt: Optional[str] = None
        self.fresh_run_dir = False
        super().__init__(
            pl.LightningModule, pl.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
            save_config_callback=SaveRunConfig, save_config_kwargs={"overwrite": True},
            trainer_defaults={"use_distributed_sampler": False, "log_every_n_steps": 10},
            seed_everything_default=0, parser_kwargs={"exit_on_error": False}, auto_configure_optimizers=False,
            run=False, args=args)

    def __new__(cls, *args: Any, **kwargs: Any) -> "OverparamCLI":
        # LightningCLI does all its work in __init__; keep a handle so main() can clean up if that fails
        cls.current = super().__new__(cls)
        return cls.current

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--seed", type=Optional[int], default=None, help="Global seed (sets seed_everything).")
        parser.add_argument("--ckpt_path", type=Optional[str], default=None,
                            help="fit: 'last' resumes the latest run of this experiment, or a checkpoint path; "
                                 "validate/test/predict/export: 'best', 'last' (of the latest run) or a path.")
        parser.add_argument("--name", type=Optional[str], default=None,
                            help="Experiment name (default: the config file's name).")
        parser.add_argument("--wandb", type=bool, default=True,
                            help="Log to Weights & Biases (online when logged in, else offline; WANDB_MODE decides).")
        parser.add_argument("--wandb_project", type=Optional[str], default=None,
                            help="W&B project (default: WANDB_PROJECT, else 'overparam').")
        parser.add_argument("--wandb_entity", type=Optional[str], default=None, help="W&B entity (user or team).")
        parser.add_argument("--wandb_group", type=Optional[str], default=None, help="W&B run group.")
        parser.add_argument("--wandb_tags", type=Optional[list[str]], default=None, help="W&B run tags.")
        parser.add_argument("--wandb_log_model", type=Union[bool, Literal["all"]], default=False,
                            help="Upload checkpoints to W&B as artifacts: true (at the end), 'all' (each one).")
        parser.add_argument("--checkpoint_every_n_steps", type=Optional[int], default=None,
                            help="Also write last.ckpt every N training steps (default: every epoch).")
        parser.add_argument("--format", type=Literal["state_dict", "torchscript", "onnx"], default="state_dict",
                            help="export: the file format of the exported network.")
        parser.add_argument("--keep_freed_memory", type=bool, default=True,
                            help="glibc: keep freed heap memory in the process (no trimming, mmap threshold 32 MiB) "
                                 "so that CPU steps reuse pages instead of faulting fresh ones; for the process.")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        if self.config.get("seed") is not None:
            self.config["seed_everything"] = self.config["seed"]

    # ------------------------------------------------------------------ run folder
    def experiment_name(self) -> str:
        if self.config.get("name"):
            return self.config["name"]
        configs = self.config.get("config") or []
        if configs:
            return Path(str(configs[-1])).stem
        return type(self.config["model"]).__name__ if not isinstance(self.config["model"], dict) else "run"

    def before_instantiate_classes(self) -> None:
        check_devices(self.config["trainer"])
        if self.config["keep_freed_memory"]:
            keep_freed_memory()
        mode = wandb_mode()  # checked even with --wandb false: a wrong WANDB_MODE is a mistake either way
        self.wandb_mode = mode if self.config["wandb"] else "disabled"
        root = Path(self.config["trainer"].get("default_root_dir") or "runs")
        exp_dir = root / self.experiment_name()
        ckpt = self.config.get("ckpt_path")
        # config.yaml re-runs as this experiment, as a new run (not a resume)
        self.config["name"], self.config["ckpt_path"] = exp_dir.name, None
        if os.environ.get(RUN_DIR_ENV) and process_rank() != 0:
            self.run_dir = Path(os.environ[RUN_DIR_ENV])
            self.resume_ckpt = resolve_ckpt(ckpt, exp_dir) if ckpt else None
            return
        if not ckpt and self.command not in EVALUATIONS:
            self.run_dir, self.resume_ckpt = requeued_run(exp_dir)
        if ckpt:
            self.resume_ckpt = resolve_ckpt(ckpt, exp_dir)
            self.run_dir = run_folder_of(self.resume_ckpt)
            if self.command not in EVALUATIONS and self.run_dir is not None and \
                    self.run_dir.parent.resolve() != exp_dir.resolve():
                self.run_dir = None  # another experiment's checkpoint starts a new run of this one
        if self.command in EVALUATIONS:  # never writes into the training run's own files
            self.run_dir = new_version_dir(self.run_dir or exp_dir, create=process_rank() == 0, prefix="eval_")
            self.fresh_run_dir = True
        elif self.run_dir is None:
            self.run_dir = new_version_dir(exp_dir, create=process_rank() == 0)
            self.fresh_run_dir = True
            if slurm_job_id() and process_rank() == 0:  # a requeue of this job finds its folder by this mark
                (self.run_dir / "slurm_job").write_text(slurm_job_id())
        os.environ[RUN_DIR_ENV] = str(self.run_dir)

    def after_instantiate_classes(self) -> None:
        # Lightning's CLI gives save_hyperparameters() the model's config, but the modules leave out arguments that
        # are objects (net, optimizer, ...); put them back as class_path/init_args so that
        # <Module>.load_from_checkpoint(path) rebuilds the model from the checkpoint alone
        self._dump_config()
        config = self.config_dump.get("model") or {}
        init = {**config.get("init_args", {}), **config.get("dict_kwargs", {})} if "class_path" in config else config
        for key, value in init.items():
            self.model.hparams.setdefault(key, value)
        # the run's config.yaml reaches the loggers once (SaveRunConfig), not again as model/data hyper-parameters
        self.model._log_hyperparams = self.datamodule._log_hyperparams = False

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        run_dir, model, trainer_cfg = self.run_dir, self.model, self.config["trainer"]
        wandb_args, others = self.configured_loggers()
        loggers: list[Any] = [ResumableCSVLogger(run_dir.parent.parent, name=run_dir.parent.name,
                                                 version=run_dir.name), *others]
        if self.command not in EVALUATIONS and trainer_cfg.get("logger") is not False and \
                self.wandb_mode != "disabled":
            loggers.append(make_wandb_logger(run_dir, self.wandb_mode, **{
                **wandb_args, **{k: self.config[f"wandb_{k}"] for k in ("project", "entity", "group", "tags",
                                                                          "log_model")
                                 if self.config[f"wandb_{k}"] not in (None, False)}}))
        callbacks: list[Callback] = [LearningRateMonitor(), ParameterCounts(), RunStats(), NaNGuard(), RNGState(),
                                     FlushLogsOnCheckpoint(), CheckpointMetadata()]
        checkpointing = trainer_cfg.get("enable_checkpointing") is not False and self.command not in EVALUATIONS
        if checkpointing:
            monitor, mode = getattr(model, "monitor", None), getattr(model, "monitor_mode", "min")
            checkpoint = RunCheckpoint(
                dirpath=run_dir / "checkpoints", save_last=True, monitor=monitor, mode=mode,
                filename="best-{epoch}-{step}" if monitor else "{epoch}-{step}",
                last_every_n_steps=self.config["checkpoint_every_n_steps"], save_top_k=1)
            callbacks.insert(0, checkpoint)
            if slurm_job_id():  # ours instead of Lightning's auto-requeue (see SlurmRequeue)
                callbacks.insert(1, SlurmRequeue(slurm_job_id(), checkpoint))
                kwargs["plugins"] = [SLURMEnvironment(auto_requeue=False)]
        if trainer_cfg.get("enable_progress_bar") is not False:
            callbacks.append(RunProgressBar(version_number(run_dir)))
        if trainer_cfg.get("enable_model_summary") is not False:
            callbacks.append(RunModelSummary())
        if self.command == "predict":
            callbacks.append(PredictionWriter(run_dir))
        elif self.command != "export":
            callbacks.append(Figures(run_dir))
        return super().instantiate_trainer(logger=loggers, callbacks=self.trainer_callbacks(callbacks),
                                           enable_checkpointing=checkpointing, **kwargs)

    def configured_loggers(self) -> tuple[dict[str, Any], list[pl.loggers.Logger]]:
        """The init arguments of a ``WandbLogger`` given in the config or flags (merged into the run's own, which
        keeps the run's W&B id and folder) and the other configured loggers (kept as they are)."""
        specs, made = self.config["trainer"].get("logger"), self._get(self.config_init, "trainer").get("logger")
        specs, made = (x if isinstance(x, list) else [x] for x in (specs, made))
        wandb_args: dict[str, Any] = {}
        others = []
        for spec, logger in zip(specs, made):
            if isinstance(logger, pl.loggers.WandbLogger):
                wandb_args = {k: v for k, v in dict(spec.get("init_args") or {}).items() if v is not None}
            elif isinstance(logger, pl.loggers.Logger):
                others.append(logger)
        return wandb_args, others

    def trainer_callbacks(self, ours: list[Callback]) -> list[Callback]:
        configured = self._get(self.config_init, "trainer", default={}).get("callbacks") or []
        configured = configured if isinstance(configured, list) else [configured]
        return configured + ours

    # ------------------------------------------------------------------ fit, test, results
    def discard_empty_run(self) -> None:
        """A fresh run that failed before logging or checkpointing anything leaves no version folder."""
        run_dir = self.run_dir
        if self.fresh_run_dir and run_dir is not None and run_dir.is_dir() and not (run_dir / "metrics_raw.csv").exists() \
                and not any(run_dir.glob("checkpoints/*")):
            finish_wandb(getattr(self, "trainer", None))  # W&B writes into the folder until its run is closed
            shutil.rmtree(run_dir, ignore_errors=True)

    def run_command(self) -> dict[str, Any]:
        if self.command in EVALUATIONS:
            return self.evaluate()
        trainer, model, data = self.trainer, self.model, self.datamodule
        if self.resume_ckpt:
            ckpt = check_checkpoint(self.resume_ckpt, model)
            if trainer.is_global_zero and "csv_rows" in ckpt:
                truncate_metrics(str(self.run_dir), ckpt["csv_rows"], logged_step(ckpt, model),
                                 ckpt.get("csv_row_follows", True))
        trainer.fit(model, datamodule=data, ckpt_path=self.resume_ckpt)
        # taken now: testing a best checkpoint restores the callbacks' states saved with it (an earlier epoch's)
        results = {**scalar_metrics(trainer.callback_metrics), "epochs": trainer.current_epoch,
                   "global_step": trainer.global_step,
                   **next(c for c in trainer.callbacks if isinstance(c, RunStats)).summary(),
                   **callback_results(trainer.callbacks)}
        # without a monitored metric the "best" checkpoint is merely the last epoch-end one, which is stale
        # when training stopped mid-epoch: test the final weights instead
        monitored = trainer.checkpoint_callback is not None and trainer.checkpoint_callback.monitor is not None
        best = trainer.checkpoint_callback.best_model_path if monitored else ""
        if self.command is None:
            trainer.test(model, datamodule=data, ckpt_path=best or None, verbose=trainer.is_global_zero)
            results.update(scalar_metrics(trainer.callback_metrics))
            results["tested_checkpoint"] = best or "last weights"
        results = {**results, **parameter_counts(model), "run_dir": str(self.run_dir),
                   **({"best_checkpoint": best} if best else {}), **callback_results([model])}
        if trainer.is_global_zero:
            write_json_atomic(self.run_dir / "results.json", results)
            print_where(self.run_dir, best, trainer)
        finish_wandb(trainer, results)
        return results

    def evaluate(self) -> dict[str, Any]:
        """validate / test / predict / export of ``--ckpt_path`` (or of the initial weights) into ``eval_<k>/``."""
        trainer, model, data, command = self.trainer, self.model, self.datamodule, self.command
        ckpt = check_checkpoint(self.resume_ckpt, model) if self.resume_ckpt else None
        results: dict[str, Any] = {"checkpoint": self.resume_ckpt or "initial weights", "run_dir": str(self.run_dir)}
        if command == "export":
            if ckpt is not None:
                model.load_state_dict(ckpt["state_dict"])
            results.update(export(model, data, self.config["format"], self.run_dir, self.config_dump["model"]))
        elif command == "predict" and callable(getattr(model, "sample", None)) and hasattr(model, "fixed_noise"):
            if ckpt is not None:  # a generator: samples from its fixed noise, no data needed
                model.load_state_dict(ckpt["state_dict"])
            results.update(save_samples(model.sample(model.fixed_noise), self.run_dir))
        else:
            if command == "predict":
                if not is_overridden("predict_step", model, pl.LightningModule):
                    raise UsageError(f"predict: {type(model).__name__} makes no predictions (no predict_step)")
                if not is_overridden("predict_dataloader", data, pl.LightningDataModule):
                    data.predict_dataloader = data.test_dataloader  # predictions for the test split
                trainer.predict(model, datamodule=data, ckpt_path=self.resume_ckpt, return_predictions=False)
            else:
                getattr(trainer, command)(model, datamodule=data, ckpt_path=self.resume_ckpt,
                                          verbose=trainer.is_global_zero)
                results.update(scalar_metrics(trainer.callback_metrics))
                # what the evaluating callbacks measured with (e.g. an FID's feature space and its md5)
                results.update(callback_results([*trainer.callbacks, model]) if command == "test" else {})
            results.update(next((c.files for c in trainer.callbacks if isinstance(c, PredictionWriter)), {}))
        if trainer.is_global_zero:
            write_json_atomic(self.run_dir / f"results_{command}.json", results)
            print(f"{command}: {self.run_dir / f'results_{command}.json'}")
        return results


# ---------------------------------------------------------------------- helpers
def callback_results(sources: list) -> dict[str, Any]:
    """The extra ``results()`` entries of a module or callbacks (NTK diagnostics, widths, ...)."""
    out: dict[str, Any] = {}
    for source in sources:
        extra = getattr(source, "results", None)
        if callable(extra):
            out.update(extra())
    return out


def logged_step(ckpt: dict[str, Any], model: pl.LightningModule) -> int:
    """The step of the first row Lightning's loggers write after ``ckpt``. Loggers count batches that stepped; in
    automatic optimisation that is global_step, but a manual module may make steps that are not counted (the
    GAN's critic steps), so there the checkpoint's batch count (+1: written before the batch's rows) decides."""
    loop = ckpt.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
    if model.automatic_optimization or "_batches_that_stepped" not in loop:
        return ckpt["global_step"]
    return loop["_batches_that_stepped"] + 1


def check_devices(trainer_cfg: dict) -> None:
    """More processes than devices would wait forever at "Initializing distributed": refuse them up front."""
    devices, accelerator = trainer_cfg.get("devices"), str(trainer_cfg.get("accelerator") or "auto")
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    if not isinstance(devices, int) or devices <= 0:
        return
    if accelerator == "auto":  # what Lightning picks: CUDA when there is a GPU, else the CPU
        accelerator = "gpu" if torch.cuda.is_available() else "cpu" if not torch.backends.mps.is_available() else ""
    if accelerator in ("gpu", "cuda"):
        available, what = torch.cuda.device_count(), "CUDA GPUs"
    elif accelerator == "cpu":
        available, what = os.cpu_count() or 1, "CPU cores"
    else:
        return
    if devices > available:
        raise UsageError(f"--trainer.devices {devices} asks for more {what} than this machine has ({available})")


def resolve_ckpt(ckpt: str, exp_dir: Path) -> str:
    """A checkpoint file: ``PATH``, or ``last``/``best`` of the newest run of the experiment that has one."""
    if ckpt not in ("last", "best"):
        if not Path(ckpt).is_file():
            raise UsageError(f"checkpoint not found: {ckpt}")
        return ckpt
    pattern = "last.ckpt" if ckpt == "last" else "best-*.ckpt"
    candidates = sorted(exp_dir.glob(f"version_*/checkpoints/{pattern}"),
                        key=lambda p: version_number(p.parent.parent))
    if not candidates:
        raise UsageError(f"--ckpt_path {ckpt}: no earlier run of '{exp_dir.name}' with a {pattern} under {exp_dir}")
    return str(candidates[-1])


def slurm_job_id() -> Optional[str]:
    """The SLURM job (array task) this process belongs to, as Lightning's auto-requeue names it; None outside."""
    if not SLURMEnvironment.detect():
        return None
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    return f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ.get("SLURM_JOB_ID")


def requeued_run(exp_dir: Path) -> tuple[Optional[Path], Optional[str]]:
    """A requeued SLURM job continues the run folder it started, from its ``last.ckpt`` (written on SIGUSR1 by
    ``SlurmRequeue``); (None, None) for anything else."""
    job = slurm_job_id()
    if job is None:
        return None, None
    for folder in sorted(exp_dir.glob("version_*"), key=version_number, reverse=True):
        mark = folder / "slurm_job"
        if mark.is_file() and mark.read_text().strip() == job:
            ckpt = folder / "checkpoints" / "last.ckpt"
            return (folder, str(ckpt)) if ckpt.is_file() else (None, None)
    return None, None


def run_folder_of(ckpt: str) -> Optional[Path]:
    """The ``version_<k>`` folder a checkpoint of a run lives in (``<run>/checkpoints/x.ckpt``), else None."""
    folder = Path(ckpt).parent.parent
    return folder if folder.name.startswith("version_") and Path(ckpt).parent.name == "checkpoints" else None


def version_number(path: Path) -> int:
    match = re.fullmatch(r"(?:version|eval)_(\d+)", path.name)
    return int(match.group(1)) if match else -1


def new_version_dir(exp_dir: Path, create: bool, prefix: str = "version_") -> Path:
    exp_dir.mkdir(parents=True, exist_ok=True) if create else None
    k = max((version_number(p) for p in exp_dir.glob(f"{prefix}*")), default=-1) + 1
    while create:
        try:
            (exp_dir / f"{prefix}{k}").mkdir()  # atomic: two runs started together get different versions
            break
        except FileExistsError:
            k += 1
    return exp_dir / f"{prefix}{k}"


def check_checkpoint(path: str, model: pl.LightningModule) -> dict[str, Any]:
    """The checkpoint (memory-mapped), after checking that it was written by this model class with these shapes."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:
        raise UsageError(f"cannot read checkpoint {path}: {one_line(err)}") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UsageError(f"{path} is not a Lightning checkpoint (no state_dict)")
    written_by = ckpt.get("overparam", {}).get("model_class")
    if written_by and written_by != qualified_name(model):
        raise UsageError(f"checkpoint {path} was written by {written_by}, but this run's model is {qualified_name(model)}")
    prepare = getattr(model, "prepare_for_checkpoint", None)
    if callable(prepare):  # e.g. a grown network resizes to the checkpoint's widths first
        prepare(ckpt)
    ours, theirs = model.state_dict(), ckpt["state_dict"]
    missing, unexpected = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    mismatched = [k for k in set(ours) & set(theirs) if tuple(ours[k].shape) != tuple(theirs[k].shape)]
    if missing or unexpected or mismatched:
        detail = "; ".join(f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}" for what, keys in
                           (("missing", missing), ("unexpected", unexpected), ("shape differs", sorted(mismatched)))
                           if keys)
        raise UsageError(f"checkpoint {path} does not fit this model ({detail})")
    return ckpt


def make_wandb_logger(run_dir: Path, mode: str, **settings: Any) -> pl.loggers.WandbLogger:
    """W&B logger that resumes the run's W&B id. ``settings`` (a config's WandbLogger, ``--wandb_*`` flags) win,
    except for the id and folder, which belong to the run; unset ones fall back to the ``WANDB_*`` variables."""
    id_file = run_dir / "wandb_id"
    if id_file.is_file():
        run_id = id_file.read_text().strip()
    else:
        run_id = uuid.uuid4().hex[:12]
        if process_rank() == 0:
            id_file.write_text(run_id)
    if settings.get("log_model") and mode != "online":
        raise UsageError("--wandb_log_model uploads checkpoints, which needs W&B online (wandb login, or "
                         "WANDB_MODE=online)")
    settings.setdefault("project", os.environ.get("WANDB_PROJECT") or "overparam")
    settings.setdefault("name", f"{run_dir.parent.name}/{run_dir.name}")
    for key in ("id", "version", "save_dir", "dir", "offline", "resume"):
        settings.pop(key, None)
    logger = pl.loggers.WandbLogger(**settings, id=run_id, resume="allow", save_dir=str(run_dir),
                                    offline=mode == "offline")
    # Lightning always passes anonymous=None, which wandb >= 0.25 warns about on every run
    logger._wandb_init.pop("anonymous", None)
    return logger


def wandb_mode() -> str:
    """``WANDB_MODE`` if set; otherwise online when the user is logged in (API key or netrc), else offline."""
    mode = os.environ.get("WANDB_MODE")
    if os.environ.get("WANDB_DISABLED", "").lower() in ("true", "1"):
        return "disabled"
    if mode:
        mode = {"dryrun": "offline", "run": "online"}.get(mode, mode)
        if mode not in WANDB_MODES:
            raise UsageError(f"WANDB_MODE={mode} is not one of {', '.join(WANDB_MODES)}")
        return mode
    return "online" if wandb_logged_in() else "offline"


def wandb_logged_in() -> bool:
    """What ``wandb login`` leaves behind: WANDB_API_KEY, or a netrc entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc(os.environ.get("NETRC") or None).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_loggers(trainer: Optional[pl.Trainer]) -> list[pl.loggers.WandbLogger]:
    loggers = trainer.loggers if trainer is not None else []
    return [lg for lg in loggers if isinstance(lg, pl.loggers.WandbLogger) and lg._experiment is not None]


def finish_wandb(trainer: Optional[pl.Trainer], results: Optional[dict[str, Any]] = None) -> None:
    """Puts every results.json entry into the W&B summary and closes the W&B run (a later run in this process
    gets its own)."""
    for logger in wandb_loggers(trainer):
        if results is not None:
            logger.experiment.summary.update(results)
        logger.experiment.finish()


def print_where(run_dir: Path, best: str, trainer: pl.Trainer) -> None:
    """The one line that ends a run: where it lives and how to see it in W&B."""
    where = f"run: {run_dir} (results.json" + (f", best: {Path(best).name}" if best else "") + ")"
    for logger in wandb_loggers(trainer):
        experiment = logger.experiment
        where += (f"; W&B: {experiment.url}" if not experiment.settings._offline else
                  f"; W&B offline: wandb sync {Path(experiment.dir).parent}")
    print(where)


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if not isinstance(v, torch.Tensor) or v.numel() == 1}


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


JSONARGPARSE_WRAPPERS = ("Does not validate against any of the Union subtypes", "Problem with given class_path")


def one_line(err: BaseException) -> str:
    # jsonargparse wraps an error raised in a class's __init__ in a long message; the cause is what matters
    while err.__cause__ is not None and str(err).startswith(JSONARGPARSE_WRAPPERS):
        err = err.__cause__
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 600 else text[:600] + " ..."


def check_config_files(args: list[str]) -> None:
    """Name the file when a --config is not valid YAML (jsonargparse's message does not)."""
    paths = [b for a, b in zip(args, args[1:]) if a == "--config"] + [a[9:] for a in args if a.startswith("--config=")]
    for path in paths:
        if Path(path).is_file():
            try:
                yaml.safe_load(Path(path).read_text())
            except yaml.YAMLError as err:
                raise UsageError(f"config file {path} is not valid YAML: {err}") from err


def export(model: pl.LightningModule, data: pl.LightningDataModule, fmt: str, out_dir: Path,
           model_config: dict[str, Any]) -> dict[str, Any]:
    """Writes the trained network as a plain ``nn.Module`` file: ``net.pt`` (a state dict for the net class named
    in the result's ``net``), ``net.torchscript.pt`` or ``net.onnx`` (traced on one test batch). A mapping network
    is materialized first: its generated weights become the target net's own."""
    if fmt != "state_dict" and getattr(model, "growing", False):
        raise UsageError(f"cannot export {type(model).__name__} as {fmt}: its network grows during training, so a "
                         "traced graph would fix one set of widths; use --format state_dict")
    make = getattr(model, "export_net", None)
    net = make() if callable(make) else getattr(model, "net", None) or getattr(model, "generator", None)
    if not isinstance(net, torch.nn.Module):
        raise UsageError(f"export: {type(model).__name__} has no network to export (no net or generator)")
    init = {**model_config.get("init_args", {}), **model_config.get("dict_kwargs", {})}
    spec = init.get("net") or init.get("generator")
    net = net.eval().cpu()
    if fmt == "state_dict":
        path = out_dir / "net.pt"
        torch.save(net.state_dict(), path)
    else:
        example = example_input(model, data)
        path = out_dir / ("net.onnx" if fmt == "onnx" else "net.torchscript.pt")
        try:
            if fmt == "torchscript":
                torch.jit.trace(net, example).save(str(path))
            else:
                torch.onnx.export(net, (example,), str(path), input_names=["input"], output_names=["output"],
                                  dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, dynamo=False)
        except (RuntimeError, TypeError, ModuleNotFoundError) as err:
            path.unlink(missing_ok=True)
            raise UsageError(f"cannot export {type(net).__name__} as {fmt}: {one_line(err)}") from err
    return {"format": fmt, "file": str(path), "net": spec, "net_class": qualified_name(net)}


def example_input(model: pl.LightningModule, data: pl.LightningDataModule) -> torch.Tensor:
    """One input for tracing: a generator's noise, else the first test sample as the model sees it."""
    if hasattr(model, "fixed_noise"):
        return model.fixed_noise[:1].cpu()
    data.setup("test")
    batch = data.on_after_batch_transfer(next(iter(data.test_dataloader())), 0)
    return (batch[0] if isinstance(batch, (tuple, list)) else batch)[:1].cpu()


def flag_value(args: list[str], flag: str) -> Optional[str]:
    values = [b for a, b in zip(args, args[1:]) if a == flag] + [a.split("=", 1)[1] for a in args
                                                                   if a.startswith(flag + "=")]
    return values[-1] if values else None


def with_run_config(command: Optional[str], args: list[str]) -> list[str]:
    """An evaluation without ``--config`` uses the config.yaml of the checkpoint's run folder."""
    if command not in EVALUATIONS or flag_value(args, "--config") is not None or "--help" in args:
        return args
    ckpt = flag_value(args, "--ckpt_path")
    if ckpt is None:
        raise UsageError(f"{command} needs --ckpt_path (and --config unless the checkpoint is in a run folder)")
    name = flag_value(args, "--name")
    if ckpt in ("best", "last"):
        if name is None:
            raise UsageError(f"{command} --ckpt_path {ckpt} needs --config or --name to find the experiment")
        ckpt = resolve_ckpt(ckpt, Path(flag_value(args, "--trainer.default_root_dir") or "runs") / name)
    if not Path(ckpt).is_file():
        raise UsageError(f"checkpoint not found: {ckpt}")
    folder = run_folder_of(ckpt)
    if folder is None or not (folder / "config.yaml").is_file():
        raise UsageError(f"{command}: {ckpt} is not inside a run folder with a config.yaml; pass --config")
    return ["--config", str(folder / "config.yaml"), *args]


def run(args: Sequence[str]) -> dict[str, Any]:
    """Runs exactly what ``python train.py ARGS`` runs, in this process, and returns the content of the run's
    ``results.json`` (with ``run_dir``; ``results_<subcommand>.json`` for an evaluation). Bad input raises
    :class:`UsageError`; a fresh run that fails before logging anything leaves no folder behind."""
    args, script = [str(a) for a in args], str(Path(__file__).resolve())
    command = args[0] if args and args[0] in SUBCOMMANDS else None
    argv, sys.argv = sys.argv, [script]  # LightningCLI warns when sys.argv holds arguments besides `args`
    try:
        options = with_run_config(command, args[1:] if command else args)
        check_config_files(options)
        cli = OverparamCLI(options, command)
        sys.argv = [script, *args]  # Lightning's DDP launcher starts the other processes from sys.argv
        return cli.run_command()
    except BaseException as err:
        cli = getattr(OverparamCLI, "current", None)
        if cli is not None:
            cli.discard_empty_run()
        if isinstance(err, INPUT_ERRORS):
            raise UsageError(one_line(err)) from err
        raise
    finally:
        sys.argv = argv
        OverparamCLI.current = None


def main(args: Optional[list[str]] = None) -> int:
    quiet_console()
    try:
        run(sys.argv[1:] if args is None else args)
        return 0
    except KeyboardInterrupt:
        print("interrupted; continue with --ckpt_path last", file=sys.stderr)
        return 130
    except Exception as err:
        if os.environ.get("OVERPARAM_TRACEBACK"):
            raise
        print(f"error: {one_line(err)}  (OVERPARAM_TRACEBACK=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
