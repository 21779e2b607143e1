"""W&B follows the user: config/flag loggers merged with the run's own, tags/group/entity, WANDB_* variables,
online when logged in, the results in the summary, the config sent once, checkpoints as artifacts, and no folder
left by a run that fails with W&B on. Offline runs are read back from their run-*.wandb files."""
import json
import time
from pathlib import Path

import pytest

import train
from lit_modules import SupervisedModule
from tests.conftest import FMNIST_SLICE, run_dir
from tests.wandb_records import finished_records, summary_and_config

ARGS = ["--config", "configs/default.yaml", "--data.root", str(FMNIST_SLICE), "--data.max_train_samples", "100",
        "--data.batch_size", "50", "--data.val_fraction", "0.05", "--trainer.max_epochs", "1",
        "--trainer.limit_test_batches", "2", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false"]


def test_results_reach_the_summary_and_the_config_goes_once(tmp_path: Path) -> None:
    results = train.run([*ARGS, "--name", "wb", "--trainer.default_root_dir", str(tmp_path), "--wandb_tags", "[a, b]",
                         "--wandb_group", "g1"])
    # under load the W&B service may still be appending the last records after finish() returns: wait for them
    deadline = time.monotonic() + 30
    while True:
        summary, config = summary_and_config(run_dir(tmp_path, "wb"))
        missing = {k for k in results if k not in summary}
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not missing, missing
    assert config["model"]["init_args"]["net"]["class_path"] == "nets.CNN2"
    assert not [k for k in config if k.startswith("_") and k != "_wandb"]  # no _instantiator, no __path__
    assert "net" not in config and "num_classes" not in config  # the model's hparams are not sent a second time
    run_record = next(r.run for p in (run_dir(tmp_path, "wb")).glob("wandb/offline-run-*/run-*.wandb")
                      for r in finished_records(p) if r.WhichOneof("record_type") == "run")
    assert list(run_record.tags) == ["a", "b"] and run_record.run_group == "g1"
    assert run_record.project == "overparam" and run_record.run_id == (run_dir(tmp_path, "wb") / "wandb_id").read_text()


def test_a_configured_wandb_logger_is_merged_not_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_PROJECT", "from_env")
    logger = {"class_path": "pytorch_lightning.loggers.WandbLogger",
              "init_args": {"tags": ["from_config"], "name": "my-name", "job_type": "probe"}}
    train.run([*ARGS, "--name", "merged", "--trainer.default_root_dir", str(tmp_path), "--trainer.max_steps", "1",
               f"--trainer.logger={json.dumps(logger)}"])
    out = run_dir(tmp_path, "merged")
    run_record = next(r.run for p in out.glob("wandb/offline-run-*/run-*.wandb") for r in finished_records(p)
                      if r.WhichOneof("record_type") == "run")
    assert list(run_record.tags) == ["from_config"] and run_record.display_name == "my-name"
    assert run_record.job_type == "probe" and run_record.project == "from_env"
    assert run_record.run_id == (out / "wandb_id").read_text()  # the run's own id and folder
    assert (out / "metrics.csv").is_file()  # the CSV log is always written


def test_online_when_logged_in_unless_wandb_mode_says_otherwise(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert train.wandb_mode() == "offline"  # no netrc, no key
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "x" * 40 + "\n")
    (tmp_path / "netrc").chmod(0o600)
    assert train.wandb_mode() == "online"  # what `wandb login` writes
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert train.wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert train.wandb_mode() == "disabled"


def test_log_model_keeps_one_artifact_lineage_across_resumes(tmp_path: Path) -> None:
    folder = tmp_path / "exp" / "version_0"
    folder.mkdir(parents=True)
    first, resumed = (train.make_wandb_logger(folder, "online", log_model="all") for _ in range(2))
    # Lightning names the artifact model-<run id>: the same id after a resume continues the same artifact
    assert first.version == resumed.version == (folder / "wandb_id").read_text()
    assert first._log_model == "all"
    with pytest.raises(train.UsageError, match="needs W&B online"):
        train.run([*ARGS, "--name", "art", "--trainer.default_root_dir", str(tmp_path), "--wandb_log_model", "true"])


class FailsAfterWandbStarts(SupervisedModule):
    def on_fit_start(self) -> None:
        raise ValueError("model refuses to train")


def test_a_failed_run_with_wandb_on_leaves_no_folder(tmp_path: Path) -> None:
    with pytest.raises(train.UsageError, match="refuses"):
        train.run([*ARGS, "--name", "fails", "--trainer.default_root_dir", str(tmp_path), "--model",
                   "tests.test_wandb.FailsAfterWandbStarts", "--model.net", "nets.CNN2"])
    assert not any((tmp_path / "fails").iterdir())
