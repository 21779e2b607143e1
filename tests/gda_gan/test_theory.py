"""The closed forms of nets/gda_gan/theory.py against autograd, finite sums and the lemmas of App. A."""
import math

import pytest
import torch
from torch.func import jacrev

from nets.gda_gan import theory

f64 = torch.float64


def problem(k: int = 12, m: int = 3, d: int = 4, n: int = 20, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    V = torch.randn(m, k, generator=g, dtype=f64)
    Z = torch.randn(n, d, generator=g, dtype=f64)
    W = torch.randn(k, d, generator=g, dtype=f64)
    x_bar = 3 * torch.randn(m, generator=g, dtype=f64)
    d_vec = torch.randn(m, generator=g, dtype=f64)
    return V, Z, W, x_bar, d_vec


def objective(W: torch.Tensor, d: torch.Tensor, V: torch.Tensor, Z: torch.Tensor, x_bar: torch.Tensor) -> torch.Tensor:
    return d @ (x_bar - theory.generator_mean(W, V, Z)) - 0.5 * d @ d


def kronecker_jacobian(W: torch.Tensor, V: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    """(33): J = (1/n) sum_i (V diag(phi'(W z_i))) kron z_i^T, built term by term."""
    phi = theory.activation_pattern(W, Z)
    return sum(torch.kron(V * phi[i], Z[i][None, :]) for i in range(len(Z))) / len(Z)


def test_autograd_gradient_matches_closed_form() -> None:
    V, Z, W, x_bar, d = problem()
    W = W.requires_grad_()
    d = d.requires_grad_()
    gW, gd = torch.autograd.grad(objective(W, d, V, Z, x_bar), (W, d))
    torch.testing.assert_close(gW, theory.grad_W(W.detach(), V, Z, d.detach()), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gd, x_bar - theory.generator_mean(W.detach(), V, Z) - d.detach())


def test_danskin_optimal_discriminator_gradient() -> None:
    V, Z, W, x_bar, _ = problem()
    W = W.requires_grad_()
    loss = 0.5 * (theory.generator_mean(W, V, Z) - x_bar).square().sum()
    (g,) = torch.autograd.grad(loss, W)
    d_star = x_bar - theory.generator_mean(W.detach(), V, Z)
    torch.testing.assert_close(g, theory.grad_W(W.detach(), V, Z, d_star), rtol=1e-12, atol=1e-12)
    # and d* maximises L(W, .): its d-gradient vanishes
    d_star.requires_grad_()
    (gd,) = torch.autograd.grad(objective(W.detach(), d_star, V, Z, x_bar), d_star)
    assert gd.abs().max() < 1e-12


def test_jacobian_kronecker_form_and_shortcuts() -> None:
    V, Z, W, _, _ = problem()
    n = len(Z)
    J = jacrev(lambda w: theory.generator_mean(w.reshape(W.shape), V, Z))(W.reshape(-1))
    torch.testing.assert_close(J, kronecker_jacobian(W, V, Z), rtol=1e-12, atol=1e-12)
    D = theory.jacobian_diag(W, Z)
    torch.testing.assert_close(J @ J.T, V @ torch.diag(D ** 2) @ V.T / n ** 2, rtol=1e-10, atol=1e-12)
    s = torch.linalg.svdvals(J)
    sigma_min, sigma_max = theory.jacobian_extremes(W, V, Z)
    assert sigma_max == pytest.approx(float(s[0]), rel=1e-10)
    assert sigma_min == pytest.approx(float(s[V.shape[0] - 1]), rel=1e-10)
    W1 = W + 0.7 * torch.randn(W.shape, generator=torch.Generator().manual_seed(5), dtype=f64)
    J1 = kronecker_jacobian(W1, V, Z)
    drift = float(torch.linalg.matrix_norm(J1 - J, ord=2))
    assert drift > 0 and theory.jacobian_drift(W1, W, V, Z) == pytest.approx(drift, rel=1e-10)


def test_jacobian_rank_floor_below_m() -> None:
    V, Z, W, _, _ = problem(k=2, m=5)
    assert theory.jacobian_extremes(W, V, Z)[0] == 0.0


def test_expected_jjt_lemma_a6() -> None:
    """E[D_l^2] / n^2 = (d + (n-1)/pi) / (2n) for unit sigmas, by Monte Carlo over W and Z."""
    g = torch.Generator().manual_seed(1)
    d, n, k = 3, 10, 200
    draws = [theory.jacobian_diag(torch.randn(k, d, generator=g, dtype=f64), torch.randn(n, d, generator=g, dtype=f64))
             for _ in range(1000)]
    mean_d2 = torch.cat(draws).square().mean() / n ** 2
    assert float(mean_d2) == pytest.approx(theory.variance_factor(d, n) ** 2, rel=0.03)


@pytest.mark.parametrize("seed", range(5))
def test_lemma_a2_a3_on_random_jacobian(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    m, p = 4, 30
    J0 = torch.randn(m, p, generator=g, dtype=f64) / math.sqrt(p)
    s = torch.linalg.svdvals(J0)
    alpha, beta = float(s[-1]), float(s[0])
    mu = 0.5
    # Lemma A.2: mu / eta >= 4 beta^2  =>  rho(A) <= 1 - eta alpha^2
    eta = mu / (4 * beta ** 2)
    rho = float(torch.linalg.eigvals(theory.lti_matrix(J0, eta, mu)).abs().max())
    assert rho <= 1 - eta * alpha ** 2 + 1e-12
    # Lemma A.3: mu / eta >= 8 beta^2  =>  |A^t| <= 5 (1 - eta alpha^2)^t
    eta = theory.eta_gda(mu, beta)
    A, power = theory.lti_matrix(J0, eta, mu), torch.eye(2 * m, dtype=f64)
    for t in range(1, 400):
        power = A @ power
        assert float(torch.linalg.matrix_norm(power, ord=2)) <= 5 * (1 - eta * alpha ** 2) ** t


def test_theory_step_rule_matches_theorem_2_1() -> None:
    """eta = mu/(8 beta^2) with (sqrt k + 2 sqrt m)^2 <= 9k is at least the Theorem 2.1 step (reconstructed)."""
    k, m, d, n, mu = 400, 5, 4, 100, 0.5
    beta = theory.theory_beta(k, m, d, n, 1.0, 1.0)
    thm = mu / (324 * k * ((d + (n - 1) / math.pi) / n))
    assert theory.eta_gda(mu, beta) >= thm


def run_gda(k: int, steps: int, seed: int = 0, m: int = 5, d: int = 4, n: int = 50) -> float:
    g = torch.Generator().manual_seed(seed)
    V = torch.randn(m, k, generator=g, dtype=f64)
    Z = torch.randn(n, d, generator=g, dtype=f64)
    W = torch.randn(k, d, generator=g, dtype=f64)
    x_bar = 3 * torch.randn(m, generator=g, dtype=f64) + torch.randn(n, m, generator=g, dtype=f64).mean(0)
    mu = 0.5
    eta = theory.eta_gda(mu, 2 * theory.jacobian_extremes(W, V, Z)[1])
    d_vec = torch.zeros(m, dtype=f64)
    for _ in range(steps):
        W, d_vec = theory.gda_step(W, d_vec, V, Z, x_bar, eta, mu)
    return float(torch.linalg.vector_norm(theory.generator_mean(W, V, Z) - x_bar))


def test_wide_generator_converges_narrow_does_not() -> None:
    assert run_gda(256, 6000) < 1e-10
    assert run_gda(2, 6000) > 1e-3
