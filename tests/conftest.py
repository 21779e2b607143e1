"""Shared test helpers: run train.py in-process on small data, read its run folder."""
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
FMNIST_SLICE = ROOT / "data"  # the real Fashion-MNIST slice shipped with the repo (data/README.md)

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")
# Lightning 2.6's LightningCLI calls jsonargparse APIs deprecated in jsonargparse 4.49 (not ours to change)
os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
torch.set_num_threads(min(2, torch.get_num_threads()))

QUIET = ["--wandb", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def run_train(args: list[str], root: Path, quiet: bool = True) -> int:
    """``python train.py ARGS`` in this process with runs under ``root``; returns the exit code."""
    import train

    return train.main([*args, "--trainer.default_root_dir", str(root), *(QUIET if quiet else [])])


def run_dir(root: Path, name: str, version: int = 0) -> Path:
    return root / name / f"version_{version}"


def full_and_resumed(args: list[str], root: Path, whole: list[str], cut: list[str]) -> tuple[Path, Path]:
    """Runs ``full`` (``args + whole``), ``cut`` (``args + cut``, stopped early), then resumes ``cut`` to ``whole``
    with ``--ckpt_path last``; returns the two run folders, whose trajectories a resume test compares."""
    assert run_train([*args, *whole, "--name", "full"], root) == 0
    assert run_train([*args, *cut, "--name", "cut"], root) == 0
    assert run_train([*args, *whole, "--name", "cut", "--ckpt_path", "last"], root) == 0
    return run_dir(root, "full"), run_dir(root, "cut")


def read_results(path: Path) -> dict[str, Any]:
    return json.loads((path / "results.json").read_text())


def read_metrics(path: Path, drop: tuple[str, ...] = ()) -> list[dict[str, str]]:
    with open(path / "metrics.csv", newline="") as file:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(file)]


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OVERPARAM_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv("OVERPARAM_RUN_DIR", raising=False)


def python() -> str:
    return sys.executable
