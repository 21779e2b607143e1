"""Growable bias-free feed-forward network H(x) = W_L s(W_{L-1} s(... s(W_1 x))), s(x) = max(x, alpha x)^p."""
from typing import Optional, Sequence

import torch
from torch import Tensor, nn


def homogeneous_act(x: Tensor, alpha: float, power: int) -> Tensor:
    """max(x, alpha x)^power; positively homogeneous of degree ``power``.

    Autograd through ``torch.maximum`` gives slope 1/2 at an exact tie x = 0 for ReLU (docs/neuron_pursuit.md,
    "Known limitation"); the explicit gradients (``act_backward``) use 0 there.
    """
    y = x if alpha == 1.0 else torch.maximum(x, alpha * x)
    return y if power == 1 else y.pow(power)


def act_values(x: Tensor, alpha: float, power: int) -> Tensor:
    """``homogeneous_act`` for paths without autograd: ReLU as one clamp instead of maximum(x, 0 * x)."""
    if alpha == 0.0 and power == 1:
        return x.clamp_min(0)
    return homogeneous_act(x, alpha, power)


def homogeneous_act_grad(x: Tensor, alpha: float, power: int) -> Tensor:
    """Derivative p max(x, alpha x)^(p-1) * (1 if x > 0 else alpha), 0 at the ReLU kink like autograd."""
    slope = torch.where(x > 0, 1.0, alpha).to(x.dtype)
    return slope if power == 1 else power * homogeneous_act(x, alpha, power - 1) * slope


def act_backward(delta: Tensor, x: Tensor, alpha: float, power: int) -> Tensor:
    """delta * s'(x) (s'(0) = alpha as in ``homogeneous_act_grad``). For p = 1 without forming s'(x): a scalar
    ``torch.where`` builds and converts a whole slope tensor, which made it the costliest op of a GD step."""
    if power > 1:
        return delta * homogeneous_act_grad(x, alpha, power)
    if alpha == 1.0:
        return delta
    if alpha == 0.0:
        return delta.masked_fill(x <= 0, 0.0)
    return torch.where(x > 0, delta, alpha * delta)


class GrowableNet(nn.Module):
    """Bias-free network whose hidden widths grow one neuron at a time.

    Args:
        in_features: input dimension d (append a constant-1 feature to the data where a bias is needed).
        out_features: output dimension (1 for scalar regression).
        depth: number of weight matrices L (L - 1 hidden layers).
        alpha: leak of the activation (0 = ReLU, 1 = pure power x^p).
        power: activation power p.
        widths: starting hidden widths (default one neuron per hidden layer).
        dtype: parameter dtype (float64 by default: new neurons are O(delta) small).
    """

    def __init__(self, in_features: int, out_features: int = 1, depth: int = 3, alpha: float = 0.0, power: int = 1,
                 widths: Optional[Sequence[int]] = None, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"in_features and out_features must be positive, got {in_features}, {out_features}")
        if depth < 2:
            raise ValueError(f"depth must be >= 2 (at least one hidden layer), got {depth}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if power < 1 or int(power) != power:
            raise ValueError(f"power must be a positive integer, got {power}")
        widths = list(widths) if widths is not None else [1] * (depth - 1)
        if len(widths) != depth - 1 or min(widths) < 1:
            raise ValueError(f"widths must list {depth - 1} positive hidden widths, got {widths}")
        self.in_features, self.out_features, self.depth = in_features, out_features, depth
        self.alpha, self.power = float(alpha), int(power)
        self.weights = nn.ParameterList()
        self.resize(widths, dtype=dtype)

    # ------------------------------------------------------------------ shape
    @property
    def widths(self) -> list[int]:
        return [w.shape[0] for w in self.weights[:-1]]

    def shapes(self, widths: Sequence[int]) -> list[tuple[int, int]]:
        sizes = [self.in_features, *widths, self.out_features]
        return [(sizes[i + 1], sizes[i]) for i in range(self.depth)]

    def resize(self, widths: Sequence[int], dtype: Optional[torch.dtype] = None) -> None:
        """Replace every weight by zeros of the shapes for ``widths`` (used before loading a grown state dict)."""
        ref = self.weights[0] if len(self.weights) else None
        dtype = dtype or ref.dtype
        device = ref.device if ref is not None else None
        self.weights = nn.ParameterList([nn.Parameter(torch.zeros(s, dtype=dtype, device=device))
                                         for s in self.shapes(widths)])

    def flat(self) -> Tensor:
        """All weights as one detached vector (W_1 row-major first)."""
        return torch.cat([w.detach().flatten() for w in self.weights])

    @torch.no_grad()
    def set_flat(self, flat: Tensor) -> None:
        """Copy a vector laid out as ``flat()`` into the weights."""
        for w, chunk in zip(self.weights, flat.split([w.numel() for w in self.weights])):
            w.copy_(chunk.view_as(w))

    def sigma(self, x: Tensor) -> Tensor:
        return homogeneous_act(x, self.alpha, self.power)

    @property
    def homogeneity(self) -> int:
        """Degree L' = 1 + p + ... + p^{L-1} of H in all weights jointly."""
        return sum(self.power ** k for k in range(self.depth))

    # ------------------------------------------------------------------ function
    def forward(self, x: Tensor) -> Tensor:
        for w in self.weights[:-1]:
            x = self.sigma(x @ w.T)
        return x @ self.weights[-1].T

    def forward_cached(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Activations g_0..g_{L-1} and pre-activations z_1..z_L (z_L = H); z keep their autograd graph."""
        acts, pre = [x], []
        for w in self.weights:
            pre.append(acts[-1] @ w.T)
            acts.append(self.sigma(pre[-1]))
        return acts[:-1], pre

    @torch.no_grad()
    def mse_and_grads(self, x: Tensor, y: Tensor) -> tuple[Tensor, list[Tensor]]:
        """mean((H(x) - y)^2) and its gradient for every weight, by explicit backpropagation.

        Full-batch GD on these tiny nets is dominated by per-op overhead; skipping the autograd graph
        makes a GD step several times faster (benchmarks/neuron_pursuit.py).
        """
        acts, pre = [x], []
        for w in self.weights[:-1]:
            pre.append(acts[-1] @ w.T)
            acts.append(act_values(pre[-1], self.alpha, self.power))
        err = acts[-1] @ self.weights[-1].T - y
        delta = err * (2.0 / err.numel())
        grads = [None] * self.depth
        for l in range(self.depth - 1, -1, -1):
            grads[l] = delta.T @ acts[l]
            if l > 0:
                delta = act_backward(delta @ self.weights[l], pre[l - 1], self.alpha, self.power)
        return err.square().mean(), grads

    # ------------------------------------------------------------------ growth
    @torch.no_grad()
    def add_neuron(self, layer: int, a: Tensor, b: Tensor) -> None:
        """Append a neuron to hidden layer ``layer`` (1-based): row ``a`` of W_l, column ``b`` of W_{l+1}."""
        if not 1 <= layer <= self.depth - 1:
            raise ValueError(f"hidden layer must be in 1..{self.depth - 1}, got {layer}")
        w_in, w_out = self.weights[layer - 1], self.weights[layer]
        self.weights[layer - 1] = nn.Parameter(torch.cat([w_in, a.to(w_in).view(1, -1)], 0))
        self.weights[layer] = nn.Parameter(torch.cat([w_out, b.to(w_out).view(-1, 1)], 1))

    @torch.no_grad()
    def balance(self, sweeps: int = 1000, tol: float = 1e-12) -> int:
        """Function-preserving rescaling to ||in||^2 = p ||out||^2 for every hidden neuron; returns the sweeps used.

        Minimises the total squared weight norm over the rescaling symmetry (Saul 2023, p = q = 2, for p = 1):
        for neuron j of layer l the exact minimiser of c^2 n_in^2 + c^-2p n_out^2 is
        c = (p n_out^2 / n_in^2)^(1/(2p+2)); the row is scaled by c and the column by c^-p, which leaves
        H unchanged since s(cz) = c^p s(z). Rescaling layer l changes the norms of its neighbours, so layers
        are swept until every |log ratio| < ``tol`` (coordinate descent on a convex function of the log-scales).
        For p >= 2 the same minimiser gives ||in||^2 = p ||out||^2, the balance of the paper's Lemma 3.
        """
        p = self.power
        for sweep in range(1, sweeps + 1):
            worst = 0.0
            for l in range(self.depth - 1):
                n_in = self.weights[l].norm(dim=1)
                n_out = self.weights[l + 1].norm(dim=0)
                live = (n_in > 0) & (n_out > 0)  # a dead neuron (zero in or out) has no finite balanced scale
                ratio = torch.where(live, p * n_out.square() / n_in.square().clamp_min(1e-300), torch.ones_like(n_in))
                worst = max(worst, float(ratio.log().abs().max()))
                c = ratio ** (1 / (2 * p + 2))
                self.weights[l].mul_(c[:, None])
                self.weights[l + 1].mul_(c.pow(-p)[None, :])
            if worst < tol:
                return sweep
        return sweeps

    def balance_ratios(self) -> list[Tensor]:
        """||in||^2 / (p ||out||^2) per hidden neuron and layer (1 when balanced)."""
        return [self.weights[l].norm(dim=1).square() / (self.power * self.weights[l + 1].norm(dim=0).square())
                for l in range(self.depth - 1)]
