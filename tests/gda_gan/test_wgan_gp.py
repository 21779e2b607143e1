"""WGAN-GP image GANs: width-knob nets, the critic loss, generator-step counting, resume parity, bad input,
evaluation callbacks (NND, sample and neighbour grids), every GAN config."""
import json
from pathlib import Path

import pytest
import torch

from callbacks.gda_gan import NND
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
    with pytest.raises(ValueError, match="pad"):
        WGANGPModule(DCGANGenerator32(k=4), DCGANCritic32(k=4), pad=-1)
    with pytest.raises(ValueError):
        DCGANGenerator32(k=0)
    with pytest.raises(ValueError, match="BatchNorm"):
        NND(torch.nn.Sequential(torch.nn.BatchNorm2d(3)))


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    write_cifar(tmp_path / "data", n_per_file=64)  # 320 train, 64 test images: 5 batches of 64 per epoch
    return tmp_path / "data"


def gan_args(root: Path, name: str, generator_steps: int) -> list[str]:
    return ["--config", "configs/gan/dcgan32_cifar10.yaml", "--data.root", str(root), "--name", name,
            "--model.init_args.generator.init_args.k", "4", "--model.init_args.critic.init_args.k", "4",
            "--trainer.max_steps", str(generator_steps), "--model.diag_every", "2", "--trainer.log_every_n_steps", "1",
            *TINY_FID]


def test_max_steps_counts_generator_steps(cifar_root: Path, tmp_path: Path) -> None:
    assert run_train(gan_args(cifar_root, "run", 3), tmp_path / "runs") == 0
    path = run_dir(tmp_path / "runs", "run")
    ckpt = torch.load(path / "checkpoints" / "last.ckpt", weights_only=False)
    assert (ckpt["wgan_gp"]["gen_iters"], ckpt["wgan_gp"]["critic_iters"], ckpt["global_step"]) == (3, 15, 3)
    res = read_results(path)
    for key in ("generator_params", "critic_params", "test/fid_tiny_train", "test/fid_tiny_test", "k_generator",
                "sec_per_generator_step", "test/nn_l2"):
        assert key in res
    assert res["generator_params"] == count(DCGANGenerator32(k=4))
    assert (res["generator_steps"], res["critic_steps"], res["global_step"]) == (3, 15, 3)
    assert (path / "figures" / "samples.png").stat().st_size > 0
    assert (path / "figures" / "nearest_neighbours.png").stat().st_size > 0
    rows = read_metrics(path)
    assert any(r.get("train/rel_move_generator") for r in rows) and any(r.get("train/grad_norm_critic") for r in rows)
    # n_critic 2: still 3 generator steps, now 6 critic steps
    assert run_train([*gan_args(cifar_root, "n2", 3), "--model.n_critic", "2"], tmp_path / "runs") == 0
    res = read_results(run_dir(tmp_path / "runs", "n2"))
    assert (res["generator_steps"], res["critic_steps"]) == (3, 6)


def test_testing_a_checkpoint_in_another_feature_space_names_it(cifar_root: Path, tmp_path: Path) -> None:
    assert run_train(gan_args(cifar_root, "run", 1), tmp_path / "runs") == 0
    path = run_dir(tmp_path / "runs", "run")
    other = ["--trainer.callbacks.init_args.feature_extractor",
             "{class_path: nets.gda_gan.TinyFeatures, init_args: {seed: 1}}"]
    assert run_train(["test", "--config", str(path / "config.yaml"), "--ckpt_path",
                      str(path / "checkpoints" / "last.ckpt"), *other], tmp_path / "runs") == 0
    res = json.loads((path / "eval_0" / "results_test.json").read_text())
    assert res["test/fid_tiny_test"] >= 0 and res["fid_tiny_num_samples"] == 64
    assert (read_results(path)["fid_tiny_feature_id"], res["fid_tiny_feature_id"]) == ("tiny-64-seed0", "tiny-64-seed1")


def test_resume_reproduces_losses_and_counters(cifar_root: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    # generator steps; log interval 7 is no multiple of n_critic 5, and part stops at the last batch of an epoch
    every = ["--checkpoint_every_n_steps", "2", "--trainer.log_every_n_steps", "7", "--model.diag_every", "3"]
    assert run_train([*gan_args(cifar_root, "full", 6), *every], runs) == 0
    assert run_train([*gan_args(cifar_root, "part", 3), *every], runs) == 0
    part = torch.load(run_dir(runs, "part") / "checkpoints" / "last.ckpt", weights_only=False)
    assert (part["wgan_gp"]["gen_iters"], part["global_step"]) == (3, 3)
    assert run_train([*gan_args(cifar_root, "part", 6), *every, "--ckpt_path", "last"], runs) == 0

    def keep(rows: list[dict[str, str]]) -> list[dict[str, str]]:  # every row; wall time differs by nature
        return [{k: v for k, v in r.items() if k.startswith(("train/", "lr-", "step")) and "sec_per" not in k}
                for r in rows]

    full, part = keep(read_metrics(run_dir(runs, "full"))), keep(read_metrics(run_dir(runs, "part")))
    assert len(full) >= 10 and any(r["train/grad_norm_critic"] for r in full) and full == part
    a = torch.load(run_dir(runs, "full") / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(run_dir(runs, "part") / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["wgan_gp"]["gen_iters"] == b["wgan_gp"]["gen_iters"] == a["global_step"] == b["global_step"] == 6
    assert a["wgan_gp"]["critic_iters"] == b["wgan_gp"]["critic_iters"] == 30
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0)
    ra, rb = read_results(run_dir(runs, "full")), read_results(run_dir(runs, "part"))
    assert ra["test/fid_tiny_test"] == rb["test/fid_tiny_test"] and ra["critic_steps"] == rb["critic_steps"] == 30


@pytest.mark.parametrize("budget", [[], ["--trainer.max_steps", "-1", "--trainer.max_epochs", "6"]],
                         ids=["max_steps", "max_epochs"])
def test_crash_after_an_epoch_resumes_from_that_epochs_last_checkpoint(cifar_root: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      budget: list[str]) -> None:
    # 5 batches (1 generator step) an epoch, no validation. max_steps: Lightning's own end-of-epoch last.ckpt
    # would resume with one batch too many, so it is written in the epoch's last batch; max_epochs: it is used
    runs, sparse = tmp_path / "runs", ["--checkpoint_every_n_steps", "100", *budget]
    assert run_train([*gan_args(cifar_root, "full", 6), *sparse], runs) == 0
    step = WGANGPModule.generator_step

    def crash_at_5(self: WGANGPModule, *args: object) -> None:
        if self.gen_iters == 4:
            raise RuntimeError("crash")
        step(self, *args)

    monkeypatch.setattr(WGANGPModule, "generator_step", crash_at_5)
    assert run_train([*gan_args(cifar_root, "crashed", 6), *sparse], runs) == 1
    monkeypatch.setattr(WGANGPModule, "generator_step", step)
    crashed = run_dir(runs, "crashed")
    assert torch.load(crashed / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
    assert run_train([*gan_args(cifar_root, "crashed", 6), *sparse, "--ckpt_path", "last"], runs) == 0
    a = torch.load(run_dir(runs, "full") / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(crashed / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["wgan_gp"]["critic_iters"] == b["wgan_gp"]["critic_iters"] == 30
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0)
    drop = ("train/sec_per_gen_iter",)
    assert read_metrics(crashed, drop) == read_metrics(run_dir(runs, "full"), drop)


def test_step_values_reach_the_log_only_when_written_and_the_curves_are_unchanged(
        cifar_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 7 is no multiple of n_critic 5: written rows between generator steps carry the values of the last one
    args = [*gan_args(cifar_root, "sparse", 6), "--trainer.log_every_n_steps", "7"]
    flushes: list[int] = []
    log_dict = WGANGPModule.log_dict
    monkeypatch.setattr(WGANGPModule, "log_dict", lambda self, values, *a, **k: (
        flushes.append(self.critic_iters) if self.trainer.training and not any("fid" in n for n in values) else None,
        log_dict(self, values, *a, **k))[1])  # (the FID callback logs its own values when it evaluates)
    assert run_train(args, tmp_path / "runs") == 0
    assert flushes[:5] == [5, 7, 10, 14, 15]  # every 7th batch and the last (5th) batch of each epoch
    monkeypatch.setattr(WGANGPModule, "logs_this_step", lambda self: True)
    assert run_train([*args, "--name", "every"], tmp_path / "runs") == 0

    def values(name: str) -> list[dict[str, str]]:  # wall time differs by nature
        return [{k: v for k, v in r.items() if "sec_per" not in k} for r in read_metrics(run_dir(tmp_path / "runs", name))]

    assert len(values("sparse")) > 4 and values("sparse") == values("every")


def test_lr_decay_follows_max_steps(cifar_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = [*gan_args(cifar_root, "decay", 2), "--model.lr_decay", "true"]
    assert run_train(args, tmp_path / "runs") == 0
    rows = read_metrics(run_dir(tmp_path / "runs", "decay"))
    assert float([r for r in rows if r.get("lr-Adam")][-1]["lr-Adam"]) < 1e-4
    assert run_train([*args, "--trainer.max_steps", "-1", "--trainer.max_epochs", "1"], tmp_path / "runs") == 1
    assert "lr_decay needs --trainer.max_steps" in capsys.readouterr().err


def test_mnist_mlp_runs(tmp_path: Path) -> None:
    write_mnist(tmp_path / "data", n_train=128, n_test=32)
    args = ["--config", "configs/gan/mlp_mnist.yaml", "--data.root", str(tmp_path / "data"),
            "--model.init_args.generator.init_args.k", "8", "--model.init_args.critic.init_args.k", "8",
            "--trainer.max_steps", "1", *TINY_FID]
    assert run_train(args, tmp_path / "runs") == 0
    assert read_results(run_dir(tmp_path / "runs", "mlp_mnist"))["test/fid_tiny_test"] >= 0


def test_nnd_of_identical_and_inverted_images() -> None:
    """The NND critic is fresh per call, trained from ``seed``; identical sets score 0, inverted images do not."""
    nnd = NND(DCGANCritic32(k=4), steps=20, seed=0)
    images = (torch.rand(300, 3, 32, 32) * 100).to(torch.uint8)  # dark; inverted: bright (uniform on 0-255 is its
    # own inversion in distribution, which no critic can tell apart)
    same = nnd.divergence(images, images, images[:250], images[:250], torch.device("cpu"))
    assert abs(same) < 1e-6
    inverted = 255 - images
    first = nnd.divergence(images, inverted, images[:250], inverted[:250], torch.device("cpu"))
    assert first > 0 and first == nnd.divergence(images, inverted, images[:250], inverted[:250], torch.device("cpu"))


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[2] / "configs" / "gan").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_gan_configs_name_real_classes(path: Path) -> None:
    """Every class_path imports and the paper's App. D settings hold in every image config."""
    import importlib

    import yaml

    config = yaml.safe_load(path.read_text())
    model = config["model"]["init_args"]
    for spec in [config["model"], config["data"], *config["trainer"].get("callbacks", [])]:
        module, _, name = spec["class_path"].rpartition(".")
        assert hasattr(importlib.import_module(module), name), spec["class_path"]
    if "generator" in model:
        assert model["generator"]["init_args"]["k"] == model["critic"]["init_args"]["k"]
        assert model["n_critic"] == 5 and model["gp_weight"] == 10.0 and model["lr"] == 1e-4
        assert config["data"]["init_args"]["batch_size"] == 64
        assert config["trainer"]["callbacks"][-1]["class_path"] == "callbacks.gda_gan.FID"  # flags reach it
    else:
        assert config["trainer"]["precision"] == "64-true"
