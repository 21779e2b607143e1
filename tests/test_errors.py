"""Every bad input gets one clear `error:` line, exit code != 0, and leaves earlier runs untouched."""
import json
import subprocess
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from torchvision import datasets

from tests.conftest import ROOT, python, run_train
from tests.data_fixtures import write_cifar, write_mnist

BASE = ["--config", "configs/default.yaml", "--name", "exp", "--data.max_train_samples", "100",
        "--data.batch_size", "50", "--trainer.max_epochs", "1"]


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """A runs folder that already holds an earlier run of the same experiment."""
    earlier = tmp_path / "runs" / "exp" / "version_0"
    earlier.mkdir(parents=True)
    (earlier / "results.json").write_text(json.dumps({"test/acc": 0.9}))
    return tmp_path / "runs"


def fails_cleanly(args: list[str], runs: Path, capsys: pytest.CaptureFixture, match: str) -> None:
    assert run_train(args, runs) != 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err and err[-1].startswith("error: "), err[-3:]
    assert sum(line.startswith("error:") for line in err) == 1 and not any("Traceback" in line for line in err)
    assert match.lower() in err[-1].lower(), err[-1]
    assert json.loads((runs / "exp" / "version_0" / "results.json").read_text()) == {"test/acc": 0.9}
    assert sorted(p.name for p in (runs / "exp").iterdir()) == ["version_0"]  # nothing new left behind


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_unknown_config_key(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = write(tmp_path / "bad.yaml", (ROOT / "configs/default.yaml").read_text() + "bogus_key: 1\n")
    fails_cleanly([*BASE, "--config", config], runs, capsys, "bogus_key")


def test_unknown_nested_config_key(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    text = (ROOT / "configs/default.yaml").read_text().replace("    root: data", "    root: data\n    colour: red")
    fails_cleanly([*BASE, "--config", write(tmp_path / "bad.yaml", text)], runs, capsys, "colour")


# bad flags, each one error line: (what is wrong, the arguments, words the line must hold)
BAD_FLAGS = {
    "unknown flag": ([*BASE, "--learning_rate", "3"], "learning_rate"),
    "wrong type": ([*BASE, "--data.batch_size", "lots"], "batch_size"),
    "missing config file": ([*BASE, "--config", "configs/nope.yaml"], "nope.yaml"),
    "unknown model class": ([*BASE, "--model", "NoSuchModule"], "NoSuchModule"),
    "resume last without an earlier checkpoint": ([*BASE, "--ckpt_path", "last"], "no earlier run of 'exp'"),
    "resume from a missing file": ([*BASE, "--ckpt_path", "gone.ckpt"], "checkpoint not found"),
    "batch size not positive": ([*BASE, "--data.batch_size", "0"], "batch_size must be positive"),
    "more devices than the machine has": ([*BASE, "--trainer.accelerator", "cpu", "--trainer.devices", "512"],
                                          "more CPU cores than this machine has"),
    "invalid checkpoint interval": ([*BASE, "--checkpoint_every_n_steps", "0"], "checkpoint_every_n_steps"),
    "test of a missing checkpoint": (["test", *BASE, "--ckpt_path", "gone.ckpt"], "checkpoint not found"),
    "evaluation needs a checkpoint or config": (["predict", "--name", "exp"], "predict needs --ckpt_path"),
    "unknown export format": (["export", *BASE, "--format", "tflite"], "format"),
    "unknown wandb value": ([*BASE, "--wandb_log_model", "sometimes"], "wandb_log_model"),
    "config logger of an unknown class": ([*BASE, "--trainer.logger", "NoSuchLogger"], "NoSuchLogger"),
}


@pytest.mark.parametrize("case", BAD_FLAGS)
def test_bad_flags(case: str, runs: Path, capsys: pytest.CaptureFixture) -> None:
    args, words = BAD_FLAGS[case]
    fails_cleanly(args, runs, capsys, words)


def test_invalid_yaml(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fails_cleanly([*BASE, "--config", write(tmp_path / "bad.yaml", "model: [unclosed\n")], runs, capsys, "bad.yaml")


def test_resume_from_a_corrupt_checkpoint(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "broken.ckpt"
    path.write_bytes(b"\x00garbage" * 100)
    fails_cleanly([*BASE, "--ckpt_path", str(path)], runs, capsys, "cannot read checkpoint")


def test_checkpoint_of_another_model_class(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "overparam": {"model_class": "lit_modules.gan.WGANGPModule"}}, path)
    fails_cleanly([*BASE, "--ckpt_path", str(path)], runs, capsys, "written by lit_modules.gan.WGANGPModule")


def test_checkpoint_of_another_network(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from lit_modules import SupervisedModule
    from nets import CNN1

    path = tmp_path / "cnn1.ckpt"
    torch.save({"state_dict": SupervisedModule(CNN1()).state_dict()}, path)
    fails_cleanly([*BASE, "--ckpt_path", str(path)], runs, capsys, "does not fit this model")


def test_missing_data_without_download(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fails_cleanly([*BASE, "--data.root", str(tmp_path / "empty"), "--data.download", "false"], runs, capsys,
                  "FashionMNIST/raw")


def test_missing_data_when_download_fails(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(self) -> None:
        raise URLError("no network")

    monkeypatch.setattr(datasets.FashionMNIST, "download", offline)
    fails_cleanly([*BASE, "--data.root", str(tmp_path / "empty"), "--data.download", "true"], runs, capsys,
                  "download is impossible")


def test_truncated_idx_file(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw = write_mnist(tmp_path / "data", folder="FashionMNIST")
    labels = raw / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:40])
    fails_cleanly([*BASE, "--data.root", str(tmp_path / "data")], runs, capsys, "FashionMNIST")


def test_corrupt_cifar_pickle(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = write_cifar(tmp_path / "data")
    (folder / "test_batch").write_bytes(b"\x80\x04truncated")
    args = [*BASE, "--data", "CIFAR10DataModule", "--data.root", str(tmp_path / "data"), "--model.net.in_channels",
            "3"]
    fails_cleanly(args, runs, capsys, "cifar-10-batches-py")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_gpu_requested_without_a_gpu(runs: Path, capsys: pytest.CaptureFixture) -> None:
    fails_cleanly([*BASE, "--trainer.accelerator", "gpu", "--trainer.devices", "1"], runs, capsys, "GPU")


def test_real_cli_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    done = subprocess.run([python(), "train.py", "--config", "configs/default.yaml", "--data.batch_size", "-3",
                           "--wandb", "false", "--trainer.default_root_dir", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: data.batch_size must be positive")


# ---------------------------------------------------------------------- subcommands, W&B, devices
def test_more_cpu_processes_than_cores_without_naming_the_accelerator(runs: Path, capsys: pytest.CaptureFixture,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # "auto" means the CPU here
    fails_cleanly([*BASE, "--trainer.devices", "64"], runs, capsys, "more CPU cores than this machine has")


def test_test_of_another_models_checkpoint(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "overparam": {"model_class": "lit_modules.gda_gan.WGANGPModule"}}, path)
    fails_cleanly(["test", *BASE, "--ckpt_path", str(path)], runs, capsys, "written by lit_modules.gda_gan")
    assert not (runs / "exp" / "eval_0").exists()


def test_torchscript_export_of_a_growing_net(runs: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["export", "--config", "configs/neuron_pursuit/gaussian.yaml", "--name", "exp", "--format",
            "torchscript"]
    fails_cleanly(args, runs, capsys, "network grows during training")


def test_unknown_wandb_mode(runs: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    fails_cleanly(BASE, runs, capsys, "WANDB_MODE=sometimes")

