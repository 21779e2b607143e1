"""Neuron Pursuit, PVR additions: pointer data, weight balancing, lr halving with reset, long stages, resume."""
import os
import subprocess

import pytest
import torch

from datamodules.synthetic import PointerValueDataModule
from nets.neuron_pursuit.gd import HalvingSchedule
from nets.neuron_pursuit.growable import GrowableNet
from tests.conftest import QUIET, ROOT, python, full_and_resumed, read_metrics, read_results, run_dir, run_train


def test_pvr_data_pointer_encoding_and_labels() -> None:
    data = PointerValueDataModule(n_train=3000, n_test=500, seed=4)
    x, y = data.train_tensors()
    assert x.shape == (3000, 21) and y.shape == (3000, 1) and len(data.test_tensors()[0]) == 500
    assert torch.all(x[:, 4] == 1) and set(x.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(x, PointerValueDataModule(3000, 500, seed=4).train_tensors()[0])
    assert not torch.equal(x, PointerValueDataModule(3000, 500, seed=5).train_tensors()[0])
    seen = set()
    for row, label in zip(x.tolist(), y[:, 0].tolist()):
        # symmetric binary, MSB first: (-1,-1,-1,-1) -> p = 1, (-1,-1,-1,1) -> p = 2, ...; p = 16 wraps to x_1
        p = 1 + int("".join("1" if b > 0 else "0" for b in row[:4]), 2)
        values = row[5:]
        assert label == values[p - 1] * values[p % 16]
        seen.add(p)
    assert seen == set(range(1, 17))
    assert x[:, :4].mean().abs() < 0.05 and x[:, 5:].mean().abs() < 0.05  # fair signs


def random_net(alpha: float, power: int, widths=(6, 4), d: int = 5, seed: int = 0) -> GrowableNet:
    torch.manual_seed(seed)
    net = GrowableNet(d, 2, len(widths) + 1, alpha, power, widths)
    with torch.no_grad():
        for w in net.weights:
            w.normal_(0, 1.0)
            w.mul_(torch.rand(w.shape[0], 1, dtype=w.dtype) * 3)  # strongly unbalanced rows
    return net


@pytest.mark.parametrize("alpha,power,widths", [(0.0, 1, (6, 4)), (0.3, 1, (5, 4, 3)), (1.0, 2, (4, 3)),
                                                (0.5, 3, (3, 3))])
def test_balance_keeps_function_and_equalises_norms(alpha: float, power: int, widths) -> None:
    net = random_net(alpha, power, widths)
    x = torch.randn(64, 5, dtype=torch.float64)
    before = net(x).detach()
    assert max(float(r.detach().log().abs().max()) for r in net.balance_ratios()) > 0.5
    sweeps = net.balance()
    assert 1 < sweeps < 1000
    assert torch.allclose(net(x), before, rtol=0, atol=1e-10 * float(before.abs().max()))
    for l, ratio in enumerate(net.balance_ratios()):
        n_in, n_out = net.weights[l].norm(dim=1), net.weights[l + 1].norm(dim=0)
        assert torch.allclose(n_in.square(), power * n_out.square(), rtol=1e-10)  # ||in||^2 = p ||out||^2
        assert torch.allclose(ratio, torch.ones_like(ratio), rtol=1e-10)


def test_balance_is_the_minimum_norm_rescaling() -> None:
    """Saul's objective: no other function-preserving neuron rescaling has a smaller total squared norm."""
    net = random_net(0.0, 1)
    net.balance()
    total = sum(float(w.detach().square().sum()) for w in net.weights)
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        ws = [w.detach().clone() for w in net.weights]
        for l in range(net.depth - 1):
            c = torch.exp(0.3 * torch.randn(ws[l].shape[0], generator=gen, dtype=torch.float64))
            ws[l] *= c[:, None]
            ws[l + 1] /= c[None, :]
        assert sum(float(w.square().sum()) for w in ws) >= total * (1 - 1e-12)


def test_balance_leaves_dead_neurons_alone() -> None:
    net = random_net(0.0, 1)
    with torch.no_grad():
        net.weights[1][:, 2] = 0  # neuron 3 of layer 1 has no outgoing weights
    row = net.weights[0][2].detach().clone()
    net.balance()
    assert torch.equal(net.weights[0][2], row)


def diverging_problem():
    torch.manual_seed(0)
    net = GrowableNet(4, 1, 3, 1.0, 1, [5, 3])  # linear: a large step surely diverges
    with torch.no_grad():
        for w in net.weights:
            w.normal_(0, 1.0)
    x = torch.randn(40, 4, dtype=torch.float64)
    return net, x, torch.randn(40, 1, dtype=torch.float64)


def test_lr_halving_restores_the_exact_previous_weights() -> None:
    net, x, y = diverging_problem()
    params = list(net.weights)
    loss = lambda: (net(x) - y).square().mean().detach()  # noqa: E731
    schedule = HalvingSchedule(lr=3.0, every=2, max_halvings=3)
    schedule.begin(params, loss)
    checkpoints = [[p.detach().clone() for p in params]]  # weights at the stage start and at every kept check
    halvings = 0
    for step in range(1, 41):
        _, grads = net.mse_and_grads(x, y)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= schedule.lr * g
        before_tick = float(loss())
        if schedule.tick(params, loss):
            halvings += 1
            assert before_tick > schedule.events[-1]["ref_loss"]
            assert all(torch.equal(p, saved) for p, saved in zip(params, checkpoints[-1]))
        elif step % 2 == 0:
            checkpoints.append([p.detach().clone() for p in params])
    assert halvings == 3 and schedule.halvings == 3 and schedule.lr == 3.0 / 8  # capped at max_halvings
    assert [e["lr"] for e in schedule.events] == [1.5, 0.75, 0.375]
    schedule.restart()
    assert schedule.lr == 3.0 and schedule.halvings == 0 and schedule.ref_loss is None


def test_lr_halving_never_fires_while_the_loss_decreases() -> None:
    net, x, y = diverging_problem()
    schedule = HalvingSchedule(lr=1e-3, every=5, max_halvings=4)
    loss = lambda: (net(x) - y).square().mean()  # noqa: E731
    schedule.begin(list(net.weights), loss)
    for _ in range(50):
        _, grads = net.mse_and_grads(x, y)
        with torch.no_grad():
            for p, g in zip(net.weights, grads):
                p -= schedule.lr * g
        assert not schedule.tick(list(net.weights), loss)
    assert schedule.events == [] and schedule.steps == 50


TINY = ["--config", "configs/neuron_pursuit/pvr.yaml", "--data.n_train", "200", "--data.n_test", "300",
        "--model.gd_steps_per_batch", "20", "--model.lr_check_every", "30",
        "--trainer.callbacks.init_args.epochs_per_stage", "2", "--trainer.callbacks.init_args.pga_steps", "100",
        "--trainer.callbacks.init_args.pga_steps_first", "100", "--trainer.callbacks.init_args.restarts", "4",
        "--trainer.callbacks.init_args.max_iterations", "4", "--trainer.callbacks.init_args.stop_rel_err", "1e-9"]


def stage_lengths(path) -> list[int]:
    return [r["stage_epochs"] for r in read_results(path)["np_history"]]


def test_long_stages_start_once_the_loss_is_below_the_threshold(tmp_path) -> None:
    never = [*TINY, "--trainer.max_epochs", "8", "--name", "never"]
    assert run_train(never, tmp_path) == 0
    assert stage_lengths(run_dir(tmp_path, "never")) == [2, 2, 2, 2]
    losses = [r["train_loss"] for r in read_results(run_dir(tmp_path, "never"))["np_history"]]
    assert losses[1] < losses[0]
    threshold = (losses[0] + losses[1]) / 2  # stage 1 ends above it, stage 2 below
    switch = [*TINY, "--trainer.max_epochs", "11", "--name", "switch",
              "--trainer.callbacks.init_args.long_stage_epochs", "3",
              "--trainer.callbacks.init_args.long_stage_below_loss", str(threshold)]
    assert run_train(switch, tmp_path) == 0
    results = read_results(run_dir(tmp_path, "switch"))
    assert stage_lengths(run_dir(tmp_path, "switch")) == [2, 2, 3, 3] and results["epochs"] == 10
    assert results["np_stop_reason"] == "max_iterations"


def test_pvr_resumes_to_the_same_trajectory_with_balancing_halving_and_long_stages(tmp_path) -> None:
    args = [*TINY, "--model.lr", "2.0", "--trainer.callbacks.init_args.long_stage_epochs", "3",
            "--trainer.callbacks.init_args.long_stage_below_loss", "1e9"]
    # stopped inside stage 2
    full_dir, cut_dir = full_and_resumed(args, tmp_path, ["--trainer.max_epochs", "11"], ["--trainer.max_epochs", "6"])
    full, cut = read_results(full_dir), read_results(cut_dir)
    assert full["lr_halving_events"], "lr 2.0 should make the loss rise at some check"
    assert full["lr_halving_events"] == cut["lr_halving_events"]
    history = full["np_history"]
    assert all("balance_max_after" in r for r in history[1:]) and [r["stage_epochs"] for r in history] == [2, 3, 3, 3]
    assert all(abs(r["balance_max_after"] - 1) < 1e-9 for r in history[1:])
    for key in ("test/rel_err", "train/rel_err", "widths", "np_iterations"):
        assert full[key] == cut[key], key
    drop = ("np/pga_seconds",)
    assert read_metrics(full_dir, drop) == read_metrics(cut_dir, drop)


def test_bad_schedule_values_are_refused(tmp_path, capsys) -> None:
    assert run_train([*TINY, "--model.lr_check_every", "0"], tmp_path) == 1
    assert "lr_check_every must be >= 1" in capsys.readouterr().err
    assert run_train([*TINY, "--trainer.callbacks.init_args.long_stage_epochs", "0"], tmp_path) == 1
    assert "long_stage_epochs must be >= 1" in capsys.readouterr().err


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPU cores")
def test_ddp_two_gloo_processes_grow_the_same_net_as_one_process(tmp_path) -> None:
    """Rank 0 grows and broadcasts; GD on data shards with all-reduced gradients follows the 1-process run."""
    args = [*TINY, "--model.lr", "2.0", "--trainer.max_epochs", "6", "--trainer.accelerator", "cpu"]
    assert run_train([*args, "--name", "one", "--trainer.devices", "1"], tmp_path) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("OVERPARAM_RUN_DIR", None)
    done = subprocess.run([python(), "train.py", *args, *QUIET, "--name", "two", "--trainer.devices", "2",
                           "--trainer.strategy", "ddp", "--trainer.default_root_dir", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = read_results(run_dir(tmp_path, "one")), read_results(run_dir(tmp_path, "two"))
    assert one["widths"] == two["widths"] and one["np_iterations"] == two["np_iterations"] == 4
    assert [r["layer"] for r in one["np_history"]] == [r["layer"] for r in two["np_history"]]
    assert len(one["lr_halving_events"]) == len(two["lr_halving_events"]) > 0
    for key in ("train/rel_err", "test/rel_err"):
        assert abs(one[key] - two[key]) < 1e-7, key
    rows_one, rows_two = (read_metrics(run_dir(tmp_path, n), ("np/pga_seconds",)) for n in ("one", "two"))
    assert len(rows_one) == len(rows_two)
    for a, b in zip(rows_one, rows_two):
        assert a.keys() == b.keys()
        for k in a:
            if a[k] and k not in ("epoch", "step"):
                assert abs(float(a[k]) - float(b[k])) <= 1e-6 * max(1.0, abs(float(a[k]))), k
