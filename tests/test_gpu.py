"""CUDA paths (skipped without a GPU). On an H200 the CPU suite's resume tests, run on CUDA, matched only to ~1e-7
relative (cuDNN and atomics pick non-deterministic kernels); ``--trainer.deterministic true`` is the bit-exact mode."""
from pathlib import Path

import pytest
import torch

from tests.conftest import full_and_resumed, read_metrics, read_results
from tests.mapping.test_train import BASE

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

GPU = ["--trainer.accelerator", "gpu", "--trainer.devices", "1"]


def test_deterministic_gpu_run_resumes_bit_for_bit(tmp_path: Path) -> None:
    full, cut = full_and_resumed([*BASE, *GPU, "--trainer.deterministic", "true"], tmp_path, [],
                                 ["--trainer.max_steps", "13"])
    assert read_metrics(cut) == read_metrics(full)
    assert read_results(full)["peak_cuda_mb"] > 0
