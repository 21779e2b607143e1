"""Gradient descent started near a sparse saddle (Neuron Pursuit paper, Sec. 3-4, Figs. 1-4; spec 10.8)."""
import inspect
from typing import Any, Optional

import torch
from torch import Tensor

from nets.neuron_pursuit.ncf import first_iteration_objective, pga, single_neuron_dim, split_single_neuron
from lit_modules.neuron_pursuit import NeuronPursuitModule
from nets.neuron_pursuit.growable import GrowableNet


class SaddleDynamicsModule(NeuronPursuitModule):
    """Full-batch GD on a width-``width`` net started at (w_bar_n + delta n, delta z) near a sparse saddle.

    At fit start (once; a resumed run restores it from the checkpoint) the saddle is built as spec 10.8 says:
    a one-neuron-per-layer net is started at ``pre_delta`` times the dominant KKT point of its constrained NCF
    (NP iteration 1), trained by ``pre_steps`` GD steps and polished by Newton steps to a near-zero gradient; it is
    embedded as neuron 1 of every hidden layer of the wide net (all other rows/columns zero), then w_n is moved
    by delta n and the zero block set to delta z (n, z random unit vectors from ``saddle_seed``).
    The GD stage itself is ``NeuronPursuitModule``'s (``gd_steps_per_batch`` steps per Lightning step).

    Args:
        width: hidden width of every hidden layer (10 in Figs. 1-4).
        delta: perturbation size of w_n and w_z.
        pre_delta, pre_lr, pre_steps: iteration-1 scale, GD step and GD steps of the one-neuron net.
        pre_restarts, pre_pga_lr, pre_pga_steps: PGA for its constrained NCF.
        pre_newton_steps: Newton polishing steps (0 = none).
        saddle_seed: seed of the PGA starts and of n, z.
        Other arguments as in ``NeuronPursuitModule``.
    """

    def __init__(self, in_features: int = 20, out_features: int = 1, depth: int = 3, alpha: float = 1.0,
                 power: int = 2, width: int = 10, lr: float = 0.01, gd_steps_per_batch: int = 100,
                 delta: float = 0.01, pre_delta: float = 0.5, pre_lr: Optional[float] = None, pre_steps: int = 20000,
                 pre_restarts: int = 10, pre_pga_lr: float = 0.2, pre_pga_steps: int = 2500,
                 pre_newton_steps: int = 20, saddle_seed: int = 0) -> None:
        if width < 2:
            raise ValueError(f"model.width must be >= 2 (one saddle neuron plus at least one zero neuron), got {width}")
        if delta <= 0 or pre_delta <= 0:
            raise ValueError(f"model.delta and model.pre_delta must be positive, got {delta}, {pre_delta}")
        if pre_steps < 0 or pre_newton_steps < 0:
            raise ValueError("model.pre_steps and model.pre_newton_steps must be >= 0")
        super().__init__(in_features=in_features, out_features=out_features, depth=depth, alpha=alpha, power=power,
                         widths=[width] * (depth - 1), lr=lr, gd_steps_per_batch=gd_steps_per_batch)
        # LightningCLI hands save_hyperparameters() this class's config only; the parent reads its own hparams
        parent = inspect.signature(NeuronPursuitModule.__init__).parameters.values()
        for p in parent:
            if p.default is not inspect.Parameter.empty:
                self.hparams.setdefault(p.name, p.default)
        self.hparams["widths"] = [width] * (depth - 1)
        numel = sum(w.numel() for w in self.net.weights)
        # the saddle is part of the state dict, so a resumed run does not rebuild it
        self.register_buffer("w_bar", torch.zeros(numel, dtype=torch.float64))
        self.register_buffer("n_mask", self._n_mask())
        self.register_buffer("built", torch.zeros((), dtype=torch.bool))
        self.saddle_info: dict[str, Any] = {}

    def _n_mask(self) -> Tensor:
        """True on w_n: neuron 1 of every hidden layer (row 0 of W_1, entry [0, 0] of W_2..W_{L-1}, column 0 of W_L)."""
        masks = [torch.zeros(w.shape, dtype=torch.bool) for w in self.net.weights]
        masks[0][0, :] = True
        for m in masks[1:-1]:
            m[0, 0] = True
        masks[-1][:, 0] = True
        return torch.cat([m.flatten() for m in masks])

    # ------------------------------------------------------------------ flat views
    def flat_weights(self) -> Tensor:
        return torch.cat([w.detach().flatten() for w in self.net.weights])

    @torch.no_grad()
    def set_flat(self, flat: Tensor) -> None:
        for w, chunk in zip(self.net.weights, flat.split([w.numel() for w in self.net.weights])):
            w.copy_(chunk.view_as(w))

    def restricted_net(self) -> GrowableNet:
        """The one-neuron-per-layer net with the saddle's w_bar_n (the saddle NCF is its growth NCF)."""
        h = self.hparams
        small = GrowableNet(h.in_features, h.out_features, h.depth, h.alpha, h.power, dtype=self.w_bar.dtype)
        self.set_small(small, self.w_bar[self.n_mask])
        return small.to(self.device)

    @staticmethod
    @torch.no_grad()
    def set_small(small: GrowableNet, flat_n: Tensor) -> None:
        for w, chunk in zip(small.weights, flat_n.split([w.numel() for w in small.weights])):
            w.copy_(chunk.view_as(w))

    # ------------------------------------------------------------------ saddle construction
    def on_fit_start(self) -> None:
        if not bool(self.built):
            self.build_saddle(*self.prepare(*self.trainer.datamodule.train_tensors()))

    @torch.no_grad()
    def build_saddle(self, x: Tensor, y: Tensor) -> None:
        """Train the one-neuron net to a stationary point, embed it, and perturb (see the class docstring)."""
        h = self.hparams
        gen = torch.Generator().manual_seed(h.saddle_seed)
        small = GrowableNet(h.in_features, h.out_features, h.depth, h.alpha, h.power).to(x.device)
        res = pga(first_iteration_objective(small, x, y), single_neuron_dim(small), h.pre_restarts, h.pre_pga_lr,
                  h.pre_pga_steps, gen, x.dtype, x.device)
        best = int(res.values.argmax())
        if float(res.values[best]) <= 0:
            raise ValueError("the constrained NCF of y is <= 0 for the one-neuron net: no saddle to build")
        for w, b in zip(small.weights, split_single_neuron(small, res.points[best:best + 1])):
            w.copy_(h.pre_delta * b[0])
        lr = h.pre_lr or h.lr
        for _ in range(h.pre_steps):
            _, grads = small.mse_and_grads(x, y)
            torch._foreach_add_(list(small.weights), grads, alpha=-lr)
        self._polish(small, x, y)
        loss, grads = small.mse_and_grads(x, y)
        flat_n = torch.cat([w.flatten() for w in small.weights])
        w_bar = torch.zeros_like(self.w_bar)
        w_bar[self.n_mask] = flat_n
        self.w_bar.copy_(w_bar)
        n = torch.randn(int(self.n_mask.sum()), generator=gen, dtype=w_bar.dtype).to(w_bar.device)
        z = torch.randn(int((~self.n_mask).sum()), generator=gen, dtype=w_bar.dtype).to(w_bar.device)
        start = w_bar.clone()
        start[self.n_mask] += h.delta * n / n.norm()
        start[~self.n_mask] = h.delta * z / z.norm()
        self.set_flat(start)
        self.built.fill_(True)
        self.saddle_info = {"saddle_loss": float(loss), "saddle_ncf_y": float(res.values[best]),
                            "saddle_grad_norm": float(torch.cat([g.flatten() for g in grads]).norm()),
                            "saddle_norm": float(flat_n.norm())}

    def _polish(self, small: GrowableNet, x: Tensor, y: Tensor) -> None:
        """Newton steps with a backtracking line search on the few weights of the one-neuron net, so that w_bar_n
        is stationary to ~1e-13 (pseudo-inverse: the rescaling symmetry makes the Hessian singular)."""
        sizes, shapes = [w.numel() for w in small.weights], [w.shape for w in small.weights]

        def loss_of(flat: Tensor) -> Tensor:
            out = x
            ws = [c.view(s) for c, s in zip(flat.split(sizes), shapes)]
            for w in ws[:-1]:
                out = small.sigma(out @ w.T)
            return (out @ ws[-1].T - y).square().mean()

        flat = torch.cat([w.detach().flatten() for w in small.weights])
        with torch.enable_grad():
            for _ in range(self.hparams.pre_newton_steps):
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
        self.set_small(small, flat)

    # ------------------------------------------------------------------ results
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["saddle_info"] = self.saddle_info

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.saddle_info = checkpoint.get("saddle_info", {})

    def results(self) -> dict[str, Any]:
        return {**super().results(), **self.saddle_info}
