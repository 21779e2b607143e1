"""Closed forms for the one-hidden-layer GAN of Balaji et al. (ICLR 2021), Sec. 2.3 and App. A.

Generator f(W) = (1/n) sum_i V relu(W z_i) with V (m x k) fixed, linear discriminator d, and
L(W, d) = <d, x_bar - f(W)> - |d|^2 / 2 (eq. 2). Shapes: W (k, d_latent), V (m, k), Z (n, d_latent) with
the latent codes as rows. phi'(u) = 1{u >= 0}, the convention of App. A.1.
"""
import math

import torch
from torch import Tensor


def generator_mean(W: Tensor, V: Tensor, Z: Tensor) -> Tensor:
    """f(W) = (1/n) sum_i V relu(W z_i), an m-vector."""
    return V @ torch.relu(Z @ W.T).mean(0)


def activation_pattern(W: Tensor, Z: Tensor) -> Tensor:
    """phi'(Z W^T) as 0/1 in W's dtype, shape (n, k)."""
    return (Z @ W.T >= 0).to(W.dtype)


def grad_W(W: Tensor, V: Tensor, Z: Tensor, d: Tensor) -> Tensor:
    """grad_W L(W, d) = -(1/n) sum_i [(V^T d) * 1{W z_i >= 0}] z_i^T, a (k, d_latent) matrix."""
    return -(V.T @ d)[:, None] * (activation_pattern(W, Z).T @ Z) / Z.shape[0]


def gda_step(W: Tensor, d: Tensor, V: Tensor, Z: Tensor, x_bar: Tensor, eta: float,
             mu: float) -> tuple[Tensor, Tensor]:
    """One simultaneous GDA step (eq. 3): both updates use (W_t, d_t)."""
    residual = x_bar - generator_mean(W, V, Z)
    return W - eta * grad_W(W, V, Z, d), (1 - mu) * d + mu * residual


def optimal_d_step(W: Tensor, V: Tensor, Z: Tensor, x_bar: Tensor, eta: float) -> Tensor:
    """One GD step on L(W) = |f(W) - x_bar|^2 / 2 (eq. 5); by Danskin its gradient is grad_W L(W, d*(W))."""
    return W - eta * grad_W(W, V, Z, x_bar - generator_mean(W, V, Z))


def jacobian_diag(W: Tensor, Z: Tensor) -> Tensor:
    """D_ll = |Z^T phi'(Z w_l)| (eq. 34), so that J J^T = V D^2 V^T / n^2."""
    return torch.linalg.vector_norm(activation_pattern(W, Z).T @ Z, dim=1)


def jacobian_extremes(W: Tensor, V: Tensor, Z: Tensor) -> tuple[float, float]:
    """(sigma_min, sigma_max) of the m x kd Jacobian via sigma_i(V diag(D)) / n, without building J.

    sigma_min is 0 when k < m: J has rank <= k.
    """
    s = torch.linalg.svdvals(V * jacobian_diag(W, Z)) / Z.shape[0]
    sigma_min = float(s[-1]) if V.shape[1] >= V.shape[0] else 0.0
    return sigma_min, float(s[0])


def jacobian_drift(W: Tensor, W0: Tensor, V: Tensor, Z: Tensor) -> float:
    """|J(W) - J(W0)| (operator norm) via V diag(D_delta) / n, D_delta_l = |Z^T (phi'(Z w_l) - phi'(Z w0_l))|."""
    delta = activation_pattern(W, Z) - activation_pattern(W0, Z)
    return float(torch.linalg.matrix_norm(V * torch.linalg.vector_norm(delta.T @ Z, dim=1), ord=2)) / Z.shape[0]


def variance_factor(latent_dim: int, n: int) -> float:
    """sqrt((d + (n-1)/pi) / (2n)) from Lemma A.6: E[J J^T] = sigma_z^2 (this)^2 V V^T."""
    return math.sqrt((latent_dim + (n - 1) / math.pi) / (2 * n))


def theory_alpha(k: int, m: int, latent_dim: int, n: int, sigma_v: float, sigma_z: float) -> float:
    """alpha = sigma_v sigma_z (sqrt(k - 9)/2 - 2 sqrt(m)) sqrt((d + (n-1)/pi)/(2n)) (proof of Thm 2.1, A.6)."""
    return sigma_v * sigma_z * (0.5 * math.sqrt(max(k - 9, 0)) - 2 * math.sqrt(m)) * variance_factor(latent_dim, n)


def theory_beta(k: int, m: int, latent_dim: int, n: int, sigma_v: float, sigma_z: float) -> float:
    """beta = 3 sigma_v sigma_z (sqrt(k) + 2 sqrt(m)) sqrt((d + (n-1)/pi)/(2n)) (A.6)."""
    return 3 * sigma_v * sigma_z * (math.sqrt(k) + 2 * math.sqrt(m)) * variance_factor(latent_dim, n)


def theory_epsilon(alpha: float, beta: float, gamma: float = 5.0) -> float:
    """epsilon = alpha^2 / (4 gamma beta): the Jacobian drift Theorem A.4 tolerates."""
    return alpha ** 2 / (4 * gamma * beta)


def eta_gda(mu: float, beta: float, eta_bar: float = 1.0) -> float:
    """Generator step for GDA from mu / eta >= 8 beta^2 (Lemma A.3, Theorem A.4)."""
    return eta_bar * mu / (8 * beta ** 2)


def eta_optimal_d(beta: float, eta_bar: float = 1.0) -> float:
    """Step for GD with the optimal discriminator, eta <= 1/(3 beta^2) (Theorem A.11)."""
    return eta_bar / (3 * beta ** 2)


def lti_matrix(J0: Tensor, eta: float, mu: float) -> Tensor:
    """A = [[I, -eta J0 J0^T], [mu I, (1 - mu) I]] of the linearised GDA dynamics z_{t+1} = A z_t (eq. 21)."""
    m = J0.shape[0]
    eye = torch.eye(m, dtype=J0.dtype)
    return torch.cat([torch.cat([eye, -eta * J0 @ J0.T], 1), torch.cat([mu * eye, (1 - mu) * eye], 1)], 0)
