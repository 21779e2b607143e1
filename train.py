#!/usr/bin/env python
"""overparam entry point.

    python train.py --config configs/<method>/<name>.yaml [--model.* ...] [--data.* ...] [--trainer.* ...]
                    [--seed N] [--ckpt_path last|PATH] [--name NAME] [--wandb false]

Fits, then tests the best checkpoint, and writes ``<root>/<name>/version_<k>/`` with ``config.yaml``,
``metrics.csv``, ``checkpoints/{last,best-*}.ckpt`` and ``results.json``. In Python, ``train.run(args)`` does the
same and returns the results.
"""
import argparse
import json
import os
import re
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any, Optional, Sequence

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, RichProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

import datamodules  # noqa: F401  (registers the datamodules for --help and short class names)
import lit_modules  # noqa: F401  (registers the modules)
from datamodules import DataError
from callbacks import (FlushLogsOnCheckpoint, NaNGuard, ParameterCounts, ResumableCSVLogger, RNGState, RunCheckpoint,
                       RunStats,
                       parameter_counts, truncate_metrics)

RUN_DIR_ENV = "OVERPARAM_RUN_DIR"  # hands rank 0's run folder to the processes Lightning's DDP launcher starts


class UsageError(Exception):
    """Bad input from the user (flag, config, data, checkpoint); its message is the one line to report."""


# errors that mean the input was wrong, not the code: run() turns them into UsageError with a one-line message
INPUT_ERRORS = (argparse.ArgumentError, ValueError, FileNotFoundError, DataError)


class SaveRunConfig(SaveConfigCallback):
    """Writes the resolved ``config.yaml`` into the run folder and sends it to W&B."""

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.WandbLogger):
                logger.experiment.config.update(self.config.as_dict(), allow_val_change=True)


class CheckpointMetadata(Callback):
    """Stamps each checkpoint with the classes that wrote it, so a mismatched resume fails clearly."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint["overparam"] = {"model_class": qualified_name(pl_module)}


def qualified_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def process_rank() -> int:
    for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if os.environ.get(var):
            return int(os.environ[var])
    return 0


class OverparamCLI(LightningCLI):
    def __init__(self, args: Optional[list[str]] = None) -> None:
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
                            help="'last' resumes the latest run of this experiment; or a checkpoint path.")
        parser.add_argument("--name", type=Optional[str], default=None,
                            help="Experiment name (default: the config file's name).")
        parser.add_argument("--wandb", type=bool, default=True,
                            help="Log to Weights & Biases (offline unless WANDB_MODE=online or logged in).")
        parser.add_argument("--wandb_project", type=str, default="overparam")
        parser.add_argument("--checkpoint_every_n_steps", type=Optional[int], default=None,
                            help="Also write last.ckpt every N training steps (default: every epoch).")

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
        root = Path(self.config["trainer"].get("default_root_dir") or "runs")
        exp_dir = root / self.experiment_name()
        ckpt = self.config.get("ckpt_path")
        if os.environ.get(RUN_DIR_ENV) and process_rank() != 0:
            self.run_dir = Path(os.environ[RUN_DIR_ENV])
            self.resume_ckpt = resolve_ckpt(ckpt, exp_dir) if ckpt else None
            return
        if ckpt:
            self.resume_ckpt = resolve_ckpt(ckpt, exp_dir)
            inside = Path(self.resume_ckpt).resolve().parent.parent
            if inside.parent == exp_dir.resolve() and inside.name.startswith("version_"):
                self.run_dir = exp_dir / inside.name
        if self.run_dir is None:
            self.run_dir = new_version_dir(exp_dir, create=process_rank() == 0)
            self.fresh_run_dir = True
        os.environ[RUN_DIR_ENV] = str(self.run_dir)

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        run_dir = self.run_dir
        model = self.model
        loggers: list[Any] = [ResumableCSVLogger(run_dir.parent.parent, name=run_dir.parent.name,
                                                 version=run_dir.name)]
        trainer_cfg = self.config["trainer"]
        if self.config["wandb"] and trainer_cfg.get("logger") is not False and os.environ.get("WANDB_MODE") != "disabled":
            loggers.append(make_wandb_logger(run_dir, self.config["wandb_project"]))
        monitor, mode = getattr(model, "monitor", None), getattr(model, "monitor_mode", "min")
        callbacks: list[Callback] = [
            RunCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, monitor=monitor, mode=mode,
                          filename="best-{epoch}-{step}" if monitor else "{epoch}-{step}",
                          last_every_n_steps=self.config["checkpoint_every_n_steps"], save_top_k=1),
            LearningRateMonitor(), ParameterCounts(), RunStats(), NaNGuard(), RNGState(), FlushLogsOnCheckpoint(),
            CheckpointMetadata()]
        if trainer_cfg.get("enable_progress_bar") is not False:
            callbacks.append(RichProgressBar())
        return super().instantiate_trainer(logger=loggers, callbacks=self.trainer_callbacks(callbacks), **kwargs)

    def trainer_callbacks(self, ours: list[Callback]) -> list[Callback]:
        configured = self._get(self.config_init, "trainer", default={}).get("callbacks") or []
        configured = configured if isinstance(configured, list) else [configured]
        return configured + ours

    # ------------------------------------------------------------------ fit, test, results
    def discard_empty_run(self) -> None:
        """A fresh run that failed before logging or checkpointing anything leaves no version folder."""
        run_dir = self.run_dir
        if self.fresh_run_dir and run_dir is not None and run_dir.is_dir() and not (run_dir / "metrics.csv").exists() \
                and not any(run_dir.glob("checkpoints/*")):
            shutil.rmtree(run_dir, ignore_errors=True)

    def run_experiment(self) -> dict[str, Any]:
        trainer, model, data = self.trainer, self.model, self.datamodule
        if self.resume_ckpt:
            ckpt = check_checkpoint(self.resume_ckpt, model)
            if trainer.is_global_zero and "csv_rows" in ckpt:
                truncate_metrics(str(self.run_dir / "metrics.csv"), ckpt["csv_rows"], ckpt["global_step"])
        trainer.fit(model, datamodule=data, ckpt_path=self.resume_ckpt)
        # taken now: testing a best checkpoint restores the callbacks' states saved with it (an earlier epoch's)
        fit_summary = {**scalar_metrics(trainer.callback_metrics), "epochs": trainer.current_epoch,
                       "global_step": trainer.global_step,
                       **next(c for c in trainer.callbacks if isinstance(c, RunStats)).summary(),
                       **callback_results(trainer.callbacks)}
        # without a monitored metric the "best" checkpoint is merely the last epoch-end one, which is stale
        # when training stopped mid-epoch: test the final weights instead
        monitored = trainer.checkpoint_callback is not None and trainer.checkpoint_callback.monitor is not None
        best = trainer.checkpoint_callback.best_model_path if monitored else ""
        trainer.test(model, datamodule=data, ckpt_path=best or None, verbose=trainer.is_global_zero)
        results = {**fit_summary, **scalar_metrics(trainer.callback_metrics), **parameter_counts(model),
                   "tested_checkpoint": best or "last weights", "run_dir": str(self.run_dir),
                   **callback_results([model])}
        if trainer.is_global_zero:
            write_json_atomic(self.run_dir / "results.json", results)
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


def check_devices(trainer_cfg: dict) -> None:
    devices, accelerator = trainer_cfg.get("devices"), str(trainer_cfg.get("accelerator") or "auto")
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    if not isinstance(devices, int) or devices <= 0:
        return
    if accelerator in ("gpu", "cuda"):
        available, what = torch.cuda.device_count(), "CUDA GPUs"
    elif accelerator == "cpu":
        available, what = os.cpu_count() or 1, "CPU cores"
    else:
        return
    if devices > available:
        raise UsageError(f"--trainer.devices {devices} asks for more {what} than this machine has ({available})")


def resolve_ckpt(ckpt: str, exp_dir: Path) -> str:
    if ckpt != "last":
        if not Path(ckpt).is_file():
            raise UsageError(f"checkpoint not found: {ckpt}")
        return ckpt
    candidates = sorted(exp_dir.glob("version_*/checkpoints/last.ckpt"), key=lambda p: version_number(p.parent.parent))
    if not candidates:
        raise UsageError(f"--ckpt_path last: no earlier run of '{exp_dir.name}' with a last.ckpt under {exp_dir}")
    return str(candidates[-1])


def version_number(path: Path) -> int:
    match = re.fullmatch(r"version_(\d+)", path.name)
    return int(match.group(1)) if match else -1


def new_version_dir(exp_dir: Path, create: bool) -> Path:
    exp_dir.mkdir(parents=True, exist_ok=True) if create else None
    k = max((version_number(p) for p in exp_dir.glob("version_*")), default=-1) + 1
    while create:
        try:
            (exp_dir / f"version_{k}").mkdir()  # atomic: two runs started together get different versions
            break
        except FileExistsError:
            k += 1
    return exp_dir / f"version_{k}"


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


def make_wandb_logger(run_dir: Path, project: str) -> pl.loggers.WandbLogger:
    """W&B logger that resumes the run's W&B id; offline unless the user is online and logged in."""
    id_file = run_dir / "wandb_id"
    if id_file.is_file():
        run_id = id_file.read_text().strip()
    else:
        run_id = uuid.uuid4().hex[:12]
        if process_rank() == 0:
            id_file.write_text(run_id)
    online = os.environ.get("WANDB_MODE") == "online" or bool(os.environ.get("WANDB_API_KEY"))
    return pl.loggers.WandbLogger(project=project, name=f"{run_dir.parent.name}/{run_dir.name}", id=run_id,
                                  resume="allow", save_dir=str(run_dir), offline=not online)


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


def run(args: Sequence[str]) -> dict[str, Any]:
    """Runs exactly what ``python train.py ARGS`` runs, in this process, and returns the content of the run's
    ``results.json`` (with ``run_dir``). Bad input raises :class:`UsageError`; a fresh run that fails before
    logging anything leaves no folder behind."""
    args, script = [str(a) for a in args], str(Path(__file__).resolve())
    argv, sys.argv = sys.argv, [script]  # LightningCLI warns when sys.argv holds arguments besides `args`
    try:
        check_config_files(args)
        cli = OverparamCLI(args)
        sys.argv = [script, *args]  # Lightning's DDP launcher starts the other processes from sys.argv
        return cli.run_experiment()
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
