"""CUDA paths (skipped without a GPU): each found broken, or changed for the GPU, on an H200 (docs/results/
foundation.md, "On a GPU"). There the CPU suite's resume tests matched only to ~1e-7 relative (cuDNN and atomics pick
non-deterministic kernels); ``--trainer.deterministic true`` is the bit-exact mode."""
from pathlib import Path

import pytest
import torch

from tests.conftest import full_and_resumed, read_metrics, read_results, run_dir, run_train
from tests.mapping.test_train import BASE as MAPPING
from tests.resnet_width.test_resnet_width import SMALL as RESNET
from tests.test_cli import SMALL

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

GPU = ["--trainer.accelerator", "gpu", "--trainer.devices", "1"]


def test_deterministic_gpu_run_resumes_bit_for_bit(tmp_path: Path) -> None:
    full, cut = full_and_resumed([*MAPPING, *GPU, "--trainer.deterministic", "true"], tmp_path, [],
                                 ["--trainer.max_steps", "13"])
    assert read_metrics(cut) == read_metrics(full)
    assert read_results(full)["peak_cuda_mb"] > 0


def test_nan_on_the_gpu_names_the_first_bad_step_and_keeps_the_last_good_checkpoint(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = [*SMALL, *GPU, "--name", "nan", "--model.optimizer.lr", "1e30", "--checkpoint_every_n_steps", "1"]
    assert run_train(args, tmp_path) == 1
    assert "non-finite train/loss" in capsys.readouterr().err
    ckpt = torch.load(run_dir(tmp_path, "nan") / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_wide_resnet_run_with_its_ntk_monitor(tmp_path: Path) -> None:
    assert run_train([*RESNET, *GPU, "--trainer.max_steps", "30", "--name", "run"], tmp_path) == 0
    assert read_results(run_dir(tmp_path, "run"))["ntk/lambda_min_start"] > 0
