"""Pictures land as PNG in the run folder (and in W&B when it is on)."""
from pathlib import Path

import train
from tests.conftest import FMNIST_SLICE, QUIET, run_dir
from tests.wandb_records import finished_records

ARGS = ["--data.root", str(FMNIST_SLICE), "--data.max_train_samples", "200", "--data.batch_size", "50",
        "--data.val_fraction", "0.05", "--trainer.max_epochs", "1", "--trainer.limit_test_batches", "3",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def test_classifier_gets_confusion_matrix_and_misclassified_examples(tmp_path: Path) -> None:
    train.run(["--config", "configs/default.yaml", "--name", "cls", "--trainer.default_root_dir", str(tmp_path),
               *ARGS])  # W&B on (offline)
    out = run_dir(tmp_path, "cls")
    assert {p.name for p in (out / "figures").iterdir()} == {"confusion_matrix.png", "misclassified.png"}
    logged = {item.key or "/".join(item.nested_key) for p in out.glob("wandb/offline-run-*/run-*.wandb")
              for r in finished_records(p)
              if r.WhichOneof("record_type") == "history" for item in r.history.item}
    assert {"figures/confusion_matrix/_type", "figures/misclassified/_type"} <= logged  # wandb.Image entries


def test_mapping_run_draws_latent_norm_lambdas_and_weight_histograms(tmp_path: Path) -> None:
    train.run(["fit", "--config", "configs/mapping/cnn2_fmnist.yaml", "--model.mapping.strategy", "lwt",
               "--model.mapping.latent_dim", "1872", "--name", "map",
               "--trainer.max_steps", "3", "--trainer.log_every_n_steps", "1", "--trainer.default_root_dir",
               str(tmp_path), *ARGS, *QUIET])  # W&B off: PNG files only
    figures = run_dir(tmp_path, "map") / "figures"
    assert {p.name for p in figures.iterdir()} == {"curves.png", "histograms.png"}
    assert all(p.stat().st_size > 5000 for p in figures.iterdir())


def test_resnet_width_run_draws_the_ntk_spectrum(tmp_path: Path) -> None:
    train.run(["--config", "configs/resnet_width/resnet_sphere.yaml", "--data.init_args.n", "16",
               "--model.init_args.net.init_args.width", "16", "--name", "ntk", "--trainer.max_steps", "20",
               "--trainer.default_root_dir", str(tmp_path), *QUIET])
    assert (run_dir(tmp_path, "ntk") / "figures" / "ntk_spectrum.png").stat().st_size > 5000
