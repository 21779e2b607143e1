"""Sparse saddles (paper Sec. 3, Figs. 1-4): building one (docs/neuron_pursuit.md, "Saddle construction"), the
saddle NCF and its KKT alignment, per-neuron balance and shares, plateau detection. Used by
``lit_modules.SaddleDynamicsModule`` and ``callbacks.neuron_pursuit.SaddleMonitor``."""
from typing import Any, Optional

import torch
from torch import Tensor

from nets.neuron_pursuit.growable import GrowableNet
from nets.neuron_pursuit.ncf import (GrowthNCF, first_iteration_objective, growth_problems, pga, single_neuron_dim,
                                     split_single_neuron)


class SaddleNCF:
    """N(w_z) = sum_l sum_{j in G_z(l)} N_l(A_l[j], B_{l+1}[:, j]) with ybar and dH/dz taken at the saddle.

    The candidate-neuron NCFs N_l are the growth NCFs of the one-neuron-per-layer net at w_bar_n (eq. 21 per neuron, Sec. 3.3),
    mean-normalised; neuron 0 of every hidden layer is the saddle's w_n, neurons 1.. are G_z.
    """

    def __init__(self, small_net: Any, x: Tensor, y: Tensor) -> None:
        self.power = small_net.power
        self.ncfs = [GrowthNCF(g, c, small_net.alpha, small_net.power) for g, c in growth_problems(small_net, x, y)]

    def rows(self, weights: list[Tensor]) -> list[Tensor]:
        """u_j = (A_l[j, :], B_{l+1}[:, j]) for every G_z neuron j of every hidden layer l."""
        rows = []
        for l, ncf in enumerate(self.ncfs):
            k_next = weights[l + 1].shape[0] if l + 1 == len(weights) - 1 else 1
            rows.append(torch.cat([weights[l][1:, :ncf.k_in], weights[l + 1][:k_next, 1:].T], 1))
        return rows

    def value_and_grad(self, weights: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """N(w_z) and its gradient, shaped like ``weights`` (zero on w_n and on the z-to-z blocks C_l)."""
        grads = [torch.zeros_like(w) for w in weights]
        total = weights[0].new_zeros(())
        for l, (ncf, u) in enumerate(zip(self.ncfs, self.rows(weights))):
            values, g = ncf.value_and_grad(u)
            total = total + values.sum()
            k_next = weights[l + 1].shape[0] if l + 1 == len(weights) - 1 else 1
            grads[l][1:, :ncf.k_in] = g[:, :ncf.k_in]
            grads[l + 1][:k_next, 1:] = g[:, ncf.k_in:].T
        return total, grads


def kkt_alignment(value_and_grad: Any, weights: list[Tensor], z_mask: list[Tensor]) -> tuple[float, float]:
    """(kappa, N(w_z / ||w_z||)): kappa = grad N . w~_z / ||grad N|| on the w_z coordinates (1 at a KKT point)."""
    w_z = torch.cat([w[m] for w, m in zip(weights, z_mask)])
    norm = w_z.norm()
    unit = [torch.where(m, w / norm, torch.zeros_like(w)) for w, m in zip(weights, z_mask)]
    value, grads = value_and_grad(unit)
    g = torch.cat([gr[m] for gr, m in zip(grads, z_mask)])
    return float(g @ (w_z / norm) / g.norm().clamp_min(1e-300)), float(value)


def neuron_stats(weights: list[Tensor], power: int) -> dict[str, Tensor]:
    """Per G_z neuron (layer l, neuron j >= 1): ||in||, ||out||, ||in||^2 / (p ||out||^2), share of ||w_z||^2.

    Shares are (||in||^2 + ||out||^2) over their sum across G_z, so they add up to 1 (C-block entries count for
    both neurons they connect)."""
    n_in = torch.stack([weights[l][1:].norm(dim=1) for l in range(len(weights) - 1)])  # (layers, width - 1)
    n_out = torch.stack([weights[l + 1][:, 1:].norm(dim=0) for l in range(len(weights) - 1)])
    mass = n_in.square() + n_out.square()
    return {"in": n_in, "out": n_out, "ratio": n_in.square() / (power * n_out.square()).clamp_min(1e-300),
            "share": mass / mass.sum().clamp_min(1e-300)}


def detect_plateaus(loss: list[float], window: int, tol: float,
                    level: Optional[float] = None) -> tuple[Optional[int], Optional[int]]:
    """Indices (i_1, i_2): i_1 is the last point of the first plateau, where the loss drop over the next ``window``
    points first exceeds ``tol`` (relative to ``level``, default the initial loss) and, if ``level`` is given,
    ends below level * (1 - tol) (so the relaxation of the perturbed w_n down to the saddle's loss is no escape);
    i_2 is the first later point where the drop over a window is below ``tol`` again. Drops are relative to a fixed
    level, not to loss[k]: a loss converging to 0 is a plateau too."""
    scale = abs(level if level is not None else loss[0])
    drops = [(loss[k] - loss[k + window]) / scale for k in range(len(loss) - window)]
    below = [level is None or loss[k + window] < level * (1 - tol) for k in range(len(drops))]
    i_1 = next((k for k, d in enumerate(drops) if d > tol and below[k]), None)
    if i_1 is None:
        return None, None
    i_2 = next((k for k in range(i_1 + window, len(drops)) if drops[k] < tol), None)
    return i_1, i_2


@torch.no_grad()
def train_single_neuron_net(small: GrowableNet, x: Tensor, y: Tensor, generator: torch.Generator, start_scale: float,
                            lr: float, steps: int, restarts: int, pga_lr: float, pga_steps: int,
                            newton_steps: int) -> dict[str, float]:
    """Bring the one-neuron-per-layer ``small`` to a stationary point of mean((H - y)^2), as NP iteration 1 would:
    PGA on its constrained NCF (eq. 7), ``start_scale`` times the best restart, ``steps`` GD steps, then Newton
    polishing (``newton_polish``). Returns the loss, the NCF value of y and the final gradient norm."""
    res = pga(first_iteration_objective(small, x, y), single_neuron_dim(small), restarts, pga_lr, pga_steps,
              generator, x.dtype, x.device)
    best = int(res.values.argmax())
    if float(res.values[best]) <= 0:
        raise ValueError("the constrained NCF of y is <= 0 for the one-neuron net: no saddle to build")
    for w, b in zip(small.weights, split_single_neuron(small, res.points[best:best + 1])):
        w.copy_(start_scale * b[0])
    for _ in range(steps):
        _, grads = small.mse_and_grads(x, y)
        torch._foreach_add_(list(small.weights), grads, alpha=-lr)
    newton_polish(small, x, y, newton_steps)
    loss, grads = small.mse_and_grads(x, y)
    return {"saddle_loss": float(loss), "saddle_ncf_y": float(res.values[best]),
            "saddle_grad_norm": float(torch.cat([g.flatten() for g in grads]).norm())}


def newton_polish(small: GrowableNet, x: Tensor, y: Tensor, steps: int) -> None:
    """Newton steps with a backtracking line search on the few weights of a small net, so that it is stationary
    to ~1e-13 (pseudo-inverse: the rescaling symmetry makes the Hessian singular)."""
    sizes, shapes = [w.numel() for w in small.weights], [w.shape for w in small.weights]

    def loss_of(flat: Tensor) -> Tensor:
        out = x
        ws = [c.view(s) for c, s in zip(flat.split(sizes), shapes)]
        for w in ws[:-1]:
            out = small.sigma(out @ w.T)
        return (out @ ws[-1].T - y).square().mean()

    flat = small.flat()
    with torch.enable_grad():
        for _ in range(steps):
            grad = torch.func.grad(loss_of)(flat)
            if float(grad.norm()) < 1e-14:
                break
            evals, evecs = torch.linalg.eigh(torch.func.hessian(loss_of)(flat))
            # |eigenvalues| keep the step a descent direction away from the minimum's basin
            inv = torch.where(evals.abs() > 1e-12 * evals.abs().max(), 1 / evals.abs(), torch.zeros_like(evals))
            step, now = evecs @ (inv * (evecs.T @ grad)), float(loss_of(flat))
            t = 1.0
            while float(loss_of(flat - t * step)) > now and t > 1e-6:
                t /= 2
            if t <= 1e-6:
                break
            flat = flat - t * step
    small.set_flat(flat)
