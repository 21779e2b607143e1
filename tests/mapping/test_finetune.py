"""Fine-tuning by generated modulation (Eq. 25, Table 10), its baselines, and the deepfake frames datamodule."""
import json
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Optional

import pytest
import torch
import yaml
from torch import nn
from torch.func import functional_call, jacrev

from datamodules import DataError, DeepfakeFramesDataModule
from datamodules.deepfake_videos import decode_frames
from lit_modules import FineTuneModule, MappingFineTuneModule
from nets.mapping.finetune import ModulationMapping, finetuned_names
from tests.conftest import ROOT, read_metrics, read_results, run_dir, run_train
from tests.mapping.grid_cells import grid_cells, mapping_settings, resolved_config

av = pytest.importorskip("av")
from tests.test_deepfake import write_celebdf, write_ffpp  # noqa: E402  (needs PyAV)


class TinyResNet(nn.Module):
    """conv1/bn1 + layer4 + fc, named like torchvision's ResNets; ``weights_path`` loads a saved state dict."""

    def __init__(self, num_classes: int = 2, weights_path: Optional[str] = None) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, stride=2, bias=False), nn.BatchNorm2d(4)
        self.layer4 = nn.Sequential(nn.Conv2d(4, 6, 3, bias=False), nn.BatchNorm2d(6), nn.ReLU())
        self.fc = nn.Linear(6, num_classes)
        if weights_path:
            self.load_state_dict(torch.load(weights_path, weights_only=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer4(self.bn1(self.conv1(x)).relu()).mean((2, 3)))


def mapper_matrix(mapping: ModulationMapping) -> torch.Tensor:
    """W (n x d) column by column, through the projector alone."""
    eye = torch.eye(mapping.dims[0])
    return torch.stack([mapping.projector(e) for e in eye], 1)


# ---------------------------------------------------------------------- Eq. 25
@pytest.mark.parametrize("layers", ["all", "layer4+fc"])
@pytest.mark.parametrize("tie,projector", [(1, "dense"), (1, "hadamard"), (7, "hadamard"), (40, "auto"), (1000, "auto")])
def test_eq25_matches_an_independent_computation(layers: str, tie: int, projector: str) -> None:
    torch.manual_seed(0)
    net = TinyResNet()
    d, alpha, alpha_m = 8, 0.1, 0.01
    mapping = ModulationMapping(net, layers, tie, d, projector, alpha=alpha, mapper_alpha=alpha_m)
    z = torch.randn(d)
    out, _ = mapping(dict(net.named_parameters()), [z])

    names = [n for n, _ in net.named_parameters() if layers == "all" or n.split(".")[0] in ("layer4", "fc")]
    assert list(out) == names == finetuned_names(net, layers)
    flat_pre = torch.cat([p.detach().reshape(-1) for n, p in net.named_parameters() if n in names])
    size = len(flat_pre)
    n = -(-size // tie)
    w = mapper_matrix(mapping)
    assert w.shape == (n, d) and mapping.elements == n
    gram = w.T @ w if n >= d else w @ w.T  # orthonormal columns, or rows when there are fewer elements than d
    assert torch.allclose(gram, torch.eye(min(n, d)), atol=1e-5)
    o = w @ z + alpha_m * float(z @ z)
    c = (n / d) ** 0.5
    expected = flat_pre + alpha * c * torch.tensor([float(o[j // tie]) for j in range(size)])
    assert torch.allclose(torch.cat([t.reshape(-1) for t in out.values()]), expected, atol=1e-6)


@pytest.mark.parametrize("tie,projector", [(1, "hadamard"), (7, "hadamard"), (1000, "auto")])
def test_latent_gradient_is_the_chain_rule_through_the_tied_blocks(tie: int, projector: str) -> None:
    """dL/dz = alpha c (W + 2 alpha_m 1 z^T)^T g, g_i = sum of dL/dtheta_j over the L weights tied to element i."""
    torch.manual_seed(4)
    net = TinyResNet()
    alpha, alpha_m = 0.2, 0.03
    mapping = ModulationMapping(net, "all", tie, 8, projector, alpha=alpha, mapper_alpha=alpha_m)
    z = torch.randn(8, requires_grad=True)
    x, y = torch.randn(3, 3, 16, 16), torch.tensor([0, 1, 1])
    params = mapping(dict(net.named_parameters()), [z])[0]
    theta = [params[n] for n in mapping.names]
    loss = nn.functional.cross_entropy(functional_call(net, params, (x,)), y)
    grad_z, *grad_theta = torch.autograd.grad(loss, [z, *theta])
    flat = torch.cat([g.reshape(-1) for g in grad_theta])
    n = mapping.elements
    per_element = torch.nn.functional.pad(flat, (0, n * tie - len(flat))).view(n, tie).sum(1)
    c = (n / 8) ** 0.5
    expected = alpha * c * (mapper_matrix(mapping).T @ per_element + 2 * alpha_m * z.detach() * per_element.sum())
    assert torch.allclose(grad_z, expected, rtol=1e-4, atol=1e-7)


def test_smoothness_matches_the_autograd_jacobian() -> None:
    torch.manual_seed(1)
    net = TinyResNet()
    for tie in (1, 5, 1000):
        mapping = ModulationMapping(net, "all", tie, 8, "dense", alpha=0.3, mapper_alpha=0.05)
        z = torch.randn(8)
        base = dict(net.named_parameters())
        jac = jacrev(lambda v: torch.cat([t.reshape(-1) for t in mapping(base, [v])[0].values()]))(z)
        assert torch.isclose(mapping.smoothness(mapping(base, [z])[1]), jac.square().sum(), rtol=1e-4)


def test_only_the_latent_trains_and_frozen_weights_stay() -> None:
    torch.manual_seed(2)
    net = TinyResNet()
    pre = {k: v.clone() for k, v in net.state_dict().items()}
    module = MappingFineTuneModule(net, partial(ModulationMapping, layers="layer4+fc", tie=3, latent_dim=16),
                                   batchnorm="eval")
    trainable = [(n, p.numel()) for n, p in module.named_parameters() if p.requires_grad]
    assert trainable == [("mapping.latents.0", 16)] and module.parameter_counts()["trainable_params"] == 16
    optimizer = module.configure_optimizers()
    module.train()
    assert not any(m.training for m in module.net.modules() if isinstance(m, nn.BatchNorm2d))
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 1, 0])
    for _ in range(2):
        params, _ = module.generated()
        loss = nn.functional.cross_entropy(functional_call(module.net, params, (x,)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(torch.equal(v, pre[k]) for k, v in module.net.state_dict().items())  # weights and BN statistics
    assert module.mapping.latents[0].abs().sum() > 0
    generated = module.generated()[0]
    assert set(generated) == {"layer4.0.weight", "layer4.1.weight", "layer4.1.bias", "fc.weight", "fc.bias"}
    assert not torch.equal(generated["fc.weight"], pre["fc.weight"])


def test_batchnorm_train_mode_touches_only_the_layer_set_and_baseline_freezes_the_rest() -> None:
    torch.manual_seed(3)
    net = TinyResNet()
    pre = {k: v.clone() for k, v in net.state_dict().items()}
    module = FineTuneModule(net, layers="layer4+fc", batchnorm="train")
    module.train()
    assert not net.bn1.training and net.layer4[1].training
    assert {n for n, p in module.named_parameters() if p.requires_grad} == {
        "net.layer4.0.weight", "net.layer4.1.weight", "net.layer4.1.bias", "net.fc.weight", "net.fc.bias"}
    optimizer = module.configure_optimizers()
    nn.functional.cross_entropy(module(torch.randn(4, 3, 16, 16)), torch.tensor([0, 1, 1, 0])).backward()
    optimizer.step()
    after = net.state_dict()
    for key in ("conv1.weight", "bn1.weight", "bn1.running_mean"):
        assert torch.equal(after[key], pre[key]), key
    for key in ("layer4.0.weight", "fc.weight", "layer4.1.running_mean"):
        assert not torch.equal(after[key], pre[key]), key


def test_bad_inputs() -> None:
    net = TinyResNet()
    with pytest.raises(ValueError, match="layers must be one of all, layer4\\+fc"):
        ModulationMapping(net, "layer3")
    for tie in (0, -5, 2.5):
        with pytest.raises(ValueError, match="tie .* integer >= 1"):
            ModulationMapping(net, "all", tie)
    with pytest.raises(ValueError, match="batchnorm must be eval or train"):
        FineTuneModule(net, batchnorm="frozen")
    with pytest.raises(ValueError, match="no parameters under a fc or layer4 module"):
        ModulationMapping(nn.Sequential(nn.Linear(3, 3)), "layer4+fc")


# ---------------------------------------------------------------------- frames datamodule
@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("frames")
    torch.manual_seed(0)
    weights = base / "tiny.pth"
    torch.save(TinyResNet().state_dict(), weights)
    return {"celebdf": write_celebdf(base / "Celeb-DF-v2"), "ffpp": write_ffpp(base / "FaceForensics++"),
            "weights": weights}


def test_frames_datamodule_decodes_caches_and_splits_by_video(videos: dict[str, Path], tmp_path: Path) -> None:
    dm = DeepfakeFramesDataModule(str(videos["celebdf"]), "celebdf", frames_per_video=2, size=16,
                                  cache_dir=str(tmp_path), val_fraction=0.25, batch_size=4)
    dm.prepare_data()
    npy = tmp_path / "celebdf_train_k2_s16.npy"
    stamp = npy.stat().st_mtime_ns
    dm.prepare_data()  # cached: not rebuilt
    assert npy.stat().st_mtime_ns == stamp
    dm.setup()
    assert [len(dm.sets[s]) for s in ("train", "val", "test")] == [12, 4, 8]
    assert not set(dm.video_ids["train"]) & set(dm.video_ids["val"])
    assert dm.class_balance()["test"] == {"real": 4, "fake": 4, "fake_share": 0.5}
    test = dm.sets["test"]
    first = dm.video_ids["test"][0]
    assert torch.equal(test.frames[:2], decode_frames(videos["celebdf"] / first, 2, 16)[0])
    assert test.targets.tolist() == [int(v.startswith("Celeb-synthesis")) for v in dm.video_ids["test"] for _ in "kk"]
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (4, 3, 16, 16) and y.shape == (4,)
    ffpp = DeepfakeFramesDataModule(str(videos["ffpp"]), "ffpp", methods=("Deepfakes", "FaceSwap"),
                                    frames_per_video=1, size=8, cache_dir=str(tmp_path), batch_size=4)
    ffpp.prepare_data()
    ffpp.setup()
    assert ffpp.class_balance()["val"] == {"real": 2, "fake": 4, "fake_share": 0.6667}


def test_frames_datamodule_leaves_out_undecodable_videos(videos: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "celebdf"
    write_celebdf(root)
    (root / "Celeb-synthesis/id2_id3_0000.mp4").write_bytes(b"not a video")
    dm = DeepfakeFramesDataModule(str(root), "celebdf", frames_per_video=1, size=8, val_fraction=0.25)
    with pytest.warns(UserWarning, match="1 of 8 videos could not be decoded"):
        dm.prepare_data()
    dm.setup()
    assert len(dm.sets["train"]) + len(dm.sets["val"]) == 7
    with pytest.raises(DataError, match="Celeb-real"):
        DeepfakeFramesDataModule(str(tmp_path / "nothing"), "celebdf").prepare_data()
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match="cannot write the frame cache in .*file/sub.*cache_dir"):
        DeepfakeFramesDataModule(str(root), "celebdf", frames_per_video=1,
                                 cache_dir=str(tmp_path / "file" / "sub")).prepare_data()


# ---------------------------------------------------------------------- train.py end to end
def write_config(path: Path, videos: dict[str, Path], cache: Path, mapping: bool = True, **model: object) -> Path:
    init = {"net": {"class_path": "tests.mapping.test_finetune.TinyResNet",
                    "init_args": {"weights_path": str(videos["weights"])}}, "num_classes": 2, **model}
    if mapping:
        settings = {"layers": "all", "tie": 3, "latent_dim": 16, "alpha": 0.01}
        init = {"mapping": {"class_path": "nets.mapping.ModulationMapping", "init_args": settings}, "stab_samples": 2,
                **init}
    config = {"seed_everything": 0,
              "model": {"class_path": "lit_modules." + ("DeepfakeMappingFineTuneModule" if mapping
                                                        else "DeepfakeFineTuneModule"), "init_args": init},
              "data": {"class_path": "datamodules.DeepfakeFramesDataModule",
                       "init_args": {"root": str(videos["celebdf"]), "dataset": "celebdf", "frames_per_video": 2,
                                     "size": 16, "cache_dir": str(cache), "val_fraction": 0.25, "batch_size": 4}}}
    path.write_text(yaml.safe_dump(config))
    return path


def test_end_to_end_and_the_baseline(videos: dict[str, Path], tmp_path: Path) -> None:
    config = write_config(tmp_path / "ft.yaml", videos, tmp_path / "cache")
    assert run_train(["--config", str(config), "--trainer.max_epochs", "1", "--name", "ft"], tmp_path) == 0
    results = read_results(run_dir(tmp_path, "ft"))
    total = sum(p.numel() for p in TinyResNet().parameters())
    assert results["trainable_params"] == 16 and results["finetuned_params"] == total
    assert results["modulation_elements"] == -(-total // 3) and results["tie"] == 3
    assert {"test/acc", "test/auroc", "test/f1", "train/stab", "train/smooth", "train/align"} <= set(results)
    base = write_config(tmp_path / "base.yaml", videos, tmp_path / "cache", mapping=False, layers="layer4+fc")
    assert run_train(["--config", str(base), "--trainer.max_epochs", "1", "--name", "base"], tmp_path) == 0
    assert read_results(run_dir(tmp_path, "base"))["trainable_params"] == 6 * 4 * 9 + 12 + 6 * 2 + 2


def test_resume_reproduces_the_uninterrupted_run(videos: dict[str, Path], tmp_path: Path) -> None:
    config = write_config(tmp_path / "ft.yaml", videos, tmp_path / "cache", batchnorm="train")
    args = ["--config", str(config), "--trainer.max_epochs", "2", "--trainer.log_every_n_steps", "1",
            "--checkpoint_every_n_steps", "1"]
    assert run_train([*args, "--name", "full"], tmp_path) == 0
    assert run_train([*args, "--name", "cut", "--trainer.max_steps", "4"], tmp_path) == 0  # mid epoch 2 (3 steps each)
    assert run_train([*args, "--name", "cut", "--ckpt_path", "last"], tmp_path) == 0
    assert read_metrics(run_dir(tmp_path, "cut")) == read_metrics(run_dir(tmp_path, "full"))
    full, cut = read_results(run_dir(tmp_path, "full")), read_results(run_dir(tmp_path, "cut"))
    assert cut["test/acc"] == full["test/acc"] and cut["global_step"] == full["global_step"] == 6
    other = ["--config", str(config), "--model.init_args.mapping.init_args.tie", "2", "--name", "cut", "--ckpt_path",
             "last"]
    assert run_train(other, tmp_path) == 1  # another L: refused


def test_bad_config_values_are_one_line_errors(videos: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    config = write_config(tmp_path / "ft.yaml", videos, tmp_path / "cache")
    for flag, value, message in (("layers", "layer3", "layers must be one of"), ("tie", "0", "tie")):
        assert run_train(["--config", str(config), f"--model.init_args.mapping.init_args.{flag}", value], tmp_path) == 1
        assert message in capsys.readouterr().err
    missing = ["--config", "configs/mapping/resnet50_finetune_celebdf.yaml", "--model.init_args.net.init_args"
               ".weights_path", str(tmp_path / "absent.pth")]
    assert run_train(missing, tmp_path) == 1
    assert f"ResNet-50 weights not found at {tmp_path / 'absent.pth'}" in capsys.readouterr().err


def test_every_table_10_and_12_row_is_a_cell() -> None:
    table10, table12 = grid_cells("table10_finetune"), grid_cells("table12_resnet18_deepfake")
    assert len(table10) == 16 and len(table12) == 6
    for ds in ("celebdf", "ffpp"):
        for layers in ("all", "layer4fc"):
            tuned = resolved_config(table10[f"resnet50_{layers}_{ds}"])["model"]["init_args"]["layers"]
            assert tuned == {"all": "all", "layer4fc": "layer4+fc"}[layers]
            for tie in (1, 250, 25000):
                config = mapping_settings(resolved_config(table10[f"resnet50_finetune_{ds}_{layers}_L{tie}"]))
                assert (config["layers"], config["tie"], config["latent_dim"]) == (
                    tuned, tie, 2048 if layers == "all" else 1024)
        assert f"resnet18_{ds}" in table12
        for k in (15, 20):
            assert mapping_settings(resolved_config(table12[f"resnet18_lwt_{ds}_{k}k"]))["latent_dim"] == 1000 * k


# ---------------------------------------------------------------------- ResNet-50, L = 1 on all weights, on CPU
RSS_BOUND_MB = 2500  # a dense 23.5M x 2048 mapping alone would be 192 GB


@pytest.mark.slow
def test_resnet50_l1_all_weights_trains_a_step_within_memory(tmp_path: Path) -> None:
    script = ROOT / "benchmarks" / "mapping_finetune.py"
    weights = tmp_path / "resnet50_random.pth"
    out = subprocess.run([sys.executable, str(script), "--one", "mapping", "--layers", "all", "--tie", "1",
                          "--size", "64", "--batch", "2", "--steps", "1", "--weights", str(weights)],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["trainable_params"] == 2048 and row["finetuned_params"] == 23_512_130
    assert row["z_changed"] and row["frozen_unchanged"]
    assert row["added_mb"] < RSS_BOUND_MB, row
