"""Neuron Pursuit: growable net, growth NCF math against independent computations, NP = OMP, resume parity."""
import math
from types import SimpleNamespace

import pytest
import torch

from nets.neuron_pursuit.ncf import (first_iteration_objective, growth_objective, growth_problems, pga,
                                     single_neuron_dim, split_single_neuron)
from callbacks.neuron_pursuit import NeuronPursuit, SaddleMonitor
from datamodules.synthetic import ModularAdditionDataModule, SparseFunctionDataModule
from lit_modules.neuron_pursuit import NeuronPursuitModule
from nets.neuron_pursuit.growable import GrowableNet
from tests.conftest import full_and_resumed, read_metrics, read_results, run_dir, run_train

ACTS = [(0.0, 1), (0.2, 1), (1.0, 2), (0.3, 2)]  # (alpha, power): ReLU, leaky ReLU, x^2, leaky squared


def random_net(alpha: float, power: int, widths=(3, 2), d: int = 5, n_out: int = 1, seed: int = 0) -> GrowableNet:
    torch.manual_seed(seed)
    net = GrowableNet(d, n_out, len(widths) + 1, alpha, power, widths)
    with torch.no_grad():
        for w in net.weights:
            w.normal_(0, 0.7)
    return net


@pytest.mark.parametrize("alpha,power", ACTS)
def test_manual_gradients_match_autograd(alpha: float, power: int) -> None:
    net = random_net(alpha, power, n_out=2)
    x, y = torch.randn(40, 5, dtype=torch.float64), torch.randn(40, 2, dtype=torch.float64)
    loss, grads = net.mse_and_grads(x, y)
    ref = (net(x) - y).square().mean()
    ref_grads = torch.autograd.grad(ref, list(net.weights))
    assert torch.allclose(loss, ref.detach())
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, atol=1e-12)


@pytest.mark.parametrize("alpha,power,depth", [(0.0, 1, 3), (0.5, 1, 4), (1.0, 2, 2)])
def test_first_iteration_ncf_is_output_correlation_of_the_one_neuron_net(alpha: float, power: int, depth: int) -> None:
    net = GrowableNet(5, 3, depth, alpha, power)
    x, y = torch.randn(40, 5, dtype=torch.float64), torch.randn(40, 3, dtype=torch.float64)
    u = torch.randn(4, single_neuron_dim(net), dtype=torch.float64)
    values = first_iteration_objective(net, x, y)(u)
    for h in range(4):
        with torch.no_grad():
            for w, part in zip(net.weights, split_single_neuron(net, u[h:h + 1])):
                w.copy_(part[0])
        assert torch.allclose(values[h], (y * net(x)).sum() / len(x), atol=1e-12)


def test_add_neuron_appends_row_and_column_and_balance_keeps_function() -> None:
    net = random_net(0.2, 1)
    x = torch.randn(30, 5, dtype=torch.float64)
    before = net(x).detach()
    net.add_neuron(1, torch.randn(5), torch.zeros(2))
    assert net.widths == [4, 2] and net.weights[0].shape == (4, 5) and net.weights[1].shape == (2, 4)
    assert torch.allclose(net(x), before)  # zero outgoing weights: same function
    for alpha, power in ((0.2, 1), (1.0, 2)):
        net = random_net(alpha, power)
        before = net(x).detach()
        net.balance(sweeps=200)
        assert torch.allclose(net(x), before, atol=1e-10)
        for ratio in net.balance_ratios():
            assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-6)


@pytest.mark.parametrize("alpha,power,tol", [(0.2, 1, 1e-9), (1.0, 2, 1e-4)])
def test_growth_ncf_matches_finite_difference(alpha: float, power: int, tol: float) -> None:
    """N_l(a, b) = (1/N) sum_i ybar_i [H(with neuron delta a, delta b) - H](x_i) / delta^(p+1) as delta -> 0."""
    net = random_net(alpha, power)
    x, y = torch.randn(50, 5, dtype=torch.float64), torch.randn(50, 1, dtype=torch.float64)
    residual = (y - net(x)).detach()
    for l, (g, c) in enumerate(growth_problems(net, x, y), 1):
        k_in, k_out = g.shape[1], c.shape[1]
        u = torch.randn(1, k_in + k_out, dtype=torch.float64)
        value = growth_objective(g, c, alpha, power)(u)[0]
        delta = 1e-3
        grown = random_net(alpha, power)
        grown.add_neuron(l, delta * u[0, :k_in], delta * u[0, k_in:])
        fd = (residual * (grown(x) - net(x))).sum() / len(x) / delta ** (power + 1)
        assert abs(float(fd.detach() - value)) <= tol * max(1.0, abs(float(value)))


@pytest.mark.parametrize("alpha,power", ACTS)
def test_growth_ncf_closed_form_gradient_matches_autograd(alpha: float, power: int) -> None:
    g, c = torch.randn(30, 4, dtype=torch.float64), torch.randn(30, 3, dtype=torch.float64)
    objective = growth_objective(g, c, alpha, power)
    u = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    values, grad = objective.value_and_grad(u.detach())
    ref = torch.autograd.grad(objective(u).sum(), u)[0]
    assert torch.allclose(values, objective(u).detach()) and torch.allclose(grad, ref, atol=1e-12)


def test_growth_ncf_is_minus_b_dot_gradient_of_new_outgoing_weights() -> None:
    """N_l(a, b) = -b . dL/dW_new / N with L = 1/2 ||H - Y||^2 and W_new the (zero) outgoing column."""
    net = random_net(0.2, 1)
    x, y = torch.randn(50, 5, dtype=torch.float64), torch.randn(50, 1, dtype=torch.float64)
    problems = growth_problems(net, x, y)
    for l, (g, c) in enumerate(problems, 1):
        a, b = torch.randn(g.shape[1], dtype=torch.float64), torch.randn(c.shape[1], dtype=torch.float64)
        grown = random_net(0.2, 1)
        grown.add_neuron(l, a, torch.zeros_like(b))
        loss = 0.5 * (grown(x) - y).square().sum()
        grad = torch.autograd.grad(loss, grown.weights[l])[0][:, -1]
        value = growth_objective(g, c, 0.2, 1)(torch.cat([a, b])[None])[0]
        assert torch.allclose(value, -(b @ grad) / len(x), atol=1e-13)


def test_pga_reaches_closed_form_optimum_and_balance() -> None:
    """Linear activation: max N_l = 1/2 * top singular value of C^T G, at ||a||^2 = ||b||^2 = 1/2."""
    torch.manual_seed(1)
    g, c = torch.randn(60, 4, dtype=torch.float64), torch.randn(60, 3, dtype=torch.float64) / 60
    res = pga(growth_objective(g, c, 1.0, 1), 7, restarts=6, lr=2.0, steps=2000,
              generator=torch.Generator().manual_seed(0))
    h = int(res.values.argmax())
    expected = 0.5 * torch.linalg.matrix_norm(c.T @ g, ord=2)
    assert torch.allclose(res.values[h], expected, rtol=1e-8)
    assert abs(float(res.points[h, :4].square().sum()) - 0.5) < 1e-6
    assert float(res.kkt[h]) > 1 - 1e-8


@pytest.mark.parametrize("alpha,power", [(0.2, 1), (1.0, 2)])
def test_insertion_loss_drop_matches_first_order_prediction(alpha: float, power: int) -> None:
    """mean((H - Y)^2) drops by 2 delta^(p+1) N_l(a, b) / n_out for a small neuron (Lemma 13)."""
    net = random_net(alpha, power, n_out=2)
    x, y = torch.randn(50, 5, dtype=torch.float64), torch.randn(50, 2, dtype=torch.float64)
    (g, c) = growth_problems(net, x, y)[0]
    u = torch.randn(1, g.shape[1] + c.shape[1], dtype=torch.float64)
    u /= u.norm()
    value = float(growth_objective(g, c, alpha, power)(u)[0])
    delta = 1e-2
    with torch.no_grad():
        loss = float((net(x) - y).square().mean())
        net.add_neuron(1, delta * u[0, :5], delta * u[0, 5:])
        drop = loss - float((net(x) - y).square().mean())
    predicted = 2 * delta ** (power + 1) * value / 2
    assert abs(drop - predicted) < 1e-2 * abs(predicted)


def test_diagonal_linear_network_np_equals_omp() -> None:
    """App. D.5: NP on x^T (v * u) picks columns like OMP: [0, 0, 1.7715] then [1.1875, 0, 1.875]."""
    X = torch.tensor([[1.0, 0.0, -0.1], [0.0, 1.0, 1 + 0.2 / 3]], dtype=torch.float64)
    b = torch.tensor([1.0, 2.0], dtype=torch.float64)
    v, u = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    chosen, products = [], []
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        residual = (b - X @ (v * u))[:, None]
        # candidate neuron j: linear unit on input coordinate j; its NCF is v_j u_j X[:, j] . residual
        best = max(((j, pga(growth_objective(X[:, j:j + 1], residual / 2, 1.0, 1), 2, 4, 0.5, 500, gen))
                    for j in range(3) if j not in chosen), key=lambda jr: float(jr[1].values.max()))
        j, res = best
        point = res.points[int(res.values.argmax())]
        assert abs(float(res.values.max()) - abs(float(X[:, j] @ residual[:, 0])) / 4) < 1e-9  # |c.r|/2 per sample
        chosen.append(j)
        v[j], u[j] = 0.01 * point[0], 0.01 * point[1]
        for _ in range(60_000):  # GD, step 0.001, on 1/2 ||X (v*u) - b||^2 over the chosen neurons
            r = X @ (v * u) - b
            gz = X.T @ r
            v, u = v - 1e-3 * gz * u, u - 1e-3 * gz * v
        products.append((v * u).clone())
    assert chosen == [2, 0]
    assert abs(abs(float(v[2])) - 1.369) < 2e-3 and abs(abs(float(v[0])) - 1.09) < 5e-3  # (v, u) up to sign
    assert torch.allclose(products[0], torch.tensor([0, 0, 2.0333 / 1.14778], dtype=torch.float64), atol=1e-3)
    assert torch.allclose(products[1], torch.tensor([1.1875, 0, 1.875], dtype=torch.float64), atol=1e-6)
    assert float((products[1] - torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)).norm()) > 1.5  # not min-l1


def test_datamodules_are_seeded_and_shaped() -> None:
    a, b = SparseFunctionDataModule("f2", 64, 32, seed=3), SparseFunctionDataModule("f2", 64, 32, seed=3)
    xa, ya = a.train_tensors()
    assert xa.shape == (64, 50) and ya.shape == (64, 1) and torch.equal(xa, b.train_tensors()[0])
    assert torch.allclose(xa.norm(dim=1), torch.full((64,), math.sqrt(50), dtype=torch.float64))
    m = ModularAdditionDataModule(59, 1500)
    (x, y), (xt, yt) = m.train_tensors(), m.test_tensors()
    assert x.shape == (1500, 119) and y.shape == (1500, 59) and len(xt) == 1981
    a_idx, b_idx = x[:, :59].argmax(1), x[:, 59:118].argmax(1)
    assert torch.equal(y.argmax(1), (a_idx + b_idx) % 59) and torch.all(x[:, -1] == 1)
    with pytest.raises(ValueError, match="task"):
        SparseFunctionDataModule("nope")


def test_multi_device_strategies_other_than_ddp_are_refused_with_a_clear_message() -> None:
    trainer = SimpleNamespace(world_size=2, strategy=object())  # DDP itself: tests/neuron_pursuit/test_pvr.py
    with pytest.raises(ValueError, match="one device or under DDP"):
        NeuronPursuit().setup(trainer, SimpleNamespace(), "fit")


def test_callbacks_name_what_the_module_or_datamodule_lacks() -> None:
    """The callbacks check the Growable / NearSaddle / FullBatchData protocols once, at setup, with one error."""
    data = SparseFunctionDataModule("fig6", 10, 10)
    trainer = SimpleNamespace(world_size=1, datamodule=data)
    module = NeuronPursuitModule(20)
    NeuronPursuit().setup(trainer, module, "fit")  # the real pair satisfies both
    partial = SimpleNamespace(net=module.net, prepare=module.prepare, loss_fn=module.loss_fn, errors=module.errors)
    with pytest.raises(ValueError, match=r"NeuronPursuit needs a module satisfying Growable \(e\.g\. "
                                         r"lit_modules\.NeuronPursuitModule\); SimpleNamespace lacks: "
                                         r"stage_summary, start_stage$"):
        NeuronPursuit().setup(trainer, partial, "fit")
    wrong_net = SimpleNamespace(**{**vars(partial), "net": torch.nn.Linear(2, 1), "start_stage": None,
                                   "stage_summary": None})
    with pytest.raises(ValueError, match=r"lacks: net \(a nets\.neuron_pursuit\.GrowableNet, got Linear\)"):
        NeuronPursuit().setup(trainer, wrong_net, "fit")
    no_test = SimpleNamespace(world_size=1, datamodule=SimpleNamespace(train_tensors=data.train_tensors))
    with pytest.raises(ValueError, match=r"datamodule satisfying FullBatchData .* lacks: test_tensors$"):
        NeuronPursuit().setup(no_test, module, "fit")
    with pytest.raises(ValueError, match=r"SaddleMonitor needs a module satisfying NearSaddle .* lacks: "
                                         r"n_mask, restricted_net, w_bar$"):
        SaddleMonitor().setup(trainer, module, "fit")


TINY = ["--config", "configs/neuron_pursuit/fig6.yaml", "--data.n_train", "100", "--data.n_test", "500",
        "--model.gd_steps_per_batch", "50", "--trainer.callbacks.init_args.epochs_per_stage", "3",
        "--trainer.callbacks.init_args.pga_steps", "200", "--trainer.callbacks.init_args.max_iterations", "3",
        "--trainer.callbacks.init_args.stop_rel_err", "1e-12"]


def test_fig6_tiny_run_grows_and_resumes_to_the_same_trajectory(tmp_path) -> None:
    full_dir, cut_dir = full_and_resumed(TINY, tmp_path, ["--trainer.max_epochs", "8"], ["--trainer.max_epochs", "4"])
    full, cut = read_results(full_dir), read_results(cut_dir)
    assert full["np_iterations"] == 3 and sum(full["widths"]) == 4 and full["widths"] == cut["widths"]
    for key in ("test/rel_err", "train/rel_err"):
        assert full[key] == cut[key]
    drop = ("np/pga_seconds",)
    assert read_metrics(full_dir, drop) == read_metrics(cut_dir, drop)


def test_bad_config_exits_with_one_line(tmp_path, capsys) -> None:
    assert run_train([*TINY, "--model.lr", "-1"], tmp_path) == 1
    assert "model.lr must be positive" in capsys.readouterr().err
    assert run_train([*TINY, "--model.in_features", "7"], tmp_path) == 1
    assert "in_features=7" in capsys.readouterr().err


FAST = ["--model.gd_steps_per_batch", "2", "--trainer.max_epochs", "2"]
FAST_NP = ["--trainer.callbacks.init_args.epochs_per_stage", "1", "--trainer.callbacks.init_args.pga_steps", "30",
           "--trainer.callbacks.init_args.restarts", "4", "--trainer.callbacks.init_args.max_iterations", "2"]


@pytest.mark.parametrize("name,extra", [
    ("sparse", FAST_NP + ["--data.n_train", "50", "--data.n_test", "100"]),
    ("sparse", FAST_NP + ["--data.task", "f2", "--data.n_train", "50", "--data.n_test", "100"]),
    ("sparse", FAST_NP + ["--data.task", "g2", "--model.alpha", "0.5", "--data.n_train", "50", "--data.n_test", "100"]),
    ("gaussian", FAST_NP + ["--data.n_train", "50", "--data.n_test", "100"]),
    ("gaussian", FAST_NP + ["--data.task", "h2", "--data.n_train", "50", "--data.n_test", "100"]),
    ("modular_addition", FAST_NP + ["--data.n_train", "100", "--data.modulus", "13", "--model.in_features", "27",
                                    "--model.out_features", "13"]),
    ("gd_baseline", ["--data.n_train", "50", "--data.n_test", "100"]),
    ("gd_baseline_gaussian", ["--data.n_train", "50", "--data.n_test", "100"]),
])
def test_every_config_runs_and_writes_results(tmp_path, name: str, extra: list[str]) -> None:
    assert run_train(["--config", f"configs/neuron_pursuit/{name}.yaml", *FAST, *extra], tmp_path) == 0
    results = read_results(run_dir(tmp_path, name))
    assert {"test/rel_err", "train/rel_err", "widths"} <= set(results)
    if not name.startswith("gd_baseline"):
        assert results["np_iterations"] == 2 and sum(results["widths"]) == results["np_iterations"] + len(
            results["widths"]) - 1
