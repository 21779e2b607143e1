"""The scalar-output ResNet of Gulcu (2019), eq. (2.3), and the activation constants it needs.

    x^1 = sqrt(c_phi/m) phi(W^1 x),   x^h = x^{h-1} + c_res/(H sqrt(m)) phi(W^h x^{h-1}),   f = a^T x^H

All W^h are bias-free ``nn.Linear`` layers with N(0, 1) entries (the scaling lives in the forward pass);
``a`` is a fixed buffer, half +||y||/sqrt(n) and half -||y||/sqrt(n), set from the labels by :meth:`set_output`.
"""
import math
from functools import lru_cache
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh, "softplus": nn.functional.softplus, "relu": torch.relu}


def get_activation(name: str) -> Callable[[Tensor], Tensor]:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


def gaussian_expectation(fn: Callable[[Tensor], Tensor], points: int = 200) -> float:
    """E[fn(g)] for g ~ N(0, 1) by Gauss-Hermite (probabilists') quadrature."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(points)
    values = fn(torch.as_tensor(nodes, dtype=torch.float64)).numpy()
    return float(weights @ values / math.sqrt(2 * math.pi))


@lru_cache(maxsize=None)
def c_phi(name: str) -> float:
    """c_phi = 1/E[phi(g)^2], g ~ N(0, 1): the paper prints 1/E[phi(g)]^2, which is infinite for tanh (docs/resnet_width.md)."""
    phi = get_activation(name)
    return 1.0 / gaussian_expectation(lambda z: phi(z) ** 2)


def derivative(fn: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    """Elementwise fn'(z) by autograd (works for any elementwise activation)."""
    with torch.enable_grad():
        z = z.detach().requires_grad_()
        return torch.autograd.grad(fn(z).sum(), z)[0]


def data_kernel(x: Tensor, activation: str = "tanh", points: int = 40) -> Tensor:
    """Sigma(X) = E_w[phi'(Xw) phi'(Xw)^T] * (X X^T), w ~ N(0, I_d) (Lemma 2.3, eq. 3.10).

    (w.x_i, w.x_j) is a centred Gaussian pair, so each entry is a 2-D Gauss-Hermite sum over
    u = |x_i| g1, v = |x_j| (rho g1 + sqrt(1 - rho^2) g2); one row of pairs at a time keeps memory at O(n points^2).
    """
    phi = get_activation(activation)
    x = x.to(torch.float64)
    nodes, weights = (torch.as_tensor(v, dtype=torch.float64, device=x.device)
                      for v in np.polynomial.hermite_e.hermegauss(points))
    weights = weights / math.sqrt(2 * math.pi)
    norms = x.norm(dim=1)
    gram = x @ x.T
    rho = (gram / torch.outer(norms, norms).clamp_min(1e-300)).clamp(-1.0, 1.0)
    sine = (1 - rho**2).clamp_min(0.0).sqrt()
    kernel = torch.empty_like(gram)
    for i in range(len(x)):
        du = weights * derivative(phi, norms[i] * nodes)  # (Q,)
        v = norms[:, None, None] * (rho[i, :, None, None] * nodes[None, :, None]
                                    + sine[i, :, None, None] * nodes[None, None, :])  # (n, Q, Q)
        kernel[i] = torch.einsum("a,b,jab->j", du, weights, derivative(phi, v))
    return kernel * gram


class GulcuResNet(nn.Module):
    """ResNet (2.3) of width ``width`` and depth ``depth`` (= number of weight matrices H).

    Args:
        in_features: input dimension d.
        width: m, must be even (the output vector is half +, half -).
        depth: H >= 1 weight matrices; H = 1 is the one-hidden-layer net.
        c_res: residual-branch constant, 0 < c_res < 1.
        activation: ``tanh`` (meets every assumption of the paper), ``softplus`` or ``relu``.
        residual: ``False`` gives the fully connected net (2.2), x^h = sqrt(c_phi/m) phi(W^h x^{h-1}).
    """

    def __init__(self, in_features: int = 10, width: int = 64, depth: int = 10, c_res: float = 0.5,
                 activation: str = "tanh", residual: bool = True) -> None:
        super().__init__()
        if in_features < 1:
            raise ValueError(f"in_features must be >= 1, got {in_features}")
        if width < 2 or width % 2:
            raise ValueError(f"width m must be even and >= 2 (a is half +, half -), got {width}")
        if depth < 1:
            raise ValueError(f"depth H must be >= 1, got {depth}")
        if not 0.0 < c_res < 1.0:
            raise ValueError(f"c_res must lie in (0, 1), got {c_res}")
        self.phi, self.activation = get_activation(activation), activation
        self.in_features, self.width, self.depth, self.c_res, self.residual = in_features, width, depth, c_res, residual
        self.c_phi = c_phi(activation)
        self.layers = nn.ModuleList(
            [nn.Linear(in_features, width, bias=False)] + [nn.Linear(width, width, bias=False) for _ in range(depth - 1)])
        for layer in self.layers:
            nn.init.normal_(layer.weight)
        self.register_buffer("a", torch.cat([torch.ones(width // 2), -torch.ones(width // 2)]))

    @torch.no_grad()
    def set_output(self, y: Tensor) -> None:
        """a = +-||y||/sqrt(n), half and half (Sec. 4); not trained."""
        scale = y.norm() / math.sqrt(y.numel())
        half = self.width // 2
        self.a.copy_(torch.cat([torch.ones(half), -torch.ones(half)]).to(self.a) * scale)

    def hidden(self, x: Tensor) -> list[Tensor]:
        """Layer outputs x^1 .. x^H, each (n, m)."""
        m = self.width
        out = [math.sqrt(self.c_phi / m) * self.phi(self.layers[0](x))]
        branch = self.c_res / (self.depth * math.sqrt(m)) if self.residual else math.sqrt(self.c_phi / m)
        for layer in self.layers[1:]:
            step = branch * self.phi(layer(out[-1]))
            out.append(out[-1] + step if self.residual else step)
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.hidden(x)[-1] @ self.a
