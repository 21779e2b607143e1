"""Neural correlation functions (NCF) of Neuron Pursuit and their maximisation on the unit sphere.

All NCFs are mean-normalised over samples (docs/neuron_pursuit.md, "NCF scale": the PGA step is not
scale-free; the paper's sum-NCF equals N times these values).
"""
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from nets.neuron_pursuit.growable import GrowableNet, act_backward, act_values, homogeneous_act

Objective = Callable[[Tensor], Tensor]  # (H, dim) unit rows -> (H,) values


@dataclass
class PGAResult:
    values: Tensor  # (H,) NCF value of each restart
    points: Tensor  # (H, dim) unit-norm maximisers
    kkt: Tensor  # (H,) alignment grad.u / ||grad||, 1 at a positive KKT point
    resampled: int  # dead starts replaced


def _value_and_grad(objective: Objective, u: Tensor) -> tuple[Tensor, Tensor]:
    if hasattr(objective, "value_and_grad"):
        return objective.value_and_grad(u)
    with torch.enable_grad():
        u = u.detach().requires_grad_(True)
        values = objective(u)
        # restarts are independent rows, so the gradient of the sum is each row's own gradient
        (grad,) = torch.autograd.grad(values.sum(), u)
    return values.detach(), grad


def unit_rows(n: int, dim: int, generator: torch.Generator, dtype: torch.dtype, device: torch.device) -> Tensor:
    u = torch.randn(n, dim, generator=generator, dtype=dtype, device="cpu").to(device)
    return u / u.norm(dim=1, keepdim=True)


def pga(objective: Objective, dim: int, restarts: int, lr: float, steps: int, generator: torch.Generator,
        dtype: torch.dtype = torch.float64, device: torch.device = torch.device("cpu"),
        max_resample: int = 100) -> PGAResult:
    """Projected gradient ascent u <- (u + lr grad) / ||.|| from ``restarts`` uniform unit starts, batched.

    Starts whose gradient is exactly zero (dead ReLU units) never move, so they are redrawn first.
    """
    u = unit_rows(restarts, dim, generator, dtype, device)
    resampled = 0
    for _ in range(max_resample):
        dead = (_value_and_grad(objective, u)[1] == 0).all(dim=1)
        if not dead.any():
            break
        resampled += int(dead.sum())
        u[dead] = unit_rows(int(dead.sum()), dim, generator, dtype, device)
    for _ in range(steps):
        u = u + lr * _value_and_grad(objective, u)[1]
        u = u / u.norm(dim=1, keepdim=True)
    values, grad = _value_and_grad(objective, u)
    kkt = (grad * u).sum(1) / grad.norm(dim=1).clamp_min(torch.finfo(dtype).tiny)
    return PGAResult(values, u, kkt, resampled)


# ---------------------------------------------------------------------- iteration 1: NCF of the 1-neuron net
def split_single_neuron(net: GrowableNet, u: Tensor) -> list[Tensor]:
    """Cut (H, dim) rows into the weights of a one-neuron-per-layer net: (H,1,d), (H,1,1)..., (H,n_out,1)."""
    sizes = [net.in_features] + [1] * (net.depth - 2) + [net.out_features]
    parts = u.split(sizes, dim=1)
    return [parts[0][:, None, :]] + [p[:, :, None] for p in parts[1:]]


def single_neuron_dim(net: GrowableNet) -> int:
    return net.in_features + net.depth - 2 + net.out_features


def first_iteration_objective(net: GrowableNet, x: Tensor, y: Tensor) -> Objective:
    """u -> <Y, H(X; u)> / N for the one-neuron-per-layer network (eq. 7)."""

    def objective(u: Tensor) -> Tensor:
        ws = split_single_neuron(net, u)
        h = torch.einsum("nd,hd->hn", x, ws[0][:, 0, :])  # (H, N) pre-activation of the single neuron
        for w in ws[1:-1]:
            h = net.sigma(h) * w[:, 0, :]
        # <Y, h w_L^T> without forming the (H, N, n_out) outputs
        return (net.sigma(h) * (ws[-1][:, :, 0] @ y.T)).sum(1) / len(x)

    return objective


# ---------------------------------------------------------------------- growth iterations
def growth_problems(net: GrowableNet, x: Tensor, y: Tensor) -> list[tuple[Tensor, Tensor]]:
    """(G_{l-1}, C_l) for every hidden layer l from one forward and one backward pass (the
    efficient exact form of H_{1,l} of Sec. 5 with C_l = -dL/dz_{l+1}; docs/neuron_pursuit.md, "Pieces").

    C_l = -dL/dz_{l+1} / N with L = 1/2 ||H - Y||^2, so the candidate NCF of layer l is
    N_l(a, b) = sum_i (C_l[i] . b) s(a . G_{l-1}[i]).
    """
    with torch.enable_grad():
        acts, pre = net.forward_cached(x)
        loss = 0.5 * (pre[-1] - y).square().sum()
        grads = torch.autograd.grad(loss, pre[1:])
    return [(acts[l].detach(), -grads[l].detach() / len(x)) for l in range(net.depth - 1)]


class GrowthNCF:
    """u = (a, b) -> sum_i (c_i . b) s(a . g_i), batched over restarts, with its gradient in closed form."""

    def __init__(self, g: Tensor, c: Tensor, alpha: float, power: int) -> None:
        self.g, self.c, self.alpha, self.power = g, c, alpha, power
        self.k_in = g.shape[1]

    def __call__(self, u: Tensor) -> Tensor:
        a, b = u[:, :self.k_in], u[:, self.k_in:]
        return ((self.c @ b.T) * homogeneous_act(self.g @ a.T, self.alpha, self.power)).sum(0)

    def value_and_grad(self, u: Tensor) -> tuple[Tensor, Tensor]:
        # explicit gradient: PGA runs thousands of steps, and autograd's per-op overhead dominates them
        a, b = u[:, :self.k_in], u[:, self.k_in:]
        cb, z = self.c @ b.T, self.g @ a.T  # (N, H)
        act = act_values(z, self.alpha, self.power)
        grad = torch.cat([act_backward(cb, z, self.alpha, self.power).T @ self.g, act.T @ self.c], 1)
        return (cb * act).sum(0), grad


def growth_objective(g: Tensor, c: Tensor, alpha: float, power: int) -> GrowthNCF:
    """The candidate NCF of one hidden layer (see ``growth_problems``)."""
    return GrowthNCF(g, c, alpha, power)
