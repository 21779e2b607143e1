"""WGAN-GP image GANs: width-knob nets, the critic loss, counters, resume parity, bad input."""
from pathlib import Path

import pytest
import torch

from tests.conftest import read_metrics, read_results, run_dir, run_train
from tests.data_fixtures import write_cifar, write_mnist
from lit_modules.gda_gan import WGANGPModule, critic_loss
from nets.gda_gan import (DCGANCritic32, DCGANCritic64, DCGANGenerator32, DCGANGenerator64, MLPCritic, MLPGenerator,
                  ResNetCritic32, ResNetCritic64, ResNetGenerator32, ResNetGenerator64)

TINY_FID = ["--trainer.callbacks.init_args.feature_extractor", "nets.gda_gan.TinyFeatures",
            "--trainer.callbacks.init_args.num_samples", "64", "--trainer.callbacks.init_args.num_real_train", "64",
            "--trainer.callbacks.init_args.num_real_test", "32", "--trainer.callbacks.init_args.batch_size", "32"]


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("gen, crit, size, channels", [
    (DCGANGenerator32, DCGANCritic32, 32, 3), (DCGANGenerator64, DCGANCritic64, 64, 3),
    (ResNetGenerator32, ResNetCritic32, 32, 3), (ResNetGenerator64, ResNetCritic64, 64, 3)])
def test_conv_nets_shapes_and_width_scaling(gen, crit, size: int, channels: int) -> None:
    g, d = gen(k=4), crit(k=4)
    x = g(torch.randn(2, 128))
    assert x.shape == (2, channels, size, size) and x.abs().max() <= 1
    assert d(x).shape == (2,)
    # conv weights grow ~ k^2, the latent/output layers ~ k: doubling k multiplies the count by 2..4
    make = lambda net, k: net(k=k, latent_dim=7) if "Generator" in net.__name__ else net(k=k)  # noqa: E731

    def convs(m: torch.nn.Module) -> int:  # inner conv weights; the latent / image / score layers grow ~k
        return sum(c.weight.numel() for c in m.modules() if isinstance(c, torch.nn.modules.conv._ConvNd)
                   and c.in_channels not in (3, 7) and c.out_channels not in (1, 3))

    for net in (gen, crit):
        assert 2.0 < count(make(net, 32)) / count(make(net, 16)) <= 4.0
        assert convs(make(net, 32)) == 4 * convs(make(net, 16))


def test_mlp_nets() -> None:
    g, d = MLPGenerator(k=16), MLPCritic(k=16)
    x = g(torch.randn(3, 128))
    assert x.shape == (3, 1, 28, 28) and d(x).shape == (3,)


def test_critic_loss_matches_separate_passes() -> None:
    torch.manual_seed(0)
    critic = DCGANCritic32(k=4)
    real, fake = torch.rand(5, 3, 32, 32) * 2 - 1, torch.rand(5, 3, 32, 32) * 2 - 1
    torch.manual_seed(1)
    loss, w, gp = critic_loss(critic, real, fake, 10.0)
    torch.manual_seed(1)
    eps = torch.rand(5, 1, 1, 1)
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
    per_sample = [torch.autograd.grad(critic(mixed[i:i + 1]).sum(), mixed)[0][i].norm() for i in range(5)]
    gp_ref = torch.stack([(g - 1) ** 2 for g in per_sample]).mean()
    w_ref = critic(real).mean() - critic(fake).mean()
    torch.testing.assert_close(gp, gp_ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w, w_ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss.detach(), -w_ref.detach() + 10 * gp_ref.detach(), rtol=1e-5, atol=1e-5)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="BatchNorm"):
        WGANGPModule(DCGANGenerator32(k=4), torch.nn.Sequential(torch.nn.BatchNorm2d(3)))
    with pytest.raises(ValueError, match="count"):
        WGANGPModule(DCGANGenerator32(k=4), DCGANCritic32(k=4), count="epochs")
    with pytest.raises(ValueError):
        DCGANGenerator32(k=0)


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    write_cifar(tmp_path / "data", n_per_file=64)  # 320 train, 64 test images: 5 batches of 64 per epoch
    return tmp_path / "data"


def gan_args(root: Path, name: str, iterations: int) -> list[str]:
    return ["--config", "configs/gan/dcgan32_cifar10_k8.yaml", "--data.root", str(root), "--name", name,
            "--model.init_args.generator.init_args.k", "4", "--model.init_args.critic.init_args.k", "4",
            "--model.iterations", str(iterations), "--model.diag_every", "2", "--trainer.log_every_n_steps", "1",
            *TINY_FID]


def test_counters_and_results(cifar_root: Path, tmp_path: Path) -> None:
    assert run_train(gan_args(cifar_root, "run", 3), tmp_path / "runs") == 0
    path = run_dir(tmp_path / "runs", "run")
    state = torch.load(path / "checkpoints" / "last.ckpt", weights_only=False)["wgan_gp"]
    assert (state["gen_iters"], state["critic_iters"]) == (3, 15)
    res = read_results(path)
    for key in ("generator_params", "critic_params", "test/fid_train", "test/fid_test", "k_generator"):
        assert key in res
    assert res["generator_params"] == count(DCGANGenerator32(k=4))
    assert (res["gen_iters"], res["critic_iters"]) == (3, 15)
    rows = read_metrics(path)
    assert any(r.get("train/rel_move_generator") for r in rows) and any(r.get("train/grad_norm_critic") for r in rows)


def test_resume_reproduces_losses_and_counters(cifar_root: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    every = ["--checkpoint_every_n_steps", "4"]
    assert run_train([*gan_args(cifar_root, "full", 4), *every], runs) == 0
    assert run_train([*gan_args(cifar_root, "part", 2), *every], runs) == 0
    assert run_train([*gan_args(cifar_root, "part", 4), *every, "--ckpt_path", "last"], runs) == 0
    def keep(rows: list[dict[str, str]]) -> list[dict[str, str]]:  # our metrics; wall time differs by nature
        ours = [{k: v for k, v in r.items() if k.startswith("train/") and "sec_per" not in k} for r in rows]
        return [r for r in ours if any(r.values())]

    full, part = keep(read_metrics(run_dir(runs, "full"))), keep(read_metrics(run_dir(runs, "part")))
    assert len(full) > 10 and full == part
    a = torch.load(run_dir(runs, "full") / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(run_dir(runs, "part") / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["wgan_gp"]["gen_iters"] == b["wgan_gp"]["gen_iters"] == 4
    assert a["wgan_gp"]["critic_iters"] == b["wgan_gp"]["critic_iters"] == 20
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0)


def test_mnist_mlp_runs(tmp_path: Path) -> None:
    write_mnist(tmp_path / "data", n_train=128, n_test=32)
    args = ["--config", "configs/gan/mlp_mnist_k64.yaml", "--data.root", str(tmp_path / "data"),
            "--model.init_args.generator.init_args.k", "8", "--model.init_args.critic.init_args.k", "8",
            "--model.iterations", "1", *TINY_FID]
    assert run_train(args, tmp_path / "runs") == 0
    assert read_results(run_dir(tmp_path / "runs", "mlp_mnist_k64"))["test/fid_test"] >= 0


def test_nearest_neighbour_grid_and_nnd_scripts(cifar_root: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "scripts"))
    import gan_nearest_neighbours
    import gan_nnd
    from gan_run import load_run, training_images

    assert run_train(gan_args(cifar_root, "nn", 1), tmp_path / "runs") == 0
    run = run_dir(tmp_path / "runs", "nn")
    out = tmp_path / "grid.png"
    monkeypatch.setattr(sys, "argv", ["x", str(run), "--out", str(out), "--samples", "3", "--neighbours", "2"])
    gan_nearest_neighbours.main()
    assert out.stat().st_size > 0
    generator, critic, data = load_run(run)
    train = training_images(data) * 2 - 1
    assert torch.equal(generator(torch.zeros(1, 128)), generator(torch.zeros(1, 128)))  # eval mode: deterministic
    value = gan_nnd.nnd(lambda: DCGANCritic32(k=4), lambda n: train[:n], train, train[:250], steps=20, seed=0)
    assert abs(value) < 1e-6  # the same images on both sides: a trained critic still scores them equally
    fake = gan_nnd.nnd(lambda: DCGANCritic32(k=4), lambda n: -train[:n], train, train[:250], steps=20, seed=0)
    assert fake > 0  # inverted images score lower once the critic has trained a little


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[2] / "configs" / "gan").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_gan_configs_name_real_classes(path: Path) -> None:
    """Every class_path imports, the nets build, and the k in the file name is the width in the file."""
    import importlib
    import re

    import yaml

    config = yaml.safe_load(path.read_text())
    model = config["model"]["init_args"]
    for spec in [config["model"], config["data"], *config["trainer"].get("callbacks", [])]:
        module, _, name = spec["class_path"].rpartition(".")
        assert hasattr(importlib.import_module(module), name), spec["class_path"]
    k = int(re.search(r"_k(\d+)$", path.stem).group(1))
    if "generator" in model:
        widths = {model["generator"]["init_args"]["k"], model["critic"]["init_args"]["k"]}
        assert k in widths and (len(widths) == 1 or "single" in path.stem)
        assert model["n_critic"] == 5 and model["gp_weight"] == 10.0 and model["lr"] == 1e-4
        assert config["data"]["init_args"]["batch_size"] == 64
    else:
        assert model["k"] == k and config["trainer"]["precision"] == "64-true"


def test_lr_decay_and_generator_batch(cifar_root: Path, tmp_path: Path) -> None:
    args = [*gan_args(cifar_root, "decay", 4), "--model.lr_decay", "true", "--model.gen_batch_multiplier", "2"]
    assert run_train(args, tmp_path / "runs") == 0
    ckpt = torch.load(run_dir(tmp_path / "runs", "decay") / "checkpoints" / "last.ckpt", weights_only=False)
    lrs = [g["lr"] for state in ckpt["optimizer_states"] for g in state["param_groups"]]
    assert lrs == [0.0, 0.0]  # 1e-4 * (1 - 4/4)
