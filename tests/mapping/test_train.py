"""Mapping Networks end to end through train.py: counts in results.json, resume parity, mismatched checkpoints."""
import math
from pathlib import Path

import pytest
import torch

from tests.conftest import FMNIST_SLICE, read_metrics, read_results, run_dir, run_train

BASE = ["--config", "configs/mapping/cnn2_fmnist.yaml", "--data.root", str(FMNIST_SLICE),
        "--model.mapping.latent_dim", "256", "--data.max_train_samples", "400", "--data.batch_size", "40",
        "--data.val_fraction", "0.05", "--trainer.max_epochs", "2", "--trainer.log_every_n_steps", "1",
        "--trainer.limit_test_batches", "5"]


def test_resume_reproduces_the_uninterrupted_run_and_counts_latents(tmp_path: Path) -> None:
    assert run_train([*BASE, "--name", "full"], tmp_path) == 0
    assert run_train([*BASE, "--name", "cut", "--trainer.max_steps", "13"], tmp_path) == 0  # mid epoch 2
    ckpt = torch.load(run_dir(tmp_path, "cut") / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 13
    assert all(v.numel() < 108_618 * 2 for v in ckpt["state_dict"].values())  # latents and theta_0, no P x d matrix
    assert run_train([*BASE, "--name", "cut", "--ckpt_path", "last"], tmp_path) == 0
    assert read_metrics(run_dir(tmp_path, "cut")) == read_metrics(run_dir(tmp_path, "full"))
    full = read_results(run_dir(tmp_path, "full"))
    assert full["test/acc"] == read_results(run_dir(tmp_path, "cut"))["test/acc"]
    assert full["trainable_params"] == 256 and full["total_params"] == 108_618 and full["latent_dims"] == [256]
    assert {"train/stab", "train/smooth", "train/align", "train/lambda_stab", "train/z_norm"} <= set(
        read_metrics(run_dir(tmp_path, "full"))[0])


@pytest.mark.parametrize("change,message", [(["--model.mapping.latent_dim", "128"], "latent length"),
                                            (["--model.net", "nets.CNN1"], "target net is CNN1"),
                                            (["--model.mapping.seed", "7"], "mapping seed 0")])
def test_mismatched_checkpoint_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture, change: list[str],
                                             message: str) -> None:
    assert run_train([*BASE, "--name", "m", "--trainer.max_steps", "2"], tmp_path) == 0
    capsys.readouterr()
    assert run_train([*BASE, "--name", "m", "--ckpt_path", "last", *change], tmp_path) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err


# the synthetic regression data have no validation split, so the best-checkpoint monitor finds nothing (said on purpose)
@pytest.mark.filterwarnings("ignore:`ModelCheckpoint\\(monitor='val/loss'\\)` could not find the monitored key")
@pytest.mark.filterwarnings("ignore:Total length of `list` across ranks is zero")
def test_regression_with_one_output_per_sample_trains(tmp_path: Path) -> None:
    # a net returning (B,) against (B,) targets: the stability term and the train metrics must not broadcast
    args = ["--model", "lit_modules.MappingNetModule", "--model.net", "nets.TwoLayerTanh",
            "--model.net.init_args.in_features", "8", "--model.net.init_args.width", "16", "--model.task", "regression",
            "--model.mapping.latent_dim", "8", "--data", "datamodules.SyntheticRegressionDataModule",
            "--data.steps_per_epoch", "3", "--trainer.max_epochs", "1", "--name", "reg"]
    assert run_train(args, tmp_path) == 0
    results = read_results(run_dir(tmp_path, "reg"))
    assert results["trainable_params"] == 8 and results["train/mse"] > 0 and results["test/mse"] > 0


@pytest.mark.parametrize("extra,t_max", [([], 3), (["--model.lr_scheduler.init_args.T_max", "7"], 7)])
def test_cosine_schedule_follows_max_epochs_unless_t_max_is_given(tmp_path: Path, extra: list[str], t_max: int) -> None:
    args = [*BASE, "--data.max_train_samples", "80", "--trainer.max_epochs", "3", "--name", "cos", *extra]
    assert run_train(args, tmp_path) == 0
    (scheduler,) = torch.load(run_dir(tmp_path, "cos") / "checkpoints" / "last.ckpt", weights_only=False)["lr_schedulers"]
    # last.ckpt holds the end of the third epoch, whose scheduler step Lightning takes in its last batch
    assert scheduler["T_max"] == t_max and scheduler["last_epoch"] == 3
    assert scheduler["_last_lr"][0] == pytest.approx(0.03 * (1 + math.cos(3 * math.pi / t_max)) / 2, abs=1e-12)


def test_cosine_without_t_max_needs_max_epochs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_train([*BASE, "--trainer.max_epochs", "-1", "--trainer.max_steps", "2"], tmp_path) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "follows trainer.max_epochs" in err
