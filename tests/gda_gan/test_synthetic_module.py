"""SyntheticGDAModule through train.py: explicit vs autograd paths, simultaneous updates, results, resume."""
from pathlib import Path

import torch

from datamodules import GaussianMeanDataModule
from tests.conftest import read_metrics, read_results, run_dir, run_train
from nets.gda_gan import theory

CONFIG = "configs/gan/synthetic_gaussian.yaml"
SMALL = ["--config", CONFIG, "--model.k", "16", "--model.n_latent", "20", "--data.n", "20",
         "--data.steps_per_epoch", "5", "--trainer.log_every_n_steps", "1", "--model.diag_every", "2"]


def final_state(root: Path, name: str) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir(root, name) / "checkpoints" / "last.ckpt", weights_only=False)
    return ckpt["state_dict"]


def test_lightning_steps_equal_explicit_simultaneous_gda(tmp_path: Path) -> None:
    steps = 4
    for update in ("autograd", "explicit"):
        assert run_train([*SMALL, "--model.update", update, "--trainer.max_steps", str(steps),
                          "--name", update], tmp_path) == 0
    auto, expl = final_state(tmp_path, "autograd"), final_state(tmp_path, "explicit")
    torch.testing.assert_close(auto["W"], expl["W"], rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(auto["d"], expl["d"], rtol=1e-13, atol=1e-13)
    # replay from the saved initial state with the closed-form simultaneous update
    V, Z, W = auto["V"], auto["Z"], auto["W0"].clone()
    data = GaussianMeanDataModule(dim=5, n=20, mean_scale=3.0, seed=0)
    data.setup()
    x_bar = data.data.mean(0)
    eta = read_results(run_dir(tmp_path, "autograd"))["eta"]
    d, W_alt, d_alt = torch.zeros(5, dtype=torch.float64), W.clone(), torch.zeros(5, dtype=torch.float64)
    for _ in range(steps):
        W, d = theory.gda_step(W, d, V, Z, x_bar, eta, 0.5)
        d_alt = (1 - 0.5) * d_alt + 0.5 * (x_bar - theory.generator_mean(W_alt, V, Z))  # alternating: d first
        W_alt = W_alt - eta * theory.grad_W(W_alt, V, Z, d_alt)
    torch.testing.assert_close(auto["W"], W, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(auto["d"], d, rtol=1e-12, atol=1e-13)
    assert (auto["W"] - W_alt).abs().max() > 1e-8


def test_results_json_and_optimal_d(tmp_path: Path) -> None:
    assert run_train([*SMALL, "--model.solver", "optimal_d", "--model.k", "256", "--trainer.max_steps", "300",
                      "--name", "od", "--trainer.log_every_n_steps", "20", "--model.diag_every", "100"],
                     tmp_path) == 0
    res = read_results(run_dir(tmp_path, "od"))
    assert res["train/residual_ratio"] < 1e-3
    first = next(float(r["train/residual"]) for r in read_metrics(run_dir(tmp_path, "od")) if r["train/residual"])
    assert 0 < res["train/residual"] < 1e-3 * first
    for key in ("eta", "beta_hat", "alpha_hat", "rate_predicted", "train/rate_empirical", "train/jacobian_drift"):
        assert key in res
    assert res["train/sigma_min_J"] > 0 and res["iterations"] == 300


def test_bad_config_fails_cleanly(tmp_path: Path, capsys) -> None:
    assert run_train([*SMALL, "--model.data_dim", "3", "--trainer.max_steps", "2", "--name", "bad"], tmp_path) == 1
    assert "data_dim" in capsys.readouterr().err
    assert run_train([*SMALL, "--model.mu", "1.5", "--name", "bad2"], tmp_path) == 1


def test_resume_reproduces_trajectory(tmp_path: Path) -> None:
    common = [*SMALL, "--checkpoint_every_n_steps", "3"]
    assert run_train([*common, "--trainer.max_steps", "12", "--name", "full"], tmp_path) == 0
    assert run_train([*common, "--trainer.max_steps", "7", "--name", "part"], tmp_path) == 0
    assert run_train([*common, "--trainer.max_steps", "12", "--name", "part", "--ckpt_path", "last"], tmp_path) == 0
    keep = lambda rows: [{k: v for k, v in r.items() if k.startswith("train/")} for r in rows]  # noqa: E731
    full, part = keep(read_metrics(run_dir(tmp_path, "full"))), keep(read_metrics(run_dir(tmp_path, "part")))
    assert len(full) >= 12 and full == part
    a, b = final_state(tmp_path, "full"), final_state(tmp_path, "part")
    torch.testing.assert_close(a["W"], b["W"], rtol=0, atol=0)
