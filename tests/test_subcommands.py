"""After fit: validate / test / predict / export of a checkpoint into eval_<k>/, load_from_checkpoint of every
module, and the README's promises about run folders (one row per step, config.yaml re-runs, no checkpointing)."""
import csv
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from tests.conftest import FMNIST_SLICE, QUIET, read_metrics, read_results, run_dir

DATA = ["--data.root", str(FMNIST_SLICE), "--data.max_train_samples", "200", "--data.batch_size", "50",
        "--data.val_fraction", "0.05"]
TINY = [*DATA, "--trainer.max_epochs", "1", *QUIET]


def fingerprint(folder: Path) -> dict[str, str]:
    """Content hash of every file of a run folder outside its eval_<k>/ folders."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.relative_to(folder).parts[0].startswith("eval_")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CNN2 run (fit, then test of the best checkpoint) shared by the tests of this file that only read it."""
    root = tmp_path_factory.mktemp("runs")
    train.run(["--config", "configs/default.yaml", "--name", "cnn", "--trainer.default_root_dir", str(root), *TINY])
    return run_dir(root, "cnn")


def test_test_of_the_best_checkpoint_repeats_the_runs_test_metric(trained: Path) -> None:
    before = fingerprint(trained)
    best = read_results(trained)["best_checkpoint"]
    by_path = train.run(["test", "--ckpt_path", best, *QUIET])  # the run folder's config.yaml is used
    assert by_path["run_dir"] == str(trained / "eval_0")
    assert by_path["test/acc"] == read_results(trained)["test/acc"]
    by_name = train.run(["test", "--config", "configs/default.yaml", "--name", "cnn", "--ckpt_path", "best",
                         "--trainer.default_root_dir", str(trained.parent.parent), *TINY])
    assert by_name["run_dir"] == str(trained / "eval_1") and by_name["checkpoint"] == best
    assert json.loads((trained / "eval_1" / "results_test.json").read_text())["test/acc"] == by_path["test/acc"]
    validated = train.run(["validate", "--ckpt_path", str(trained / "checkpoints" / "last.ckpt"), *QUIET])
    assert validated["val/acc"] == read_results(trained)["val/acc"]  # max_epochs 1: best is last
    name_only = train.run(["test", "--name", "cnn", "--ckpt_path", "best", "--trainer.default_root_dir",
                           str(trained.parent.parent), *QUIET])  # the newest run's config.yaml is used
    assert name_only["checkpoint"] == best and name_only["test/acc"] == by_path["test/acc"]
    assert fingerprint(trained) == before  # nothing of the training run changed


def test_predict_writes_labels_and_probabilities(trained: Path) -> None:
    out = train.run(["predict", "--ckpt_path", str(trained / "checkpoints" / "last.ckpt"),
                     "--trainer.limit_predict_batches", "2", *QUIET])
    with open(out["predictions"], newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2 * 50 and list(rows[0])[:3] == ["index", "target", "label"]
    probs = [float(rows[0][f"prob_{c}"]) for c in range(10)]
    assert abs(sum(probs) - 1) < 1e-4 and int(rows[0]["label"]) == max(range(10), key=probs.__getitem__)
    assert Path(out["predictions"]).parent == Path(out["run_dir"]) and (Path(out["run_dir"]) / "results_predict.json").is_file()


def test_load_from_checkpoint_needs_no_arguments(trained: Path) -> None:
    from lit_modules import SupervisedModule

    model = SupervisedModule.load_from_checkpoint(read_results(trained)["best_checkpoint"], map_location="cpu")
    from datamodules import FashionMNISTDataModule

    dm = FashionMNISTDataModule(root=str(FMNIST_SLICE), batch_size=500)
    dm.setup("test")
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for batch in dm.test_dataloader():
            x, y = dm.on_after_batch_transfer(batch, 0)
            correct, total = correct + int((model(x).argmax(1) == y).sum()), total + len(y)
    assert correct / total == pytest.approx(read_results(trained)["test/acc"], abs=1e-6)


# no ImageNet ResNet-50 file in tests: the small torchvision-named ResNet of the fine-tuning tests, randomly drawn
NO_WEIGHTS = ['--model.net={"class_path": "tests.mapping.test_finetune.TinyResNet", "init_args": {"weights_path": null}}']
MLP_K64 = ["--model.init_args.generator.init_args.k", "64", "--model.init_args.critic.init_args.k", "64"]
LWT = ["--model.mapping.strategy", "lwt", "--model.mapping.latent_dim", "1872"]
MODULES = {"configs/default.yaml": [], "configs/mapping/cnn2_fmnist.yaml": [],
           "configs/baseline/cnn3_cityscapes.yaml": [], "configs/mapping/cnn3_cityscapes.yaml": [],
           "configs/baseline/cnn2_celebdf.yaml": [], "configs/mapping/cnn2_celebdf.yaml": LWT,
           "configs/gauss_newton/two_layer_california.yaml": [], "configs/gauss_newton/lm_cnn2_fmnist.yaml": [],
           "configs/gan/synthetic_gaussian.yaml": ["--model.init_args.k", "2"],
           "configs/gan/mlp_mnist.yaml": ["--trainer.callbacks=[]", *MLP_K64],
           "configs/neuron_pursuit/gaussian.yaml": [], "configs/neuron_pursuit/saddle_x2.yaml": [],
           "configs/resnet_width/resnet_sphere.yaml": [], "configs/baseline/resnet50_celebdf.yaml": [*NO_WEIGHTS, "--model.layers", "layer4+fc"],
           "configs/mapping/resnet50_finetune_celebdf.yaml": [*NO_WEIGHTS, "--model.mapping.layers", "layer4+fc",
                                                              "--model.mapping.latent_dim", "1024"]}


@pytest.mark.parametrize("config", MODULES)
def test_every_module_loads_from_its_checkpoint_alone(config: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The hyper-parameters a run saves rebuild its module (nets as class_path/init_args), weights included."""
    monkeypatch.setattr(sys, "argv", ["train.py"])  # the CLI parses the given arguments, not pytest's
    cli = train.OverparamCLI(["--config", config, *MODULES[config], "--trainer.default_root_dir", str(tmp_path),
                              *QUIET], "fit")
    model = cli.model
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                  "pytorch-lightning_version": "2.6.0"}
    model.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "m.ckpt")
    loaded = type(model).load_from_checkpoint(tmp_path / "m.ckpt", map_location="cpu")
    assert type(loaded) is type(model)
    torch.testing.assert_close(loaded.state_dict(), model.state_dict(), rtol=0, atol=0, equal_nan=True)


def test_export_of_a_mapping_net_is_a_plain_cnn2_with_the_same_test_accuracy(tmp_path: Path) -> None:
    import nets
    from datamodules import FashionMNISTDataModule
    from lit_modules import MappingNetModule

    root = ["--trainer.default_root_dir", str(tmp_path)]
    train.run(["fit", "--config", "configs/mapping/cnn2_fmnist.yaml", "--model.mapping.latent_dim", "1024", "--name",
               "map", "--trainer.max_steps", "3", *root, *TINY])
    ckpt = str(run_dir(tmp_path, "map") / "checkpoints" / "last.ckpt")
    tested = train.run(["test", "--ckpt_path", ckpt, *QUIET])
    exported = train.run(["export", "--ckpt_path", ckpt, "--format", "state_dict", *QUIET])
    assert exported["net"]["class_path"] == "nets.CNN2"
    plain = nets.CNN2(**exported["net"].get("init_args", {}))
    plain.load_state_dict(torch.load(exported["file"], weights_only=True))  # a plain CNN2's state dict
    mapped = MappingNetModule.load_from_checkpoint(ckpt, map_location="cpu")
    plain.eval(), mapped.eval()
    dm = FashionMNISTDataModule(root=str(FMNIST_SLICE), batch_size=500)
    dm.setup("test")
    correct = 0
    with torch.no_grad():
        for batch in dm.test_dataloader():
            x, y = dm.on_after_batch_transfer(batch, 0)
            guess = plain(x).argmax(1)
            assert torch.equal(guess, mapped(x).argmax(1))
            correct += int((guess == y).sum())
    assert correct / len(dm.test_set) == pytest.approx(tested["test/acc"], abs=1e-6)


def test_export_torchscript_and_onnx_give_the_nets_outputs(trained: Path) -> None:
    from lit_modules import SupervisedModule

    ckpt = str(trained / "checkpoints" / "last.ckpt")
    net = SupervisedModule.load_from_checkpoint(ckpt, map_location="cpu").net.eval()
    x = torch.rand(3, 1, 28, 28)
    scripted = train.run(["export", "--ckpt_path", ckpt, "--format", "torchscript", *QUIET])
    assert torch.allclose(torch.jit.load(scripted["file"])(x), net(x).detach(), atol=1e-6)
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    exported = train.run(["export", "--ckpt_path", ckpt, "--format", "onnx", *QUIET])
    onnx.checker.check_model(onnx.load(exported["file"]))
    out = ReferenceEvaluator(exported["file"]).run(None, {"input": x.numpy()})[0]
    assert torch.allclose(torch.from_numpy(out), net(x).detach(), atol=1e-4)


# ---------------------------------------------------------------------- the README's promises
def test_metrics_csv_has_one_row_per_logged_step(tmp_path: Path) -> None:
    train.run(["--config", "configs/default.yaml", "--name", "rows", "--trainer.max_epochs", "2",
               "--trainer.log_every_n_steps", "2", "--trainer.default_root_dir", str(tmp_path),
               *DATA, *QUIET])
    rows = read_metrics(run_dir(tmp_path, "rows"))
    steps = [row["step"] for row in rows]
    assert len(steps) == len(set(steps)), steps
    epoch_end = next(row for row in rows if row["val/acc"])
    assert epoch_end["train/acc"] and epoch_end["epoch"]  # validation and epoch-end train metrics share the row


def test_saved_config_reruns_under_its_name_as_a_new_run(trained: Path) -> None:
    again = train.run(["--config", str(trained / "config.yaml"), "--trainer.max_steps", "1", *QUIET])
    assert Path(again["run_dir"]) == trained.parent / "version_1"  # same experiment, not "config", not a resume
    assert read_results(trained)["global_step"] == 4


def test_without_checkpointing_the_final_weights_are_tested(tmp_path: Path) -> None:
    results = train.run(["--config", "configs/default.yaml", "--name", "nockpt", "--trainer.enable_checkpointing",
                         "false", "--trainer.default_root_dir", str(tmp_path), *TINY])
    assert results["tested_checkpoint"] == "last weights" and results["global_step"] == 4
    assert not (run_dir(tmp_path, "nockpt") / "checkpoints").exists()


def test_predict_of_a_segmentation_run_writes_one_mask_per_image(tmp_path: Path) -> None:
    from tests.cityscapes_fixture import write_cityscapes

    data = write_cityscapes(tmp_path / "cityscapes")
    out = train.run(["predict", "--config", "configs/baseline/cnn3_cityscapes.yaml", "--data.root", str(data),
                     "--data.batch_size", "2", "--trainer.default_root_dir", str(tmp_path), *QUIET])  # initial weights
    masks = sorted(Path(out["predictions"]).glob("*.png"))
    assert masks and Path(out["predictions"]).parent == Path(out["run_dir"])
    from PIL import Image

    with Image.open(masks[0]) as image:
        assert image.mode == "L"  # one channel of class ids
        mask = torch.as_tensor(np.array(image))
    assert int(mask.max()) < 19


def test_predict_of_a_gan_writes_a_sample_grid_and_tensor(tmp_path: Path) -> None:
    out = train.run(["predict", "--config", "configs/gan/mlp_mnist.yaml", "--trainer.callbacks=[]", *MLP_K64,
                     "--trainer.default_root_dir", str(tmp_path), *QUIET])
    samples = torch.load(out["samples"], weights_only=True)
    assert samples.shape[0] == 64 and 0 <= float(samples.min()) and float(samples.max()) <= 1
    assert Path(out["samples_png"]).stat().st_size > 1000
