"""``NTKMonitor``: NTK diagnostics during full-batch gradient descent on 1/2 ||f - y||^2 (docs/resnet_width.md).

Logs the spectrum, per-layer shares, distances from the initialisation, the Jacobian drift (from the cross-NTK
J_t J_0^T) and the measured per-step contraction against the linearised prediction. The NTK itself is computed by
layer factors in nets/resnet_width/ntk.py.
"""
import math
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor, nn

from nets.resnet_width.net import GulcuResNet, data_kernel
from nets.resnet_width.ntk import (LayerFeatures, Swapped, eig_extremes, jacobian_features, layer_grams,
                                   ntk_blocks, parameters_of, stray_grams)
from nets.resnet_width.theory import alpha_0


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
        data_kernel: also log lambda(X) = lambda_min(Sigma(X)) for the net's ``activation`` (nets with one) and,
            for the ResNet (2.3), the bound alpha_0^2 of (3.21) on lambda_min(K_0) (delta' = 0, B = 1).
    """

    def __init__(self, every_n_steps: int = 100, per_layer: bool = True, data_kernel: bool = True) -> None:
        if every_n_steps < 1:
            raise ValueError(f"NTKMonitor.every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps, self.per_layer, self.data_kernel = every_n_steps, per_layer, data_kernel
        self.theta0: Optional[dict[str, Tensor]] = None
        self.pending: Optional[dict[str, Any]] = None  # step-t quantities awaiting r_{t+1}
        self._init_features: Optional[list[LayerFeatures]] = None
        self._init_kernel: Optional[Tensor] = None
        self._data_kernel_metrics: Optional[dict[str, float]] = None  # lambda(X) and alpha_0^2: data only
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
        kernel, metrics = self.measure(net, x, y, r, features, grams, names)
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
            _, self._init_features = jacobian_features(Swapped(net, state), x)
            self._init_kernel = (layer_grams(self._init_features, x=x).sum(0)
                                 + stray_grams(net, x, self.theta0).sum(0))
        return self._init_features, self._init_kernel

    def measure(self, net: nn.Module, x: Tensor, y: Tensor, r: Tensor, features: list[LayerFeatures], grams: Tensor,
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
            if self._data_kernel_metrics is None:
                self._data_kernel_metrics = self.data_kernel_metrics(net, x, y)
            metrics.update(self._data_kernel_metrics)
        return kernel, metrics

    @staticmethod
    def data_kernel_metrics(net: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
        lambda_x = eig_extremes(data_kernel(x, net.activation))[0]
        metrics = {"ntk/data_kernel_lambda_min": lambda_x}
        if isinstance(net, GulcuResNet):
            metrics["ntk/alpha0_sq_bound"] = alpha_0(float(y.norm()), len(x), net.c_phi, net.c_res, lambda_x) ** 2
        return metrics

    @staticmethod
    def log_metrics(trainer: pl.Trainer, metrics: dict[str, float], step: int) -> None:
        # straight to the loggers: Lightning's log_every_n_steps filter would drop off-period steps
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
