"""End-to-end runs of train.py: run folder, results.json, versions, resume parity, SIGKILL, NaN guard, W&B."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lit_modules import SupervisedModule

from tests.conftest import FMNIST_SLICE, QUIET, ROOT, python, read_metrics, read_results, run_dir, run_train

SMALL = ["--config", "configs/default.yaml", "--data.root", "data", "--data.max_train_samples", "300",
         "--data.batch_size", "50", "--data.val_fraction", "0.05", "--trainer.max_epochs", "1"]


def test_run_writes_its_folder_and_results(tmp_path: Path) -> None:
    assert run_train([*SMALL, "--name", "demo"], tmp_path) == 0
    out = run_dir(tmp_path, "demo")
    assert {"config.yaml", "metrics.csv", "results.json", "checkpoints"} <= {p.name for p in out.iterdir()}
    assert (out / "checkpoints" / "last.ckpt").is_file() and list((out / "checkpoints").glob("best-*.ckpt"))
    results = read_results(out)
    for key in ("test/acc", "test/loss", "val/acc", "train/loss", "trainable_params", "total_params", "epochs",
                "global_step", "train_seconds", "train_samples_per_second", "peak_rss_mb"):
        assert key in results, key
    assert results["trainable_params"] == results["total_params"] == 108_618
    assert results["global_step"] == 6 and results["epochs"] == 1
    assert 0.0 <= results["test/acc"] <= 1.0 and results["train_samples_per_second"] > 0
    assert "batch_size: 50" in (out / "config.yaml").read_text()


def test_default_config_learns_fashion_mnist(tmp_path: Path) -> None:
    args = ["--config", "configs/default.yaml", "--trainer.max_epochs", "1", "--data.max_train_samples", "3000",
            "--name", "learn"]
    assert run_train(args, tmp_path) == 0
    assert read_results(run_dir(tmp_path, "learn"))["test/acc"] > 0.65  # chance is 0.10


def test_second_run_gets_a_new_version(tmp_path: Path) -> None:
    assert run_train([*SMALL, "--name", "twice", "--trainer.max_steps", "2"], tmp_path) == 0
    first = (run_dir(tmp_path, "twice") / "results.json").read_text()
    assert run_train([*SMALL, "--name", "twice", "--trainer.max_steps", "3"], tmp_path) == 0
    assert (run_dir(tmp_path, "twice") / "results.json").read_text() == first
    assert read_results(run_dir(tmp_path, "twice", 1))["global_step"] == 3


RESUME = ["--config", "configs/default.yaml", "--data.max_train_samples", "400", "--data.batch_size", "40",
          "--data.val_fraction", "0.05", "--data.augment", "true", "--trainer.max_epochs", "2",
          "--trainer.log_every_n_steps", "1"]


def test_resume_mid_epoch_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    assert run_train([*RESUME, "--name", "full"], tmp_path) == 0
    assert run_train([*RESUME, "--name", "cut", "--trainer.max_steps", "13"], tmp_path) == 0  # mid epoch 2
    assert torch.load(run_dir(tmp_path, "cut") / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 13
    assert run_train([*RESUME, "--name", "cut", "--ckpt_path", "last"], tmp_path) == 0
    assert not run_dir(tmp_path, "cut", 1).exists()  # resumed in place
    assert read_metrics(run_dir(tmp_path, "cut")) == read_metrics(run_dir(tmp_path, "full"))
    full, cut = read_results(run_dir(tmp_path, "full")), read_results(run_dir(tmp_path, "cut"))
    for key in ("test/acc", "test/loss", "val/acc", "global_step", "epochs"):
        assert cut[key] == full[key], key


# the epoch's accuracy state comes back from the checkpoint, which torchmetrics does not count as an update
@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric MulticlassAccuracy was called before")
def test_resume_from_an_epochs_last_batch_ends_that_epoch(tmp_path: Path) -> None:
    # 10 batches an epoch: the cut run stops in the epoch's last batch. Its last.ckpt waits for the epoch's
    # validation; one written inside the batch resumes past the validation and the epoch's end (no val/acc,
    # train/acc or LR row at the boundary, epoch-2 accuracy mixed with epoch 1's)
    # (cosine LR over the 2 epochs: a scheduler step skipped at the boundary would change every later row)
    args = [*RESUME, "--model.lr_scheduler", "lit_modules.supervised.CosineAnnealingLR"]
    assert run_train([*args, "--name", "full"], tmp_path) == 0
    assert run_train([*args, "--name", "cut", "--trainer.max_steps", "10"], tmp_path) == 0
    assert run_train([*args, "--name", "cut", "--ckpt_path", "last"], tmp_path) == 0
    full, cut = read_metrics(run_dir(tmp_path, "full")), read_metrics(run_dir(tmp_path, "cut"))
    assert any(r["val/acc"] for r in cut if r["step"] == "9") and any(r["lr-Adam"] for r in cut if r["step"] == "10")
    assert {r["lr-Adam"] for r in full if r["lr-Adam"]} == {"0.001", "0.0005"} and cut == full
    best = [sorted(p.name for p in (run_dir(tmp_path, n) / "checkpoints").glob("best-*")) for n in ("full", "cut")]
    assert best[0] == best[1] and len(best[0]) == 1
    assert read_results(run_dir(tmp_path, "cut"))["test/acc"] == read_results(run_dir(tmp_path, "full"))["test/acc"]


def test_resume_after_a_mid_epoch_validation_keeps_it(tmp_path: Path) -> None:
    # validation every 5 batches: the save at step 5 waits for the validation that follows the batch
    args = [*RESUME, "--trainer.val_check_interval", "5"]
    assert run_train([*args, "--name", "full"], tmp_path) == 0
    assert run_train([*args, "--name", "cut", "--trainer.max_steps", "15", "--checkpoint_every_n_steps", "5"],
                     tmp_path) == 0
    ckpt = torch.load(run_dir(tmp_path, "cut") / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 15
    assert run_train([*args, "--name", "cut", "--ckpt_path", "last"], tmp_path) == 0
    full, cut = read_metrics(run_dir(tmp_path, "full")), read_metrics(run_dir(tmp_path, "cut"))
    assert sum(bool(r["val/acc"]) for r in full) == 4 and cut == full


def launch(args: list[str], root: Path) -> subprocess.Popen:
    # one thread everywhere: runs compared bit for bit must use the same reduction order
    cmd = [python(), "train.py", *args, "--trainer.default_root_dir", str(root), *QUIET]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_sigkill_mid_epoch_then_resume_matches(tmp_path: Path) -> None:
    args = ["--config", "configs/default.yaml", "--data.max_train_samples", "1000", "--data.batch_size", "10",
            "--data.val_fraction", "0.02", "--trainer.max_epochs", "2", "--trainer.log_every_n_steps", "1",
            "--checkpoint_every_n_steps", "10"]
    whole = launch([*args, "--name", "whole"], tmp_path)
    proc = launch([*args, "--name", "killed"], tmp_path)
    ckpt = run_dir(tmp_path, "killed") / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if ckpt.is_file() and torch.load(ckpt, weights_only=True)["global_step"] >= 30:
            proc.send_signal(signal.SIGKILL)  # somewhere after step 30, possibly while writing a checkpoint
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (run_dir(tmp_path, "killed") / "results.json").exists()
    assert all(p.suffix == ".ckpt" for p in ckpt.parent.iterdir())  # no half-written files left behind
    step = torch.load(ckpt, weights_only=True)["global_step"]
    assert 30 <= step < 200
    resumed = launch([*args, "--name", "killed", "--ckpt_path", "last"], tmp_path)
    assert resumed.wait(timeout=300) == 0 and whole.wait(timeout=300) == 0, resumed.stderr.read()[-2000:]
    assert read_metrics(run_dir(tmp_path, "killed")) == read_metrics(run_dir(tmp_path, "whole"))


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    args = [*SMALL, "--name", "nan", "--model.optimizer.lr", "1e30", "--checkpoint_every_n_steps", "1"]
    assert run_train(args, tmp_path) == 1
    err = capsys.readouterr().err
    assert "non-finite train/loss" in err and "at step" in err
    ckpt = torch.load(run_dir(tmp_path, "nan") / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_wandb_offline_run_resumes_the_same_wandb_id(tmp_path: Path) -> None:
    args = [*SMALL, "--name", "wb", "--trainer.max_steps", "2"]
    common = ["--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"]
    env = {**os.environ, "WANDB_MODE": "offline"}
    for extra in ([], ["--ckpt_path", "last", "--trainer.max_steps", "4"]):
        done = subprocess.run([python(), "train.py", *args, *common, *extra], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    out = run_dir(tmp_path, "wb")
    run_id = (out / "wandb_id").read_text().strip()
    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(run_id) for r in runs)
    record = next(runs[0].glob("run-*.wandb")).read_bytes()  # W&B's offline log: config, hparams, metrics
    for key in (b'batch_size":50', b"trainable_params", b"test/acc"):
        assert key in record, key
    assert read_results(out)["global_step"] == 4


def test_help_lists_models_and_datamodules() -> None:
    done = subprocess.run([python(), "train.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    for name in ("SupervisedModule", "FashionMNISTDataModule", "CIFAR100DataModule", "--ckpt_path", "--seed"):
        assert name in done.stdout, name


def test_print_config_resolves_everything(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_train(["--config", "configs/baseline/cnn1_fmnist.yaml", "--seed", "7", "--print_config"], tmp_path)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "nets.CNN1" in out and "seed: 7" in out
    assert not any(tmp_path.iterdir())


def test_seed_changes_the_run(tmp_path: Path) -> None:
    for seed in ("1", "2"):
        assert run_train([*SMALL, "--name", f"s{seed}", "--seed", seed, "--trainer.max_steps", "2"], tmp_path) == 0
    a, b = (read_results(run_dir(tmp_path, f"s{s}")) for s in "12")
    assert a["train/loss"] != b["train/loss"]


class UnmonitoredModule(SupervisedModule):
    """A module that names no metric to pick a best checkpoint by (like the GAN and GN modules)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.monitor = None


def test_without_a_monitor_the_final_weights_are_tested(tmp_path: Path) -> None:
    args = [*SMALL, "--name", "plain", "--model", "tests.test_cli.UnmonitoredModule", "--model.net", "nets.CNN2",
            "--trainer.max_epochs", "2", "--trainer.max_steps", "8"]  # stops mid epoch 2 (6 steps per epoch)
    assert run_train(args, tmp_path) == 0
    results = read_results(run_dir(tmp_path, "plain"))
    assert results["tested_checkpoint"] == "last weights" and results["global_step"] == 8


def test_results_describe_the_whole_fit_when_an_earlier_checkpoint_is_tested(tmp_path: Path) -> None:
    # lr 0: val/acc never improves, so the epoch-0 checkpoint stays "best" and is the one tested
    args = [*SMALL, "--name", "frozen", "--model.optimizer.init_args.lr", "0", "--trainer.max_epochs", "3"]
    assert run_train(args, tmp_path) == 0
    out = run_dir(tmp_path, "frozen")
    results = read_results(out)
    assert "epoch=0" in results["tested_checkpoint"]
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    stats = next(v for k, v in last["callbacks"].items() if k.startswith("RunStats"))
    assert results["epochs"] == 3 and results["global_step"] == 18
    assert results["train_seconds"] >= stats["train_seconds"]  # not the epoch-0 checkpoint's clock



def test_run_returns_results_and_raises_usage_error(tmp_path: Path) -> None:
    import train

    results = train.run(["--config", "configs/default.yaml", "--data.root", str(FMNIST_SLICE), "--trainer.max_steps",
                         "3", "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1",
                         "--trainer.default_root_dir", str(tmp_path), *QUIET])
    assert results == {**read_results(Path(results["run_dir"])), "run_dir": results["run_dir"]}
    assert results["global_step"] == 3
    with pytest.raises(train.UsageError, match="no_such_key"):
        train.run(["--config", "configs/default.yaml", "--model.no_such_key", "1",
                   "--trainer.default_root_dir", str(tmp_path)])
    assert sorted(p.name for p in (tmp_path / "default").iterdir()) == ["version_0"]


def test_plain_run_console_fits_one_screen_without_warnings(tmp_path: Path) -> None:
    cmd = [python(), "train.py", "--config", "configs/default.yaml", "--data.max_train_samples", "1000",
           "--trainer.max_epochs", "2", "--trainer.default_root_dir", str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) <= 40, lines
    text = "\n".join(lines)
    for noise in ("warn", "Tip", "FLOPs", "TPU", "wandb:"):
        assert noise.lower() not in text.lower(), noise
    assert "Epoch 2/2" in text and "v_num: 0" in text
    where = done.stdout.strip().splitlines()[-1]
    assert where.startswith(f"run: {tmp_path / 'default' / 'version_0'} (results.json, best: best-")
    assert "W&B offline: wandb sync " in where and (tmp_path / "default" / "version_0" / "wandb").is_dir()


def test_step_values_reach_the_log_only_when_written_and_the_curves_are_unchanged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # each self.log call costs Lightning 0.1-0.5 ms, so train/loss is handed over only on the steps the logger writes
    args = [*SMALL, "--trainer.log_every_n_steps", "4", "--trainer.max_epochs", "2"]
    calls: list[int] = []
    log = SupervisedModule.log
    monkeypatch.setattr(SupervisedModule, "log", lambda self, name, *a, **k: (
        calls.append(self.global_step) if name == "train/loss" else None, log(self, name, *a, **k))[1])
    assert run_train([*args, "--name", "sparse"], tmp_path) == 0
    assert calls == [3, 5, 7, 11]  # every 4th step and the last batch of each 6-step epoch
    monkeypatch.setattr(SupervisedModule, "logs_this_step", lambda self: True)
    assert run_train([*args, "--name", "every"], tmp_path) == 0
    assert read_metrics(run_dir(tmp_path, "sparse")) == read_metrics(run_dir(tmp_path, "every"))
    assert read_results(run_dir(tmp_path, "sparse"))["train/loss"] == read_results(run_dir(tmp_path, "every"))["train/loss"]


def test_adam_steps_skip_the_nvml_device_probe_without_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    import train  # noqa: F401  (importing the entry point settles the check)

    if torch.cuda.device_count():
        pytest.skip("GPUs present: Lightning's fork-safe NVML check stays on")
    probes = []
    monkeypatch.setattr(torch.cuda, "_raw_device_count_nvml", lambda: probes.append(1) or -1)
    optimizer = torch.optim.Adam(torch.nn.Linear(2, 2).parameters())
    for _ in range(3):
        optimizer.step()
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "0" and not probes


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_kept_unless_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import train

    assert train.keep_freed_memory()  # glibc accepts both settings
    calls: list[int] = []
    monkeypatch.setattr(train, "keep_freed_memory", lambda: calls.append(1) or True)
    args = ["--config", "configs/default.yaml", "--data.root", str(FMNIST_SLICE), "--trainer.max_steps", "1",
            "--trainer.limit_val_batches", "0", "--trainer.limit_test_batches", "1", "--trainer.default_root_dir",
            str(tmp_path), *QUIET]
    train.run(args)
    assert calls == [1]
    train.run([*args, "--keep_freed_memory", "false"])
    assert calls == [1]
