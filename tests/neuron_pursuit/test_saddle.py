"""Saddle dynamics (Neuron Pursuit Figs. 1-4): saddle construction, KKT alignment two ways, Lemma 9 balance,
plateau detection, resume parity, and the two sweep scripts end to end at tiny sizes."""
import math

import pytest
import torch

from nets.neuron_pursuit.saddle import SaddleNCF, detect_plateaus, kkt_alignment, neuron_stats
from lit_modules.neuron_pursuit import SaddleDynamicsModule
from scripts import np_saddle_delta_sweep, np_sample_sweep
from tests.conftest import read_metrics, read_results, run_dir, run_train

D, N = 5, 60


def teacher_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    return x, (torch.relu(2 * x[:, :1]) - x[:, 1:2]).abs()


def saddle(alpha: float, power: int, delta: float = 0.05, lr: float = 0.01) -> tuple[SaddleDynamicsModule, ...]:
    x, y = teacher_data()
    module = SaddleDynamicsModule(in_features=D, width=4, alpha=alpha, power=power, lr=lr, delta=delta,
                                  pre_steps=500, pre_pga_steps=300, pre_restarts=4)
    module.build_saddle(x, y)
    return module, x, y


def z_masks(module: SaddleDynamicsModule) -> list[torch.Tensor]:
    sizes = [w.numel() for w in module.net.weights]
    return [m.view_as(w) for m, w in zip((~module.n_mask).split(sizes), module.net.weights)]


@pytest.mark.parametrize("alpha,power", [(1.0, 2), (0.5, 1)])
def test_saddle_is_stationary_and_sparse(alpha: float, power: int) -> None:
    module, x, y = saddle(alpha, power)
    assert module.saddle_info["saddle_grad_norm"] < 1e-8  # the one-neuron net is stationary
    start = module.net.flat()
    module.net.set_flat(module.w_bar)
    _, grads = module.net.mse_and_grads(x, y)
    assert torch.cat([g.flatten() for g in grads]).norm() < 1e-8  # and so is its zero-block embedding
    assert module.w_bar[~module.n_mask].abs().max() == 0
    delta = module.hparams.delta
    assert torch.allclose((start - module.w_bar)[module.n_mask].norm(), torch.tensor(delta, dtype=torch.float64))
    assert torch.allclose(start[~module.n_mask].norm(), torch.tensor(delta, dtype=torch.float64))


def test_kappa_closed_form_matches_autograd_of_the_h1_expansion() -> None:
    """N(w_z) = mean ybar . H_1 with H_1 = [H(w_bar_n, s w_z) - H(w_bar_n, 0)] / s^2 (leaky ReLU, C blocks zero:
    then the expansion is exact up to rounding), differentiated by autograd."""
    module, x, y = saddle(0.5, 1)
    weights = [w.detach().clone() for w in module.net.weights]
    weights[1][1:, 1:] = 0  # C_2
    masks = z_masks(module)
    bar = [b.view_as(w) for b, w in zip(module.w_bar.split([w.numel() for w in weights]), weights)]

    def forward(ws: list[torch.Tensor]) -> torch.Tensor:
        out = x
        for w in ws[:-1]:
            out = module.net.sigma(out @ w.T)
        return out @ ws[-1].T

    h_bar = forward(bar)

    def autograd_value_and_grad(ws: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        s = 1e-3
        ws = [w.detach().requires_grad_(True) for w in ws]
        moved = [torch.where(m, s * w, b) for w, m, b in zip(ws, masks, bar)]
        value = ((y - h_bar) * (forward(moved) - h_bar)).mean() / s ** 2
        return value.detach(), list(torch.autograd.grad(value, ws))

    kappa, value = kkt_alignment(SaddleNCF(module.restricted_net(), x, y).value_and_grad, weights, masks)
    kappa_ad, value_ad = kkt_alignment(autograd_value_and_grad, weights, masks)
    assert value == pytest.approx(value_ad, rel=1e-5, abs=1e-9)
    assert kappa == pytest.approx(kappa_ad, abs=1e-5)
    # Euler: grad N . w~_z = (p + 1) N(w~_z), so kappa is (p + 1) N / ||grad N||
    assert abs(kappa) < 1


def test_kappa_and_balance_go_to_one_before_escape_x2() -> None:
    """Thm 7 / Lemma 9 on a tiny sigma = x^2 saddle: before the loss drops, w_z aligns with a KKT point of the
    saddle NCF (kappa -> 1), the dominant G_z neuron is balanced (||in||^2 = 2 ||out||^2) and C_2 vanishes."""
    module, x, y = saddle(1.0, 2)
    ncf, masks = SaddleNCF(module.restricted_net(), x, y), z_masks(module)
    kappa_0, _ = kkt_alignment(ncf.value_and_grad, [w.detach() for w in module.net.weights], masks)
    w_z0 = float(module.net.flat()[~module.n_mask].norm())
    for _ in range(4000):
        _, grads = module.net.mse_and_grads(x, y)
        with torch.no_grad():
            torch._foreach_add_(list(module.net.weights), grads, alpha=-module.hparams.lr)
        if float(module.net.flat()[~module.n_mask].norm()) > 6 * w_z0:
            break
    weights = [w.detach() for w in module.net.weights]
    kappa, value = kkt_alignment(ncf.value_and_grad, weights, masks)
    stats = neuron_stats(weights, power=2)
    top = stats["share"].flatten().argmax()
    assert kappa_0 < 0.6 and kappa > 0.98 and value > 0
    assert stats["ratio"].flatten()[top] == pytest.approx(1.0, abs=0.02)
    assert float(weights[1][1:, 1:].norm()) / float(module.net.flat()[~module.n_mask].norm()) < 0.1


def test_plateau_detector_on_a_synthetic_two_plateau_curve() -> None:
    t = torch.arange(300, dtype=torch.float64)
    loss = (1 - 0.6 * torch.sigmoid((t - 100) / 4) - 0.3 * torch.sigmoid((t - 220) / 4)).tolist()
    i_1, i_2 = detect_plateaus(loss, window=10, tol=0.01)
    assert 70 <= i_1 < 100 and 110 < i_2 < 150  # the plateau between the two drops
    assert detect_plateaus([1.0] * 50, window=10, tol=0.01) == (None, None)
    assert detect_plateaus([1.0] * 20 + [0.5] * 5, window=10, tol=0.01)[1] is None  # no plateau after the drop
    relax = [1.2 - 0.2 * min(k, 10) / 10 for k in range(40)] + loss  # a perturbed start relaxing to the saddle
    assert detect_plateaus(relax, window=10, tol=0.01)[0] < 10
    assert detect_plateaus(relax, window=10, tol=0.01, level=1.0) == (i_1 + 40, i_2 + 40)


TINY = ["--config", "configs/neuron_pursuit/saddle_x2.yaml", "--model.in_features", "6", "--model.width", "3",
        "--model.gd_steps_per_batch", "20", "--model.pre_steps", "200", "--model.pre_pga_steps", "100",
        "--model.delta", "0.05", "--data.dim", "6", "--data.n_train", "40", "--data.n_test", "100",
        "--trainer.callbacks.init_args.window", "2"]


def test_saddle_run_resumes_to_the_same_trajectory(tmp_path) -> None:
    assert run_train([*TINY, "--trainer.max_epochs", "6", "--name", "full"], tmp_path) == 0
    assert run_train([*TINY, "--trainer.max_epochs", "3", "--name", "cut"], tmp_path) == 0
    assert run_train([*TINY, "--trainer.max_epochs", "6", "--name", "cut", "--ckpt_path", "last"], tmp_path) == 0
    full, cut = read_results(run_dir(tmp_path, "full")), read_results(run_dir(tmp_path, "cut"))
    for key in ("saddle/kappa", "saddle/norm_loss", "saddle_final_kappa", "saddle_grad_norm", "train/loss"):
        assert full[key] == cut[key]
    assert read_metrics(run_dir(tmp_path, "full")) == read_metrics(run_dir(tmp_path, "cut"))
    assert (run_dir(tmp_path, "full") / "saddle_heatmaps.png").is_file()


def test_bad_saddle_config_exits_with_one_line(tmp_path, capsys) -> None:
    assert run_train([*TINY, "--model.width", "1"], tmp_path) == 1
    assert "model.width must be >= 2" in capsys.readouterr().err


def test_np_reporting_rule_c11() -> None:
    def r(test: float, train: float, its: int) -> dict:
        return {"test_rel_err": test, "train_rel_err": train, "np_iterations": its}

    assert np_sample_sweep.np_report([r(0.001, 0, 9), r(0.004, 0, 3)])["np_iterations"] == 3
    assert np_sample_sweep.np_report([r(0.2, 1e-4, 9), r(0.1, 1e-4, 3), r(0.05, 0.1, 2)])["test_rel_err"] == 0.1
    assert np_sample_sweep.np_report([r(0.2, 0.3, 9), r(0.1, 0.2, 3)])["train_rel_err"] == 0.2
    assert np_sample_sweep.gd_report([r(0.2, 0, 0), r(0.1, 0.5, 0)])["test_rel_err"] == 0.1


def test_sample_sweep_script_end_to_end(tmp_path) -> None:
    result = np_sample_sweep.main(
        ["--task", "g1", "--n", "20", "--seeds", "0", "--np_epochs_per_stage", "1", "--max_iterations", "2",
         "--gd_epochs", "1", "--steps_per_epoch", "10", "--pga_steps", "20", "--n_test", "50",
         "--np_lrs", "0.005", "0.002", "--gd_lrs", "0.05", "--root", str(tmp_path / "runs"),
         "--out", str(tmp_path / "sweep")])
    assert len(result["runs"]) == 3 and len(result["reported"]) == 2
    assert {r["method"] for r in result["summary"]} == {"np", "gd"}
    assert (tmp_path / "sweep.png").is_file() and (tmp_path / "sweep.json").is_file()


def test_delta_sweep_script_end_to_end(tmp_path) -> None:
    result = np_saddle_delta_sweep.main(
        ["--config", "saddle_x2", "--deltas", "0.2", "0.3", "--max_epochs", "60", "--root", str(tmp_path / "runs"),
         "--out", str(tmp_path / "delta"), "--extra", *TINY[2:]])
    steps = [r["escape_step"] for r in result["rows"]]
    assert all(s is not None for s in steps) and steps[0] > steps[1]  # a smaller delta escapes later
    assert result["rows"][0]["scaled"] == pytest.approx(steps[0] * 0.2)
    assert math.isfinite(result["fit"]["slope"]) and (tmp_path / "delta.png").is_file()
