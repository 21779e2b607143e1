"""Damped Gauss-Newton / Levenberg-Marquardt directions for any map theta -> f(theta) in R^n (no Lightning).

The direction v solves  H v = J^T u  with J = df/dtheta (n x p), u the gradient of the loss in output space, and

    convex damping (the GN-dynamics paper):  H = (1 - rho) J^T J + rho I,   rho in [0, 1]
    additive damping (classic LM / Marquardt): H = J^T J + lam I,          lam >= 0

Solvers: ``primal`` (p x p Cholesky), ``dual`` (n x n, push-through identity
(aJ^TJ + cI)^-1 J^T = J^T (aJJ^T + cI)^-1), ``lstsq`` (QR of the stacked system; avoids squaring the
condition number), ``cg`` (matrix-free conjugate gradients on the primal system through JVP/VJP, never forming J)
and ``cg_dual`` (the same on the n x n system). Under data parallelism ``reduce`` sums p-vectors over
processes, so the primal solvers take the step of the joined batch.
"""
import math
from dataclasses import dataclass
from typing import Callable, Literal, Optional, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

Method = Literal["primal", "dual", "lstsq", "cg", "cg_dual"]
OnSingular = Literal["error", "pinv", "lstsq", "damp"]
METHODS = ("primal", "dual", "lstsq", "cg", "cg_dual")
ON_SINGULAR = ("error", "pinv", "lstsq", "damp")
Reduce = Callable[[Tensor], Tensor]


class SingularSystemError(RuntimeError):
    """The undamped Gauss-Newton system is (numerically) singular."""


# ---------------------------------------------------------------------------------------------- Jacobians
class Jacobian:
    """A linear map R^p -> R^n given by products: ``mv`` (J v) and ``rmv`` (J^T u)."""

    n: int
    p: int

    def mv(self, v: Tensor) -> Tensor:
        raise NotImplementedError

    def rmv(self, u: Tensor) -> Tensor:
        raise NotImplementedError

    def dense(self) -> Tensor:
        raise NotImplementedError

    def gram(self) -> Tensor:
        """J^T J (p x p), computed once per point: Marquardt retries reuse it."""
        if getattr(self, "_gram", None) is None:
            J = self.dense()
            self._gram = J.T @ J
        return self._gram

    def kernel(self) -> Tensor:
        """J J^T (n x n), computed once per point."""
        if getattr(self, "_kernel", None) is None:
            J = self.dense()
            self._kernel = J @ J.T
        return self._kernel


class DenseJacobian(Jacobian):
    def __init__(self, matrix: Tensor) -> None:
        if matrix.ndim != 2:
            raise ValueError(f"a dense Jacobian must be a matrix, got shape {tuple(matrix.shape)}")
        self.matrix = matrix
        self.n, self.p = matrix.shape

    def mv(self, v: Tensor) -> Tensor:
        return self.matrix @ v

    def rmv(self, u: Tensor) -> Tensor:
        return self.matrix.T @ u

    def dense(self) -> Tensor:
        return self.matrix


class FuncJacobian(Jacobian):
    """Jacobian of ``fn`` (flat R^p -> flat R^n) at ``theta``, applied through ``torch.func`` products.

    One VJP closure is built per point (it keeps the forward activations); each JVP re-runs the forward in
    forward-mode, so memory stays O(p + activations) however large p is.
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], theta: Tensor) -> None:
        self.fn, self.theta = fn, theta.detach()
        self.output, self._vjp = torch.func.vjp(fn, self.theta)
        self.n, self.p = self.output.numel(), self.theta.numel()

    def mv(self, v: Tensor) -> Tensor:
        return torch.func.jvp(self.fn, (self.theta,), (v,))[1]

    def rmv(self, u: Tensor) -> Tensor:
        return self._vjp(u)[0]

    def dense(self) -> Tensor:
        """All n rows (cached); each costs a full backward, so for per-sample residuals use
        :func:`per_sample_jacobian`."""
        if getattr(self, "_dense", None) is None:
            self._dense = torch.func.jacrev(self.fn)(self.theta).reshape(self.n, self.p)
        return self._dense


@runtime_checkable
class AnalyticJacobianNet(Protocol):
    """A net that writes its per-sample Jacobian (B, outputs, p) at a flat parameter vector itself (e.g.
    ``TanhMLP``); the dense LM solvers then skip vmap-of-jacrev."""

    def per_sample_jacobian(self, x: Tensor, theta: Optional[Tensor] = None) -> Tensor: ...


def per_sample_jacobian(fn: Callable[[Tensor, Tensor], Tensor], theta: Tensor, inputs: Tensor) -> DenseJacobian:
    """Dense J of residuals that come in independent per-sample blocks, ``fn(theta, x_i)``: vmap over the samples
    of jacrev, O(n p) work instead of the O(n^2 p) of differentiating the batched function row by row."""
    J = torch.func.vmap(torch.func.jacrev(fn), in_dims=(None, 0))(theta.detach(), inputs)
    return DenseJacobian(J.reshape(-1, theta.numel()))


def softmax_sqrt_factor(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """The square-root trick for cross-entropy, which is not a sum of squares: per sample,
    A = diag(sqrt p) - p sqrt(p)^T (B, C, C) satisfies A A^T = diag p - p p^T (the softmax Hessian), and
    u = sqrt p - e_y / sqrt(p_y) (B, C) satisfies A u = p - e_y = dCE/dlogits; so the GGN is J~^T J~ with J~ = A^T J."""
    p = logits.softmax(-1)
    sq = p.sqrt()
    A = torch.diag_embed(sq) - p.unsqueeze(2) * sq.unsqueeze(1)
    u = sq - F.one_hot(targets, p.shape[1]).to(p.dtype) / sq.gather(1, targets[:, None]).clamp_min(1e-12)
    return A, u


# ---------------------------------------------------------------------------------------------- damping
@dataclass(frozen=True)
class Damping:
    """H = a J^T J + c I. Build with :meth:`convex` (the paper's rho) or :meth:`additive` (classic lambda)."""

    a: float
    c: float

    @staticmethod
    def convex(rho: float) -> "Damping":
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"convex damping rho must be in [0, 1], got {rho}")
        return Damping(1.0 - rho, rho)

    @staticmethod
    def additive(lam: float) -> "Damping":
        if not (lam >= 0.0 and math.isfinite(lam)):
            raise ValueError(f"additive damping lambda must be finite and >= 0, got {lam}")
        return Damping(1.0, lam)


# ---------------------------------------------------------------------------------------------- solvers
@dataclass
class SolveInfo:
    fallback: Optional[str] = None  # the singular-system policy that fired, if any
    cg_iters: int = 0
    cg_rel_residual: float = 0.0


def conjugate_gradient(apply: Callable[[Tensor], Tensor], b: Tensor, tol: float, maxiter: int) -> tuple[Tensor, int, float]:
    """CG for SPD ``apply`` from x = 0; stops when ||r|| <= tol ||b||. Returns (x, iterations, relative residual)."""
    x = torch.zeros_like(b)
    r = b.clone()
    d = r.clone()
    rr = torch.dot(r, r)
    b_norm = math.sqrt(float(rr))
    if b_norm == 0.0:
        return x, 0, 0.0
    it = 0
    for it in range(1, maxiter + 1):
        Ad = apply(d)
        dAd = torch.dot(d, Ad)
        if float(dAd) <= 0.0:  # singular direction: the system is only positive semi-definite
            return x, it, math.sqrt(float(rr)) / b_norm
        step = rr / dAd
        x.add_(d, alpha=float(step))
        r.sub_(Ad, alpha=float(step))
        rr_new = torch.dot(r, r)
        if math.sqrt(float(rr_new)) <= tol * b_norm:
            rr = rr_new
            break
        d.mul_(float(rr_new / rr)).add_(r)
        rr = rr_new
    return x, it, math.sqrt(float(rr)) / b_norm


def _identity(x: Tensor) -> Tensor:
    return x


def _is_singular(diag: Tensor, rcond: float) -> bool:
    """True when the diagonal of a triangular factor (Cholesky L or QR R) is tiny relative to its largest entry."""
    d = diag.abs()
    return bool(d.min() <= rcond * d.max()) or not bool(torch.isfinite(d).all())


def gn_direction(jac: Jacobian, u: Tensor, damping: Damping, method: Method = "primal",
                 on_singular: OnSingular = "error", fallback_rho: float = 1e-6, rcond: Optional[float] = None,
                 cg_tol: float = 1e-10, cg_maxiter: Optional[int] = None,
                 reduce: Optional[Reduce] = None) -> tuple[Tensor, SolveInfo]:
    """Solve (a J^T J + c I) v = J^T u for v.

    Singularity (only possible with c = 0) is judged on the triangular factor: its smallest diagonal entry
    below ``rcond`` (default max(n, p) * eps, on the scale of J's singular values) times its largest; the
    Cholesky solvers (``primal``, ``dual``) use at least sqrt(max(n, p) * eps), as H squares the condition. Then
    ``on_singular`` decides: ``error`` raises :class:`SingularSystemError`; ``pinv`` / ``lstsq`` return the
    minimum-norm solution (pseudo-inverse of H / least squares on J); ``damp`` re-solves with convex damping
    ``fallback_rho``. Matrix-free CG does not detect singularity; from x = 0 it tends to the minimum-norm solution.
    ``reduce`` (sum over processes) is applied to every p-vector; only the primal solvers support it.
    """
    if method not in METHODS:
        raise ValueError(f"unknown GN solver method {method!r}; choose one of {', '.join(METHODS)}")
    if on_singular not in ON_SINGULAR:
        raise ValueError(f"unknown on_singular policy {on_singular!r}; choose one of {', '.join(ON_SINGULAR)}")
    if reduce is not None and method not in ("primal", "cg"):
        raise ValueError(f"GN solver {method!r} cannot be distributed; use 'primal' or 'cg' under data parallelism")
    if u.shape != (jac.n,):
        raise ValueError(f"output gradient must have shape ({jac.n},), got {tuple(u.shape)}")
    reduce = reduce or _identity
    a, c = damping.a, damping.c
    info = SolveInfo()
    if a == 0.0:  # rho = 1: plain (scaled) gradient, no solve
        return reduce(jac.rmv(u)) / c, info
    eps = max(jac.n, jac.p) * torch.finfo(u.dtype).eps
    rcond = rcond if rcond is not None else eps
    # the normal equations square J's condition number: singular values below sqrt(eps) * s_max are lost in them
    rcond_normal = max(rcond, math.sqrt(eps))
    maxiter = cg_maxiter or min(4 * (jac.p if method == "cg" else jac.n), 1000)

    if method == "cg":
        b = reduce(jac.rmv(u))
        x, info.cg_iters, info.cg_rel_residual = conjugate_gradient(
            lambda v: a * reduce(jac.rmv(jac.mv(v))) + c * v, b, cg_tol, maxiter)
        return x, info
    if method == "cg_dual":
        y, info.cg_iters, info.cg_rel_residual = conjugate_gradient(
            lambda w: a * jac.mv(jac.rmv(w)) + c * w, u, cg_tol, maxiter)
        return jac.rmv(y), info

    J = jac.dense()
    if method == "primal":
        b = reduce(J.T @ u)
        H = reduce(a * jac.gram())  # a new tensor, so an in-place all-reduce leaves the cache intact
        H.diagonal().add_(c)
        L, bad = torch.linalg.cholesky_ex(H)
        if not (int(bad) or (c == 0 and _is_singular(L.diagonal(), rcond_normal))):
            return torch.cholesky_solve(b.unsqueeze(1), L).squeeze(1), info
    elif method == "dual":
        K = a * jac.kernel()
        K.diagonal().add_(c)
        L, bad = torch.linalg.cholesky_ex(K)
        if not (int(bad) or (c == 0 and _is_singular(L.diagonal(), rcond_normal))):
            return J.T @ torch.cholesky_solve(u.unsqueeze(1), L).squeeze(1), info
    else:  # lstsq: min || [sqrt(a) J; sqrt(c) I] v - [u / sqrt(a); 0] ||
        A, rhs = math.sqrt(a) * J, u / math.sqrt(a)
        if c > 0:
            A = torch.cat([A, math.sqrt(c) * torch.eye(jac.p, dtype=J.dtype, device=J.device)])
            rhs = torch.cat([rhs, rhs.new_zeros(jac.p)])
        if A.shape[0] >= A.shape[1]:
            Q, R = torch.linalg.qr(A)
            if c > 0 or not _is_singular(R.diagonal(), rcond):
                return torch.linalg.solve_triangular(R, (Q.T @ rhs).unsqueeze(1), upper=True).squeeze(1), info
    return _fallback(J, u, a, c, on_singular, fallback_rho, rcond, rcond_normal, method, reduce, info)


def _fallback(J: Tensor, u: Tensor, a: float, c: float, policy: OnSingular, fallback_rho: float, rcond: float,
              rcond_normal: float, method: Method, reduce: Reduce, info: SolveInfo) -> tuple[Tensor, SolveInfo]:
    info.fallback = policy
    if policy == "error":
        s = torch.linalg.svdvals(J.detach())
        raise SingularSystemError(
            f"Gauss-Newton system is singular ({method} solve, damping a={a:g}, c={c:g}; singular values of J "
            f"from {float(s.max()):.3g} down to {float(s.min()):.3g}, n={J.shape[0]}, p={J.shape[1]}); "
            "use damping > 0 or on_singular=pinv|lstsq|damp")
    if policy == "damp":
        v, _ = gn_direction(DenseJacobian(J), u, Damping.convex(fallback_rho), method="primal",
                            on_singular="pinv", rcond=rcond, reduce=None if reduce is _identity else reduce)
        return v, info
    if policy == "pinv":
        H = a * reduce(J.T @ J)
        H.diagonal().add_(c)
        # H's eigenvalues are J's singular values squared
        return torch.linalg.pinv(H, rtol=rcond_normal ** 2, hermitian=True) @ reduce(J.T @ u), info
    if reduce is not _identity:
        raise ValueError("on_singular='lstsq' cannot be distributed; use pinv or damp under data parallelism")
    A, rhs = math.sqrt(a) * J, u / math.sqrt(a)
    if c > 0:
        A = torch.cat([A, math.sqrt(c) * torch.eye(J.shape[1], dtype=J.dtype, device=J.device)])
        rhs = torch.cat([rhs, rhs.new_zeros(J.shape[1])])
    # gelsd (SVD) gives the minimum-norm solution on CPU; CUDA only has gels, which assumes full rank
    if A.is_cuda:
        return torch.linalg.pinv(A, rtol=rcond) @ rhs, info
    return torch.linalg.lstsq(A, rhs.unsqueeze(1), rcond=rcond, driver="gelsd").solution.squeeze(1), info


# ---------------------------------------------------------------------------------------------- Marquardt
@dataclass
class MarquardtSchedule:
    """Classic adaptive lambda: divide by ``down`` after a step that lowered the loss, multiply by ``up`` and
    retry after one that did not."""

    lam: float = 1e-3
    up: float = 10.0
    down: float = 10.0
    lam_min: float = 1e-12
    lam_max: float = 1e12
    max_tries: int = 10

    def __post_init__(self) -> None:
        if self.lam <= 0 or self.up <= 1 or self.down <= 1 or self.max_tries < 1:
            raise ValueError("Marquardt schedule needs lam > 0, up > 1, down > 1, max_tries >= 1")

    def accepted(self) -> None:
        self.lam = max(self.lam / self.down, self.lam_min)

    def rejected(self) -> None:
        self.lam = min(self.lam * self.up, self.lam_max)


def lm_step(residual_fn: Callable[[Tensor], Tensor], theta: Tensor, schedule: MarquardtSchedule,
            method: Method = "cg", jacobian: Optional[Callable[[Tensor], Jacobian]] = None,
            **solve_kwargs: object) -> tuple[Tensor, float, dict]:
    """One Levenberg-Marquardt step on 1/2 ||r(theta)||^2 with the Marquardt lambda schedule.

    ``jacobian(theta)`` builds J (default: matrix-free :class:`FuncJacobian`; for the dense solvers pass e.g.
    :func:`per_sample_jacobian`). Returns (new theta, new loss, info). A step is accepted as soon as it lowers
    the loss; after ``max_tries`` rejections theta is returned unchanged.
    """
    if jacobian is None:
        jac = FuncJacobian(residual_fn, theta)
        r = jac.output.detach().reshape(-1)
    else:
        jac = jacobian(theta)
        with torch.no_grad():
            r = residual_fn(theta).reshape(-1)
    loss = 0.5 * float(r @ r)
    for tries in range(1, schedule.max_tries + 1):
        v, info = gn_direction(jac, r, Damping.additive(schedule.lam), method=method, **solve_kwargs)
        candidate = theta - v
        with torch.no_grad():
            r_new = residual_fn(candidate).reshape(-1)
        new_loss = 0.5 * float(r_new @ r_new)
        if new_loss < loss:
            schedule.accepted()
            return candidate, new_loss, {"tries": tries, "lam": schedule.lam, "cg_iters": info.cg_iters}
        schedule.rejected()
    return theta, loss, {"tries": schedule.max_tries, "lam": schedule.lam, "cg_iters": 0}
