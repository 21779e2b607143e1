"""Saddle dynamics (Neuron Pursuit Figs. 1-4): saddle construction, KKT alignment two ways, Lemma 9 balance,
plateau detection, resume parity, and the sample-size and delta grids with their reports end to end at tiny sizes."""
import math
from pathlib import Path

import pytest
import torch
import yaml

import sweep
from lit_modules.neuron_pursuit import SaddleDynamicsModule
from nets.neuron_pursuit.saddle import SaddleNCF, detect_plateaus, kkt_alignment, neuron_stats
from scripts import np_report
from tests.conftest import full_and_resumed, read_metrics, read_results, run_dir, run_train

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
    full_dir, cut_dir = full_and_resumed(TINY, tmp_path, ["--trainer.max_epochs", "6"], ["--trainer.max_epochs", "3"])
    full, cut = read_results(full_dir), read_results(cut_dir)
    for key in ("saddle/kappa", "saddle/norm_loss", "saddle_final_kappa", "saddle_grad_norm", "train/loss"):
        assert full[key] == cut[key]
    assert read_metrics(full_dir) == read_metrics(cut_dir)
    assert (full_dir / "saddle_heatmaps.png").is_file()


def test_bad_saddle_config_exits_with_one_line(tmp_path, capsys) -> None:
    assert run_train([*TINY, "--model.width", "1"], tmp_path) == 1
    assert "model.width must be >= 2" in capsys.readouterr().err


def test_np_reporting_rule_c11() -> None:
    def r(test: float, train: float, its: int) -> dict:
        return {"test_rel_err": test, "train_rel_err": train, "np_iterations": its}

    assert np_report.np_report([r(0.001, 0, 9), r(0.004, 0, 3)])["np_iterations"] == 3
    assert np_report.np_report([r(0.2, 1e-4, 9), r(0.1, 1e-4, 3), r(0.05, 0.1, 2)])["test_rel_err"] == 0.1
    assert np_report.np_report([r(0.2, 0.3, 9), r(0.1, 0.2, 3)])["train_rel_err"] == 0.2
    assert np_report.gd_report([r(0.2, 0, 0), r(0.1, 0.5, 0)])["test_rel_err"] == 0.1


def run_grid(tmp_path: Path, grid: dict, seeds: list[str], extra: list[str]) -> Path:
    path, out = tmp_path / "grid.yaml", tmp_path / "sweep"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    assert sweep.main([str(path), "--seeds", *seeds, "--out", str(out), "--", *extra]) == 0
    return out


def test_sample_size_grid_and_report_end_to_end(tmp_path: Path) -> None:
    """A tiny Figs. 7-9 grid through sweep.py (2 NP step sizes, 1 GD, 2 sample sizes, 2 seeds), then the report:
    one reported run per (method, n, seed), C.1.1 for NP."""
    budget = ["--model.gd_steps_per_batch", "10", "--data.n_test", "50", "--data.seed", "{seed}"]
    np_budget = [*budget, "--trainer.callbacks.init_args.epochs_per_stage", "1", "--trainer.max_epochs", "2",
                 "--trainer.callbacks.init_args.max_iterations", "2", "--trainer.callbacks.init_args.pga_steps", "20"]
    grid = {"name": "tiny_np_samples", "cells": {
        "np_lr0.005": ["--config", "configs/neuron_pursuit/sparse.yaml", "--data.task", "g1", "--model.lr", "0.005",
                       *np_budget],
        "np_lr0.002": ["--config", "configs/neuron_pursuit/sparse.yaml", "--data.task", "g1", "--model.lr", "0.002",
                       *np_budget],
        "gd_lr0.05": ["--config", "configs/neuron_pursuit/gd_baseline.yaml", "--data.task", "g1", "--model.lr", "0.05",
                      *budget, "--trainer.max_epochs", "1"]},
        "axes": {"data.n_train": [20, 40]}, "metrics": ["test/rel_err", "np_iterations"]}
    out = run_grid(tmp_path, grid, ["0", "1"], [])
    rows = np_report.main(["samples", str(out), "--out", str(tmp_path / "report")])
    assert [(r["method"], r["n"], r["seeds"]) for r in rows] == [("gd", 20, 2), ("gd", 40, 2), ("np", 20, 2),
                                                                  ("np", 40, 2)]
    assert all(r["iterations"][1] == 2 for r in rows if r["method"] == "np")
    assert (tmp_path / "report.png").is_file() and "| NP | 40 | 2 |" in (tmp_path / "report.md").read_text()


def test_delta_grid_and_report_end_to_end(tmp_path: Path) -> None:
    cells = {"x2": [*TINY, "--trainer.callbacks.init_args.stop_after_escape", "true",
                    "--trainer.callbacks.init_args.plots", "false", "--trainer.max_epochs", "60"]}
    out = run_grid(tmp_path, {"name": "tiny_delta", "cells": cells, "axes": {"model.delta": [0.2, 0.3]},
                              "metrics": ["saddle_escape_step"]}, ["0"], [])
    result = np_report.main(["delta", str(out)])
    steps = result["medians"]
    assert result["deltas"] == [0.2, 0.3] and steps[0] > steps[1]  # a smaller delta escapes later
    assert math.isfinite(result["slope"]) and (out / "np_report.png").is_file()
