"""Constants of the GN-dynamics theory (Cayci, arXiv:2412.14031) for a tanh network and the loss ||psi - y||^2."""
import math

import torch
from torch import Tensor

SIGMA1 = 1.0  # sup |tanh'|
SIGMA2 = 4 / (3 * math.sqrt(3))  # sup |tanh''|
NU = MU = 2.0  # g(psi) = ||psi - y||^2 is 2-strongly convex with 2-Lipschitz gradient


def theory_constants(J0: Tensor, x: Tensor, y: Tensor, width: int, r: float = 0.5) -> dict[str, float]:
    """lambda_0, lambda_n, Lipschitz bounds, Theorem 5's alpha and radius, the GN/GF rate exponents, and the
    linearised least-squares loss ||(I - P_0) y||^2 that GN approaches as alpha grows.

    Conventions (docs/gauss_newton.md): Gram >= 4 lambda_0^2 I, so lambda_0 = sqrt(lambda_min)/2 and lambda_n = sqrt(||K0||)/2.
    """
    J0, x, y = J0.detach(), x.detach(), y.detach()
    U, s, _ = torch.linalg.svd(J0, full_matrices=False)
    rank = int((s > s[0] * max(J0.shape) * torch.finfo(J0.dtype).eps).sum())
    # the lazy (alpha -> infinity) limit of GN: least squares on Im(Df(w_init)), ||(I - P_0) y||^2
    lazy_loss = float(y @ y - (U[:, :rank].T @ y).square().sum())
    lam_min, lam_max = float(s[-1] ** 2), float(s[0] ** 2)
    lambda0, lambdan = 0.5 * math.sqrt(lam_min), 0.5 * math.sqrt(lam_max)
    row_sq = (x ** 2).sum(1)
    lip_f = SIGMA1 * math.sqrt(width * float(row_sq.sum()))
    lip_jac = SIGMA2 * math.sqrt(float((row_sq ** 2).sum()))  # L: Frobenius bound on the Jacobian's Lipschitz constant
    delta0 = float(y @ y)  # g(0): the nullified model starts at 0
    alpha5 = lip_jac * MU / (r * (1 - r) * lambda0 ** 2) * math.sqrt(delta0) / (2 * math.sqrt(2) * NU ** 1.5)
    return {"lambda_min_JtJ0": lam_min, "lambda_max_JtJ0": lam_max, "lambda0": lambda0, "lambdan": lambdan,
            "lip_f": lip_f, "lip_jacobian": lip_jac, "delta0": delta0, "alpha_theorem5": alpha5,
            "radius_theorem5": 2 * r * lambda0 / lip_jac, "gn_log_loss_slope": -2 * NU,
            "gf_log_loss_slope": -2 * NU * lambda0 ** 2, "rho_max_theory": lambdan ** 2 / (1 + lambdan ** 2),
            "linearised_lsq_loss": lazy_loss}
