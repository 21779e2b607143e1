"""The GN/LM solver against dense closed forms (float64)."""
import pytest
import torch
from torch import nn

from nets.gauss_newton.solver import (AnalyticJacobianNet, Damping, DenseJacobian, FuncJacobian, MarquardtSchedule,
                                   SingularSystemError, gn_direction, lm_step)
from nets import TanhMLP, TwoLayerTanh

F64 = torch.float64


def problem(n: int, p: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, p, generator=gen, dtype=torch.float64), torch.randn(n, generator=gen, dtype=torch.float64)


def reference(J: torch.Tensor, u: torch.Tensor, a: float, c: float) -> torch.Tensor:
    return torch.linalg.solve(a * J.T @ J + c * torch.eye(J.shape[1], dtype=F64), J.T @ u)


@pytest.mark.parametrize("shape", [(40, 12), (12, 40)])
@pytest.mark.parametrize("method", ["primal", "dual", "lstsq", "cg", "cg_dual"])
@pytest.mark.parametrize("damping", [Damping.convex(0.3), Damping.convex(1e-3), Damping.additive(0.5)])
def test_every_solver_matches_the_dense_solve(shape: tuple[int, int], method: str, damping: Damping) -> None:
    J, u = problem(*shape)
    v, info = gn_direction(DenseJacobian(J), u, damping, method=method, cg_tol=1e-13, cg_maxiter=500)
    torch.testing.assert_close(v, reference(J, u, damping.a, damping.c), rtol=1e-8, atol=1e-9)
    assert info.fallback is None


@pytest.mark.parametrize("method", ["primal", "lstsq", "cg"])
def test_undamped_gauss_newton_is_the_least_squares_solution(method: str) -> None:
    J, u = problem(50, 10)
    v, _ = gn_direction(DenseJacobian(J), u, Damping.convex(0.0), method=method, cg_tol=1e-14)
    torch.testing.assert_close(v, torch.linalg.lstsq(J, u.unsqueeze(1)).solution.squeeze(1), rtol=1e-8, atol=1e-10)


def test_rho_one_is_the_plain_gradient() -> None:
    J, u = problem(20, 7)
    v, _ = gn_direction(DenseJacobian(J), u, Damping.convex(1.0))
    torch.testing.assert_close(v, J.T @ u)


def rank_deficient() -> tuple[torch.Tensor, torch.Tensor]:
    J, u = problem(30, 6)
    J[:, 5] = J[:, 4]  # duplicated column: J^T J is singular
    return J, u


@pytest.mark.parametrize("method", ["primal", "lstsq"])
def test_singular_system_raises_a_clear_error(method: str) -> None:
    J, u = rank_deficient()
    with pytest.raises(SingularSystemError, match="singular"):
        gn_direction(DenseJacobian(J), u, Damping.convex(0.0), method=method)


@pytest.mark.parametrize("policy", ["pinv", "lstsq"])
def test_singular_fallbacks_return_the_minimum_norm_solution(policy: str) -> None:
    J, u = rank_deficient()
    v, info = gn_direction(DenseJacobian(J), u, Damping.convex(0.0), on_singular=policy)
    assert info.fallback == policy
    torch.testing.assert_close(v, torch.linalg.pinv(J) @ u, rtol=1e-7, atol=1e-9)


def test_damp_fallback_solves_the_slightly_damped_system() -> None:
    J, u = rank_deficient()
    v, info = gn_direction(DenseJacobian(J), u, Damping.convex(0.0), on_singular="damp", fallback_rho=1e-4)
    assert info.fallback == "damp"
    torch.testing.assert_close(v, reference(J, u, 1 - 1e-4, 1e-4))


def test_bad_arguments_raise_value_errors() -> None:
    J, u = problem(5, 3)
    with pytest.raises(ValueError, match="rho"):
        Damping.convex(1.5)
    with pytest.raises(ValueError, match="method"):
        gn_direction(DenseJacobian(J), u, Damping.convex(0.1), method="qr")
    with pytest.raises(ValueError, match="distributed"):
        gn_direction(DenseJacobian(J), u, Damping.convex(0.1), method="dual", reduce=lambda t: t)
    with pytest.raises(ValueError, match="shape"):
        gn_direction(DenseJacobian(J), u[:3], Damping.convex(0.1))


def _ddp_worker(rank: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_default_dtype(torch.float64)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)

    def all_reduce(t: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(t)
        return t
    J, u = problem(24, 9)
    rows = slice(12 * rank, 12 * (rank + 1))
    steps = {m: gn_direction(DenseJacobian(J[rows]), u[rows], Damping.convex(0.2), method=m, cg_tol=1e-13,
                             reduce=all_reduce)[0] for m in ("primal", "cg")}
    torch.save(steps, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.slow  # ~30 s: two spawned processes import torch
def test_all_reduced_products_give_the_joined_batch_step_on_two_processes(tmp_path) -> None:
    torch.multiprocessing.spawn(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path / "steps")), nprocs=2)
    J, u = problem(24, 9)
    expected = reference(J, u, 0.8, 0.2)
    for rank in range(2):
        for method, v in torch.load(tmp_path / f"steps.{rank}").items():
            torch.testing.assert_close(v, expected, rtol=1e-9, atol=1e-10, msg=f"rank {rank} {method}")


def mlp_fn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    x = torch.randn(7, 3, dtype=F64)
    theta = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    return net, x, theta


def flat_call(net: nn.Module, x: torch.Tensor):
    shapes = [(n, p.shape, p.numel()) for n, p in net.named_parameters()]

    def fn(theta: torch.Tensor) -> torch.Tensor:
        params, i = {}, 0
        for name, shape, k in shapes:
            params[name] = theta[i:i + k].view(shape)
            i += k
        return torch.func.functional_call(net, params, (x,)).reshape(-1)
    return fn


def test_matrix_free_jacobian_products_match_jacrev() -> None:
    net, x, theta = mlp_fn()
    fn = flat_call(net, x)
    jac = FuncJacobian(fn, theta)
    J = torch.func.jacrev(fn)(theta)
    v, u = torch.randn(jac.p, dtype=F64), torch.randn(jac.n, dtype=F64)
    torch.testing.assert_close(jac.mv(v), J @ v)
    torch.testing.assert_close(jac.rmv(u), J.T @ u)
    torch.testing.assert_close(jac.dense(), J)
    d, _ = gn_direction(jac, u, Damping.additive(0.1), method="cg", cg_tol=1e-13)
    torch.testing.assert_close(d, reference(J, u, 1.0, 0.1), rtol=1e-7, atol=1e-9)


def test_analytic_two_layer_jacobian_matches_vmap_jacrev() -> None:
    net = TwoLayerTanh(in_features=4, width=6, init_seed=1)
    x = torch.randn(11, 4, dtype=F64)

    def single(w: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(net, {"weight": w}, (xi.unsqueeze(0),)).squeeze(0)
    generic = torch.func.vmap(torch.func.jacrev(single), in_dims=(None, 0))(net.weight.detach(), x).reshape(11, -1)
    torch.testing.assert_close(net.jacobian(x), generic)


@pytest.mark.parametrize("hidden, out", [([5], 1), ([4, 3], 3)])
def test_tanh_mlp_writes_the_per_sample_jacobian_of_vmap_jacrev(hidden: list[int], out: int) -> None:
    torch.manual_seed(0)
    net = TanhMLP(6, hidden, out).double()
    x = torch.randn(9, 6, dtype=F64)
    theta = torch.nn.utils.parameters_to_vector(net.parameters()).detach() + 0.1  # not the net's own parameters
    shapes = [(name, p.shape) for name, p in net.named_parameters()]

    def single(t: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        params = {name: c.view(shape) for (name, shape), c in zip(shapes, t.split([s.numel() for _, s in shapes]))}
        return torch.func.functional_call(net, params, (xi.unsqueeze(0),)).squeeze(0)
    generic = torch.func.vmap(torch.func.jacrev(single), in_dims=(None, 0))(theta, x)
    assert isinstance(net, AnalyticJacobianNet) and not isinstance(TwoLayerTanh(4, 3), AnalyticJacobianNet)
    torch.testing.assert_close(net.per_sample_jacobian(x, theta), generic)
    torch.testing.assert_close(net.per_sample_jacobian(x), net.per_sample_jacobian(x, theta - 0.1))


def test_marquardt_step_solves_a_linear_least_squares_problem_and_adapts_lambda() -> None:
    A, b = problem(30, 5)
    schedule = MarquardtSchedule(lam=1e-8)
    theta, loss, info = lm_step(lambda t: A @ t - b, torch.zeros(5, dtype=F64), schedule, method="primal")
    x_star = torch.linalg.lstsq(A, b.unsqueeze(1)).solution.squeeze(1)
    torch.testing.assert_close(theta, x_star, rtol=1e-6, atol=1e-8)
    assert info["tries"] == 1 and schedule.lam == pytest.approx(1e-9)


def test_marquardt_rejects_a_step_that_raises_the_loss_and_retries_with_more_damping() -> None:
    def residual(t: torch.Tensor) -> torch.Tensor:  # Rosenbrock as residuals; the GN step from here overshoots
        return torch.stack([10 * (t[1] - t[0] ** 2), 1 - t[0]])
    schedule = MarquardtSchedule(lam=1e-6)
    theta0 = torch.tensor([-1.2, 1.0], dtype=F64)
    theta, loss, info = lm_step(residual, theta0, schedule, method="primal")
    r0 = residual(theta0)
    assert loss < 0.5 * float(r0 @ r0)
    assert info["tries"] >= 1


def test_square_root_trick_gives_the_cross_entropy_ggn_step() -> None:
    """J~ = A^T J and u with A u = dCE/dlogits reproduce (J^T H J / B + lam I)^-1 J^T (p - e_y) / B."""
    from nets.gauss_newton.solver import softmax_sqrt_factor

    net, x, theta = mlp_fn()  # 7 samples, 2 classes
    y = torch.tensor([0, 1, 1, 0, 1, 0, 0])
    fn = flat_call(net, x)
    logits = fn(theta).view(7, 2)
    A, u = softmax_sqrt_factor(logits, y)
    p = logits.softmax(-1)
    hess = torch.autograd.functional.hessian(
        lambda z: torch.nn.functional.cross_entropy(z.view(7, 2), y, reduction="sum"), logits.reshape(-1))
    torch.testing.assert_close(torch.block_diag(*(A @ A.transpose(1, 2))), hess)
    J = torch.func.jacrev(fn)(theta)  # (14, p)
    lam, B = 0.3, 7
    expected = torch.linalg.solve(J.T @ hess @ J / B + lam * torch.eye(J.shape[1], dtype=F64),
                                  J.T @ (p - torch.nn.functional.one_hot(y, 2)).reshape(-1) / B)
    jac = FuncJacobian(lambda t: torch.einsum("bkc,bk->bc", A, fn(t).view(7, 2)).reshape(-1), theta)
    d, _ = gn_direction(jac, u.reshape(-1), Damping.additive(B * lam), method="cg", cg_tol=1e-13)
    torch.testing.assert_close(d, expected, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("method", ["primal", "dual", "lstsq"])
def test_damped_float32_system_is_never_called_singular(method: str) -> None:
    """With damping c > 0 the system is regular however ill-conditioned J is (float32: rcond is large)."""
    J, u = problem(200, 30)
    J[:, 1] = J[:, 0] * 30  # wide spread of column scales
    v, info = gn_direction(DenseJacobian(J.float()), u.float(), Damping.additive(1.0), method=method)
    assert info.fallback is None
    torch.testing.assert_close(v.double(), reference(J, u, 1.0, 1.0), rtol=2e-2, atol=2e-3)


def test_per_sample_jacobian_matches_jacrev_and_drives_lm_step() -> None:
    from nets.gauss_newton.solver import per_sample_jacobian

    net, x, theta = mlp_fn()
    fn = flat_call(net, x)
    single = lambda t, xi: flat_call(net, xi.unsqueeze(0))(t)  # noqa: E731
    torch.testing.assert_close(per_sample_jacobian(single, theta, x).dense(), torch.func.jacrev(fn)(theta))
    target = torch.randn(14, dtype=F64)
    a, loss_a, _ = lm_step(lambda t: fn(t) - target, theta, MarquardtSchedule(lam=0.1), method="primal",
                           jacobian=lambda t: per_sample_jacobian(single, t, x))
    b, loss_b, _ = lm_step(lambda t: fn(t) - target, theta, MarquardtSchedule(lam=0.1), method="cg", cg_tol=1e-13)
    torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)
