"""Exact empirical NTK of scalar-output networks, without the n x p Jacobian.

For a layer u = W z (+ b), df_i/dW = delta_i z_i^T with delta_i = df_i/du_i, so its Gram block is
G = (delta delta^T) * (z z^T) (+ delta delta^T for a bias). One backward pass of f.sum() gives every delta_i at
once, because no operation mixes samples. K = sum_h G^h costs O(n^2 m) per layer and O(n m) memory.
Trainable parameters outside ``nn.Linear`` (e.g. a raw weight used as ``x @ W.T``) get their block from
batches of vector-Jacobian rows followed by Jacobian-vector products: exact, O(chunk * p_s) memory, slower.

The NTK diagnostics logged during training are in callbacks/resnet_width.py (``NTKMonitor``).
"""
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn


@dataclass
class LayerFeatures:
    """Per-sample factors of one layer's Jacobian: df_i/dW = delta_i z_i^T."""

    name: str
    delta: Tensor  # (n, out)
    z: Tensor  # (n, in), with a column of ones appended when the layer has a trainable bias


def stray_parameters(net: nn.Module) -> list[str]:
    """Names of trainable parameters outside ``nn.Linear`` layers."""
    covered = {id(p) for mod in net.modules() if isinstance(mod, nn.Linear) for p in mod.parameters()}
    return [name for name, p in net.named_parameters() if p.requires_grad and id(p) not in covered]


def jacobian_features(net: nn.Module, x: Tensor) -> tuple[Tensor, list[LayerFeatures]]:
    """f(x) (shape (n,)) and the Jacobian factors of every trainable ``nn.Linear``, from one forward and one
    backward pass (parameters outside ``nn.Linear`` are left to :func:`stray_grams`).

    Raises ValueError if a layer is called twice or gets anything but (n, features) inputs: the factorisation
    would then miss terms.
    """
    linears = {name: mod for name, mod in net.named_modules() if isinstance(mod, nn.Linear)}
    seen: dict[str, tuple[Tensor, Tensor]] = {}

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            if name in seen:
                raise ValueError(f"layer {name} is called twice (weight sharing): the layer-factor NTK misses terms")
            if inputs[0].dim() != 2:
                raise ValueError(f"layer {name} gets inputs of shape {tuple(inputs[0].shape)}; need (n, features)")
            seen[name] = (inputs[0].detach(), output)
        return record

    trainable = {name: mod for name, mod in linears.items() if any(p.requires_grad for p in mod.parameters())}
    handles = [mod.register_forward_hook(hook(name)) for name, mod in trainable.items()]
    try:
        with torch.enable_grad():
            f = net(x)
            if f.numel() != len(x):
                raise ValueError(f"NTK needs a scalar output per sample; got shape {tuple(f.shape)} "
                                 f"for {len(x)} inputs")
            f = f.reshape(-1)
            names = [name for name in trainable if name in seen]
            outputs = [seen[name][1] for name in names]
            deltas = torch.autograd.grad(f.sum(), outputs, allow_unused=True) if outputs else ()
    finally:
        for handle in handles:
            handle.remove()
    features = []
    for name, delta in zip(names, deltas):
        z = seen[name][0]
        if delta is None:
            delta = torch.zeros_like(seen[name][1])
        module = trainable[name]
        if not module.weight.requires_grad:
            z = z[:, :0]
        if module.bias is not None and module.bias.requires_grad:
            z = torch.cat([z, torch.ones_like(z[:, :1])], dim=1)
        features.append(LayerFeatures(name, delta.detach(), z))
    return f.detach(), features


def layer_grams(left: list[LayerFeatures], right: Optional[list[LayerFeatures]] = None,
                x: Optional[Tensor] = None) -> Tensor:
    """Per-layer (cross-)NTK blocks G^h = (delta_l delta_r^T) * (z_l z_r^T), stacked (H, n, n).

    With no layers the result is (0, n, n) shaped like the inputs ``x``.
    """
    right = left if right is None else right
    if not left:
        return x.new_zeros(0, len(x), len(x))
    return torch.stack([(a.delta @ b.delta.T) * (a.z @ b.z.T) for a, b in zip(left, right)])


def stray_grams(net: nn.Module, x: Tensor, left: dict[str, Tensor], right: Optional[dict[str, Tensor]] = None,
                chunk: int = 32) -> Tensor:
    """Blocks J_s(left) J_s(right)^T, stacked (S, n, n), for each trainable parameter s outside ``nn.Linear``.

    ``left``/``right`` map parameter names to values (missing names keep the net's own). Rows of J_s(right) come
    from a batched vector-Jacobian product, ``chunk`` at a time, and are pushed through J_s(left) by a batched
    Jacobian-vector product, so at most ``chunk`` rows of the Jacobian exist at once.
    """
    right = left if right is None else right
    names, n = stray_parameters(net), len(x)
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    blocks = []
    for name in names:
        def f(theta: dict[str, Tensor], p: Tensor) -> Tensor:
            return torch.func.functional_call(net, {**theta, name: p}, (x,)).reshape(-1)

        _, pull = torch.func.vjp(lambda p: f(right, p), right[name].detach())
        push = lambda t: torch.func.jvp(lambda p: f(left, p), (left[name].detach(),), (t,))[1]  # noqa: E731
        columns = [torch.func.vmap(push)(torch.func.vmap(pull)(rows)[0]) for rows in eye.split(chunk)]
        blocks.append(torch.cat(columns).T.detach())
    return torch.stack(blocks) if blocks else x.new_zeros(0, n, n)


def parameters_of(net: nn.Module) -> dict[str, Tensor]:
    return {k: p.detach() for k, p in net.named_parameters()}


def ntk_blocks(net: nn.Module, x: Tensor) -> tuple[Tensor, list[LayerFeatures], Tensor, list[str]]:
    """f(x), the ``nn.Linear`` factors, every block G^h stacked (H, n, n), and each block's parameter name."""
    f, features = jacobian_features(net, x)
    grams = torch.cat([layer_grams(features, x=x), stray_grams(net, x, parameters_of(net))])
    return f, features, grams, [f"{feat.name}.weight" for feat in features] + stray_parameters(net)


def ntk(net: nn.Module, x: Tensor) -> Tensor:
    """K = J J^T, (n, n)."""
    return ntk_blocks(net, x)[2].sum(0)


def eig_extremes(matrix: Tensor) -> tuple[float, float]:
    values = torch.linalg.eigvalsh(matrix)
    return float(values[0]), float(values[-1])


class Swapped(nn.Module):
    """``net`` evaluated with other parameter values (torch.func.functional_call), keeping its forward hooks."""

    def __init__(self, net: nn.Module, state: dict[str, Tensor]) -> None:
        super().__init__()
        self.net, self.state = net, state

    def forward(self, x: Tensor) -> Tensor:
        return torch.func.functional_call(self.net, self.state, (x,))
