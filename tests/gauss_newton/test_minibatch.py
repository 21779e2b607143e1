"""Minibatch LM (square-root trick) on the shipped Fashion-MNIST slice: it learns, and it resumes exactly."""
from pathlib import Path

from tests.conftest import FMNIST_SLICE, read_metrics, read_results, run_dir, run_train

TINY = ["--config", "configs/gauss_newton/lm_cnn2_fmnist.yaml", "--data.root", str(FMNIST_SLICE),
        "--data.max_train_samples", "300", "--data.batch_size", "50", "--data.val_fraction", "0.02",
        "--model.cg_maxiter", "5", "--trainer.log_every_n_steps", "1", "--trainer.max_epochs", "2", "--trainer.limit_test_batches", "2"]


def test_lm_lowers_the_loss_and_resumes_to_the_same_trajectory(tmp_path: Path) -> None:
    assert run_train([*TINY, "--trainer.max_steps", "8", "--name", "whole"], tmp_path) == 0
    assert run_train([*TINY, "--trainer.max_steps", "3", "--name", "cut"], tmp_path) == 0
    assert run_train([*TINY, "--trainer.max_steps", "8", "--name", "cut", "--ckpt_path", "last"], tmp_path) == 0
    whole = read_metrics(run_dir(tmp_path, "whole"))
    assert whole == read_metrics(run_dir(tmp_path, "cut"))
    losses = [float(r["train/loss"]) for r in whole if r.get("train/loss")]
    assert len(losses) == 8 and min(losses[1:]) < losses[0]
    result = read_results(run_dir(tmp_path, "cut"))
    assert result["global_step"] == 8 and result["test/acc"] > 0.3  # chance is 0.1
