"""Gauss-Newton / Levenberg-Marquardt dynamics of Cayci (arXiv:2412.14031): full-batch Euler steps of flow (1)
(``GaussNewtonModule``), and Levenberg-Marquardt as a general optimizer (``LevenbergMarquardtModule``).

    f(w) = phi(X; w) - phi(X; w_init)                      (nullifying initialisation: a frozen copy of the net)
    loss g(alpha f) = ||alpha f - y||^2,  grad g = 2 r,  r = alpha f - y
    w <- w - (dt / alpha) [(1 - rho) J^T J + rho I]^-1 J^T grad g        J = Df (of the UNSCALED f)

rho = 0 is undamped GN (the paper's experiment), rho = 1 the gradient-flow baseline of Fig. 3, and with ``eta``
set the step is the discrete update (13), w <- w - eta v. Manual optimisation; no torch optimiser.
"""
import copy
from typing import Any, Literal, Optional

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_modules.supervised import SupervisedModule
from nets.gauss_newton.solver import (METHODS, ON_SINGULAR, AnalyticJacobianNet, Damping, DenseJacobian,
                                      FuncJacobian, Jacobian, MarquardtSchedule, SingularSystemError, gn_direction,
                                      per_sample_jacobian, softmax_sqrt_factor)
from nets.gauss_newton.theory import theory_constants


class StepCounter(torch.optim.Optimizer):
    """Changes nothing: the update is manual, and calling ``step()`` is how Lightning counts it as a step."""

    def __init__(self, params: Any, lr: float) -> None:
        super().__init__(params, {"lr": lr})  # the parameter step scale, for LearningRateMonitor

    def step(self, closure: Any = None) -> None:
        return None


class GaussNewtonModule(pl.LightningModule):
    """Full-batch GN/LM Euler integrator for a scalar-output net on a regression batch.

    Args:
        net: the network (e.g. ``nets.TwoLayerTanh``); all its parameters are trained.
        alpha: output scale alpha of the model alpha (phi(w) - phi(w_init)).
        dt: Euler step of flow (1); the parameter step is (dt / alpha) v.
        eta: if set, the discrete update (13) w <- w - eta v instead (dt is then only the time axis).
        rho: convex damping in [0, 1]: 0 = Gauss-Newton, 1 = gradient flow.
        method: linear solver (``lstsq``/``primal``/``dual``/``cg``/``cg_dual``, see ``nets.gauss_newton.solver``).
        jacobian: ``analytic`` (the net's ``jacobian(x)``), ``autograd`` (vmap of jacrev) or, with a CG
            method, ``matrix_free`` (JVP/VJP; J never formed).
        on_singular: ``error``, ``stop`` (end training), ``pinv``, ``lstsq`` or ``damp`` (re-solve with
            ``fallback_rho``), applied when the system is numerically singular at relative tolerance ``rcond``.
        exit_threshold: the exit time T is the first step with lambda_min(J^T J) below this.
        diagnostics: log the SVD-based spectra and Riemannian gradient every step (needs dense J).
    """

    figure_curves = {"λ_min": ("train/lambda_min",), "‖grad‖": ("train/grad_norm", "train/riem_grad_norm")}

    def __init__(self, net: nn.Module, alpha: float = 8.0, dt: float = 0.01, eta: Optional[float] = None,
                 rho: float = 0.0, method: str = "lstsq",
                 jacobian: Literal["analytic", "autograd", "matrix_free"] = "analytic", on_singular: str = "error",
                 fallback_rho: float = 1e-6, rcond: Optional[float] = None, exit_threshold: float = 1e-8,
                 diagnostics: bool = True, cg_tol: float = 1e-12) -> None:
        super().__init__()
        if not alpha > 0 or not dt > 0 or (eta is not None and not eta > 0):
            raise ValueError(f"alpha, dt and eta must be positive, got alpha={alpha}, dt={dt}, eta={eta}")
        Damping.convex(rho)  # validates rho
        if method not in METHODS:
            raise ValueError(f"model.method must be one of {', '.join(METHODS)}, got {method!r}")
        if on_singular not in (*ON_SINGULAR, "stop"):
            raise ValueError(f"model.on_singular must be one of {', '.join((*ON_SINGULAR, 'stop'))}, got {on_singular!r}")
        if jacobian == "analytic" and not hasattr(net, "jacobian"):
            raise ValueError(f"{type(net).__name__} has no closed-form jacobian(); use model.jacobian=autograd")
        if jacobian == "matrix_free" and (method not in ("cg", "cg_dual") or diagnostics):
            raise ValueError("model.jacobian=matrix_free needs model.method=cg|cg_dual and model.diagnostics=false")
        self.save_hyperparameters(ignore=["net"])
        self.automatic_optimization = False
        self.net = net
        self.net0 = copy.deepcopy(net).requires_grad_(False)  # w_init: f(w) = phi(w) - phi(w_init)
        self.monitor = None  # test the last weights
        self.exit_step: Optional[int] = None
        self.fallback_step: Optional[int] = None
        self.theory: Optional[dict[str, float]] = None

    # ------------------------------------------------------------------ model
    def theta(self) -> Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.net.parameters()])

    def phi(self, theta: Tensor, x: Tensor) -> Tensor:
        """phi(x; theta) with the net's parameters replaced by the flat vector theta."""
        params, i = {}, 0
        for name, p in self.net.named_parameters():
            params[name] = theta[i:i + p.numel()].view_as(p)
            i += p.numel()
        return torch.func.functional_call(self.net, params, (x,)).reshape(-1)

    def forward(self, x: Tensor) -> Tensor:
        return self.hparams.alpha * (self.net(x).reshape(-1) - self.net0(x).reshape(-1))

    def make_jacobian(self, x: Tensor) -> Jacobian:
        kind, theta = self.hparams.jacobian, self.theta()
        if kind == "analytic":
            return DenseJacobian(self.net.jacobian(x))
        if kind == "matrix_free":
            return FuncJacobian(lambda t: self.phi(t, x), theta)
        return per_sample_jacobian(lambda t, xi: self.phi(t, xi.unsqueeze(0)), theta, x)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        hp, step = self.hparams, self.global_step
        with torch.no_grad():
            r = self(x) - y
        grad_out = 2 * r  # gradient of g(psi) = ||psi - y||^2 at psi = alpha f
        jac = self.make_jacobian(x)
        if self.theory is None:  # recomputed from the frozen initial net after a resume, so it is not checkpointed
            self.theory = (theory_constants(self.net0.jacobian(x), x, y, width=self.net0.weight.shape[0])
                           if hasattr(self.net0, "jacobian") else {})
        logs = {"train/loss": (r @ r).detach(), "train/t": torch.tensor(step * hp.dt),
                "train/w_dist": torch.linalg.vector_norm(self.theta() - self.theta0())}
        if hp.diagnostics:
            logs.update(self.spectral_logs(jac.dense(), grad_out))
            if self.exit_step is None and logs["train/lambda_min"] < hp.exit_threshold:
                self.exit_step = step
        try:
            v, info = gn_direction(jac, grad_out, Damping.convex(hp.rho), method=hp.method,
                                   on_singular="error" if hp.on_singular == "stop" else hp.on_singular,
                                   fallback_rho=hp.fallback_rho, rcond=hp.rcond, cg_tol=hp.cg_tol)
        except SingularSystemError:
            if hp.on_singular != "stop":
                raise
            self.fallback_step = step if self.fallback_step is None else self.fallback_step
            self.trainer.should_stop = True
            self.optimizers().step()
            self.log_dict(logs)
            return logs["train/loss"]
        if info.fallback and self.fallback_step is None:
            self.fallback_step = step
            self.print(f"step {step}: singular GN system, fallback '{info.fallback}' used from here on when needed")
        logs["train/fallback"] = torch.tensor(float(info.fallback is not None))
        if info.cg_iters:
            logs["train/cg_iters"] = torch.tensor(float(info.cg_iters))
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(self.theta() - self.step_scale() * v, self.net.parameters())
        self.optimizers().step()
        self.log_dict(logs)
        return logs["train/loss"]

    def spectral_logs(self, J: Tensor, grad_out: Tensor) -> dict[str, Tensor]:
        """lambda_min of J^T J and of K = J J^T (one is 0 unless p = n), lambda_max, rank, and the Riemannian
        gradient P grad g through an orthonormal basis of Im(J) (docs/gauss_newton.md)."""
        U, S, _ = torch.linalg.svd(J, full_matrices=False)
        rank = int((S > S[0] * max(J.shape) * torch.finfo(J.dtype).eps).sum())
        coeff = U[:, :rank].T @ grad_out
        tangent = torch.linalg.vector_norm(coeff)
        normal = torch.linalg.vector_norm(grad_out - U[:, :rank] @ coeff)
        n, p = J.shape
        smallest = S[-1] ** 2  # lambda_min of the smaller Gram matrix; the larger one is singular
        return {"train/lambda_min": smallest if p <= n else smallest * 0, "train/lambda_max": S[0] ** 2,
                "train/lambda_min_ntk": smallest if n <= p else smallest * 0, "train/rank": torch.tensor(float(rank)),
                "train/riem_grad_norm": tangent, "train/normal_grad_norm": normal,
                "train/grad_norm": self.hparams.alpha * torch.linalg.vector_norm(J.T @ grad_out)}

    def theta0(self) -> Tensor:
        return torch.cat([p.reshape(-1) for p in self.net0.parameters()])

    # ------------------------------------------------------------------ test, state
    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        r = self(x) - y
        self.log_dict({"test/loss": r @ r, "test/mse": (r @ r) / len(r)})

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return StepCounter(self.net.parameters(), lr=self.step_scale())

    def step_scale(self) -> float:
        hp = self.hparams
        return hp.eta if hp.eta is not None else hp.dt / hp.alpha

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["gauss_newton"] = {"exit_step": self.exit_step, "fallback_step": self.fallback_step}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("gauss_newton", {})
        self.exit_step, self.fallback_step = state.get("exit_step"), state.get("fallback_step")

    def results(self) -> dict[str, Any]:
        dt = self.hparams.dt
        return {"exit_step": self.exit_step, "exit_time": None if self.exit_step is None else self.exit_step * dt,
                "fallback_step": self.fallback_step, **{f"theory/{k}": v for k, v in (self.theory or {}).items()}}


class LevenbergMarquardtModule(SupervisedModule):
    """Levenberg-Marquardt training of any ``net``, one batch per step: the whole training set with a full-batch
    data module, a minibatch otherwise (beyond the GN-dynamics paper; no theory covers minibatches; docs/gauss_newton.md).

    Regression: residuals r = net(x) - y. Classification: cross-entropy is not a sum of squares, so the GGN
    J^T (diag p - p p^T) J is written as J~^T J~ by the square-root trick (``softmax_sqrt_factor``). The step
    solves (J~^T J~ / B + lam I) d = J~^T u / B and is accepted only if it lowers the batch loss (Marquardt: lam /
    ``down`` on success, lam * ``up`` and retry otherwise; lam is kept in the checkpoint). Under DDP the p-vector
    products are summed over processes (``primal`` or ``cg``), so every process takes the joined batch's step.

    Args:
        method: ``cg`` (matrix-free, at most ``cg_maxiter`` iterations to ``cg_tol``), ``primal`` (dense per-sample
            J, p x p Cholesky), ``dual`` (dense J, n x n Cholesky, n = rows of J) or ``auto`` (the smaller of the two).
    """

    def __init__(self, net: nn.Module, task: Literal["classification", "regression"] = "classification",
                 num_classes: int = 10, lam: float = 1.0, up: float = 3.0, down: float = 2.0, max_tries: int = 3,
                 method: Literal["cg", "primal", "dual", "auto"] = "cg", cg_maxiter: int = 20,
                 cg_tol: float = 1e-4) -> None:
        super().__init__(net, task, num_classes)
        self.schedule = MarquardtSchedule(lam=lam, up=up, down=down, max_tries=max_tries)  # validates
        if cg_maxiter < 1:
            raise ValueError(f"model.cg_maxiter must be >= 1, got {cg_maxiter}")
        if method not in ("cg", "primal", "dual", "auto"):
            raise ValueError(f"model.method must be cg, primal, dual or auto, got {method!r}")
        self.automatic_optimization = False

    def outputs_at(self, theta: Tensor, x: Tensor) -> Tensor:
        """net(x) with the parameters replaced by the flat vector theta."""
        names = [(n, p.shape) for n, p in self.net.named_parameters()]
        chunks = theta.split([s.numel() for _, s in names])
        return torch.func.functional_call(self.net, {n: c.view(s) for (n, s), c in zip(names, chunks)}, (x,))

    def all_reduce(self, t: Tensor) -> Tensor:
        if self.trainer.world_size > 1:
            torch.distributed.all_reduce(t)
        return t

    def factor(self, out: Tensor, y: Tensor) -> tuple[Optional[Tensor], Tensor]:
        """(A, u) with J~ = A^T J and u the output-space residual; A is None (the identity) for regression."""
        if self.task == "classification":
            return softmax_sqrt_factor(out, y)
        return None, out.reshape(y.shape) - y

    def batch_loss_sum(self, out: Tensor, y: Tensor) -> Tensor:
        if self.task == "classification":
            return F.cross_entropy(out, y, reduction="sum")
        return (out.reshape(y.shape) - y).pow(2).sum()

    def jacobian(self, theta: Tensor, x: Tensor, A: Optional[Tensor], rows: int) -> tuple[Jacobian, str]:
        method = self.hparams.method
        if method == "cg":
            if A is None:
                return FuncJacobian(lambda t: self.outputs_at(t, x).reshape(-1), theta), method
            return FuncJacobian(lambda t: torch.einsum("bkc,bk->bc", A, self.outputs_at(t, x)).reshape(-1), theta), method
        if isinstance(self.net, AnalyticJacobianNet):
            J = self.net.per_sample_jacobian(x, theta)  # (B, outputs, p)
        else:
            single = lambda t, xi: self.outputs_at(t, xi.unsqueeze(0)).reshape(-1)  # noqa: E731
            J = torch.func.vmap(torch.func.jacrev(single), in_dims=(None, 0))(theta, x)  # (B, outputs, p)
        if A is not None:
            J = torch.einsum("bkc,bkp->bcp", A, J)
        if method == "auto":
            method = "primal" if theta.numel() <= rows else "dual"
        return DenseJacobian(J.reshape(-1, theta.numel())), method

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        hp = self.hparams
        theta = torch.nn.utils.parameters_to_vector(self.net.parameters()).detach()
        with torch.no_grad():
            out = self.outputs_at(theta, x)
        A, u = self.factor(out, y)
        global_batch = float(self.all_reduce(torch.tensor(float(len(y)), device=x.device)))
        loss_sum = self.all_reduce(self.batch_loss_sum(out, y).detach())
        jac, method = self.jacobian(theta, x, A, u.numel())
        reduce = self.all_reduce if self.trainer.world_size > 1 else None
        tries, accepted = 0, False
        for tries in range(1, self.schedule.max_tries + 1):
            # (J~^T J~ / B + lam I) d = J~^T u / B  <=>  (J~^T J~ + B lam I) d = J~^T u
            d, info = gn_direction(jac, u.reshape(-1), Damping.additive(global_batch * self.schedule.lam),
                                   method=method, cg_maxiter=hp.cg_maxiter, cg_tol=hp.cg_tol, reduce=reduce)
            with torch.no_grad():
                new_loss = self.all_reduce(self.batch_loss_sum(self.outputs_at(theta - d, x), y))
            if new_loss < loss_sum:
                accepted = True
                self.schedule.accepted()
                torch.nn.utils.vector_to_parameters(theta - d, self.net.parameters())
                break
            self.schedule.rejected()
        self.optimizers().step()
        loss = loss_sum / global_batch
        self.track_train(loss, out.reshape(y.shape) if self.task == "regression" else out, y)
        if self.logs_this_step():
            self.log_dict({"train/lam": self.schedule.lam, "train/tries": float(tries),
                           "train/accepted": float(accepted), "train/cg_iters": float(info.cg_iters)})
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return StepCounter(self.net.parameters(), lr=1.0)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["marquardt_lam"] = self.schedule.lam

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.schedule.lam = checkpoint.get("marquardt_lam", self.schedule.lam)
