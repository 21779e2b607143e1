"""Exact empirical NTK of scalar-output networks, without the n x p Jacobian.

For a layer u = W z (+ b), df_i/dW = delta_i z_i^T with delta_i = df_i/du_i, so its Gram block is
G = (delta delta^T) * (z z^T) (+ delta delta^T for a bias). One backward pass of f.sum() gives every delta_i at
once, because no operation mixes samples. K = sum_h G^h costs O(n^2 m) per layer and O(n m) memory.
Trainable parameters outside ``nn.Linear`` (e.g. a raw weight used as ``x @ W.T``) get their block from
batches of vector-Jacobian rows followed by Jacobian-vector products: exact, O(chunk * p_s) memory, slower.

:class:`NTKMonitor` logs the spectrum, per-layer shares, distances from the initialisation, the Jacobian drift
(from the cross-NTK J_t J_0^T) and the measured per-step contraction against the linearised prediction, for
full-batch gradient descent on 1/2 ||f - y||^2.
"""
import math
from dataclasses import dataclass
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor, nn

from nets.resnet_width import data_kernel


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


class NTKMonitor(Callback):
    """Logs NTK diagnostics for full-batch GD on 1/2 ||f - y||^2 every ``every_n_steps`` steps (as ``ntk/*``).

    Works for any module whose ``net`` (or the module itself) is a scalar-output network (``nn.Linear`` layers are
    fastest; other trainable parameters are handled by :func:`stray_grams`) and whose training batches are the
    full data set ``(x, y)``. At a logged step t it records K_t and r_t; at
    step t + 1 it logs the measured contraction ||r_{t+1}||^2/||r_t||^2 against (1 - eta lambda_min(K_t))^2 and
    the linearisation error ||r_{t+1} - (I - eta K_t) r_t|| / ||r_t||.

    Args:
        every_n_steps: log period in optimiser steps.
        per_layer: also log per-layer NTK shares, ||W^h - W^h_0||_F and ||W^h||_2 / sqrt(rows of W^h).
        data_kernel: also log lambda(X) = lambda_min(Sigma(X)) once, for the net's ``activation`` (nets with one).
    """

    def __init__(self, every_n_steps: int = 100, per_layer: bool = True, data_kernel: bool = True) -> None:
        if every_n_steps < 1:
            raise ValueError(f"NTKMonitor.every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps, self.per_layer, self.data_kernel = every_n_steps, per_layer, data_kernel
        self.theta0: Optional[dict[str, Tensor]] = None
        self.pending: Optional[dict[str, Any]] = None  # step-t quantities awaiting r_{t+1}
        self._init_features: Optional[list[LayerFeatures]] = None
        self._init_kernel: Optional[Tensor] = None
        self._lambda_x: Optional[float] = None
        self._batch: Optional[tuple[Tensor, Tensor]] = None
        self.initial: dict[str, float] = {}  # diagnostics at step 0, kept for results.json
        self.latest: dict[str, float] = {}
        self.figure_spectra: dict[str, Tensor] = {}  # NTK eigenvalues at step 0 and at the end (callbacks/figures.py)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"theta0": self.theta0, "pending": self.pending, "initial": self.initial}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.theta0, self.pending = state_dict["theta0"], state_dict["pending"]
        self.initial = state_dict.get("initial", {})

    def results(self) -> dict[str, float]:
        """For results.json: the diagnostics at step 0 (suffix ``_init``) and at the end of training."""
        return {**{f"{k}_init": v for k, v in self.initial.items()}, **self.latest}

    @staticmethod
    def network(pl_module: pl.LightningModule) -> nn.Module:
        return getattr(pl_module, "net", pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        net = self.network(pl_module)
        if self.theta0 is None:
            self.theta0 = {k: p.detach().clone() for k, p in net.named_parameters() if p.requires_grad}
        self._init_features = self._init_kernel = None

    # ------------------------------------------------------------------ hooks
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        step, (x, y) = trainer.global_step, batch[:2]
        self._batch = (x, y)
        if step % self.every_n_steps == 0:
            self.log_step(trainer, pl_module, x, y, step)
        elif self.pending is not None:
            with torch.no_grad():
                f = self.network(pl_module)(x).reshape(-1)
            self.log_metrics(trainer, self.contraction(f - y.reshape(-1)), step - 1)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._batch is not None:
            self.log_step(trainer, pl_module, *self._batch, trainer.global_step, final=True)

    # ------------------------------------------------------------------ measurements
    def log_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, x: Tensor, y: Tensor, step: int,
                 final: bool = False) -> None:
        net = self.network(pl_module)
        f, features, grams, names = ntk_blocks(net, x)
        r = f - y.reshape(-1)
        if self.pending is not None:
            self.log_metrics(trainer, self.contraction(r), step - 1)
        kernel, metrics = self.measure(net, x, r, features, grams, names)
        self.log_metrics(trainer, metrics, step)
        self.latest = metrics
        if step == 0:
            self.initial = metrics
        if step == 0 or final:
            self.figure_spectra["step 0" if step == 0 else f"step {step}"] = torch.linalg.eigvalsh(kernel).cpu()
        eta = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        self.pending = None if final else {
            "r_norm2": float(r @ r), "predicted": (1 - eta * metrics["ntk/lambda_min"]) ** 2,
            "linear_next": (r - eta * (kernel @ r)).cpu()}

    def contraction(self, r_next: Tensor) -> dict[str, float]:
        pending, self.pending = self.pending, None
        error = (r_next.cpu() - pending["linear_next"]).norm() / math.sqrt(pending["r_norm2"])
        return {"ntk/rate_measured": float(r_next @ r_next) / pending["r_norm2"],
                "ntk/rate_predicted": pending["predicted"], "ntk/linearisation_error": float(error)}

    def reference(self, net: nn.Module, x: Tensor) -> tuple[list[LayerFeatures], Tensor]:
        """Jacobian factors and NTK at theta_0 (recomputed from the stored weights after a resume)."""
        if self._init_features is None:
            theta0 = {k: v.detach().clone().requires_grad_() for k, v in self.theta0.items()}
            state = {**dict(net.named_buffers()), **dict(net.named_parameters()), **theta0}
            _, self._init_features = jacobian_features(_Swapped(net, state), x)
            self._init_kernel = (layer_grams(self._init_features, x=x).sum(0)
                                 + stray_grams(net, x, self.theta0).sum(0))
        return self._init_features, self._init_kernel

    def measure(self, net: nn.Module, x: Tensor, r: Tensor, features: list[LayerFeatures], grams: Tensor,
                names: list[str]) -> tuple[Tensor, dict[str, float]]:
        """K_t and the logged diagnostics."""
        kernel = grams.sum(0)
        lam_min, lam_max = eig_extremes(kernel)
        init_features, init_kernel = self.reference(net, x)
        cross = (layer_grams(features, init_features, x).sum(0)
                 + stray_grams(net, x, parameters_of(net), self.theta0).sum(0))
        # (J_t - J_0)(J_t - J_0)^T from K_t, K_0 and the cross-NTK C = J_t J_0^T
        jac_drift = math.sqrt(max(eig_extremes(kernel - cross - cross.T + init_kernel)[1], 0.0))
        moved = {k: p.detach() - self.theta0[k] for k, p in net.named_parameters() if k in self.theta0}
        total_dist = math.sqrt(sum(float(d.pow(2).sum()) for d in moved.values()))
        metrics = {"ntk/loss": 0.5 * float(r @ r), "ntk/residual_norm": float(r.norm()),
                   "ntk/lambda_min": lam_min, "ntk/lambda_max": lam_max,
                   "ntk/first_layer_lambda_min": eig_extremes(grams[0])[0],
                   "ntk/first_layer_share": float(grams[0].trace() / kernel.trace()),
                   "ntk/theta_distance": total_dist, "ntk/jacobian_drift": jac_drift,
                   "ntk/jacobian_drift_per_distance": jac_drift / total_dist if total_dist > 0 else 0.0,
                   "ntk/relative_ntk_change": float((kernel - init_kernel).norm() / init_kernel.norm())}
        if self.per_layer:
            weights = parameters_of(net)
            for h, (name, gram) in enumerate(zip(names, grams), start=1):
                metrics[f"ntk/share_{h}"] = float(gram.trace() / kernel.trace())
                if name in moved:
                    metrics[f"ntk/distance_{h}"] = float(moved[name].norm())
                weight = weights[name]
                if weight.dim() == 2:
                    spectral = float(torch.linalg.matrix_norm(weight, 2))
                    metrics[f"ntk/weight_norm_{h}"] = spectral / math.sqrt(len(weight))
                    if name in moved:
                        metrics[f"ntk/spectral_distance_{h}"] = float(torch.linalg.matrix_norm(moved[name], 2))
        if self.data_kernel and hasattr(net, "activation"):
            if self._lambda_x is None:
                self._lambda_x = eig_extremes(data_kernel(x, net.activation))[0]
            metrics["ntk/data_kernel_lambda_min"] = self._lambda_x
        return kernel, metrics

    @staticmethod
    def log_metrics(trainer: pl.Trainer, metrics: dict[str, float], step: int) -> None:
        # straight to the loggers: Lightning's log_every_n_steps filter would drop off-period steps
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)


class _Swapped(nn.Module):
    """``net`` evaluated with other parameter values (torch.func.functional_call), keeping its forward hooks."""

    def __init__(self, net: nn.Module, state: dict[str, Tensor]) -> None:
        super().__init__()
        self.net, self.state = net, state

    def forward(self, x: Tensor) -> Tensor:
        return torch.func.functional_call(self.net, self.state, (x,))
