"""The constants of Gulcu (2019), Thm 6.1, for the ResNet (2.3): kappa, alpha, beta, L, R, K and eta_thm.

Formulas as printed in Thm 6.1 and Secs. 3-5, with the two corrections of docs/resnet_width.md: c_phi = 1/E[phi^2]
and ||a||_2 = ||y|| sqrt(m/n). Every quantity here is a bound from the proof, not a measurement.
"""
import math
from dataclasses import asdict, dataclass

import torch

from nets.resnet_width.net import GulcuResNet


@dataclass
class Theory:
    kappa: float
    alpha0: float  # sigma_min(J_0) lower bound (3.21)
    alpha: float  # alpha_{delta'} over the ball (5.2)
    beta: float  # (5.17)
    lipschitz: float  # L_{delta'} (5.18)
    radius: float  # R_{delta,delta'} (5.1)
    width_factor: float  # K_{delta,delta'} (6.2): m >= K n
    eta: float  # step bound (6.1)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def kappa(layer_norms: list[float], n: int, x_norm: float, c_phi: float, c_res: float, depth: int, delta: float,
          B: float = 1.0) -> float:
    """(4.7); ``layer_norms`` are ||X^(k)||_F for k = 1..H-1 at initialisation, ``x_norm`` = ||X||_F."""
    path = sum(layer_norms[: depth - 1]) / math.sqrt(n)
    return 1 + (math.sqrt(c_phi) + c_res) * (2 + delta * B) + (math.sqrt(c_phi) * x_norm / math.sqrt(n)
                                                                + c_res / depth * path) * B


def alpha_0(y_norm: float, n: int, c_phi: float, c_res: float, lambda_x: float, delta_prime: float = 0.0,
            B: float = 1.0) -> float:
    """(3.21): sigma_min(J_0) >= alpha_0 with high probability; alpha_0^2 bounds lambda_min(K_0) from below."""
    return (1 - delta_prime) * math.sqrt(c_phi) * y_norm / math.sqrt(n) * math.exp(-2 * B * c_res) * math.sqrt(lambda_x)


def theory(kappa_value: float, lambda_x: float, n: int, d: int, y_norm: float, depth: int, c_phi: float,
           c_res: float, delta_prime: float, m: int, B: float = 1.0, M: float = 4 / (3 * math.sqrt(3))) -> Theory:
    """alpha, beta, L, R, K and eta_thm of Thm 6.1 for 0 < delta' < 1 at width m (tanh's B, M by default)."""
    if not 0 < delta_prime < 1:
        raise ValueError(f"delta' must lie in (0, 1), got {delta_prime}")
    k, dp, sq_h = kappa_value, delta_prime, math.sqrt(depth)
    aq = 3 + math.log(1 / (1 - dp)) / (2 * B * c_res)
    alpha0 = alpha_0(y_norm, n, c_phi, c_res, lambda_x, dp, B)
    alpha = (1 - dp) * alpha0
    e3 = math.exp(3 * B * c_res) / math.sqrt(1 - dp)
    beta = y_norm / math.sqrt(1 - dp) * (B * math.sqrt(c_phi) + B**2 * math.sqrt(c_phi * c_res) / sq_h * aq) \
        * math.exp(3 * B * c_res)
    lipschitz = math.sqrt(c_phi) * y_norm * e3 * (
        M + c_res * aq * B * M * (1 + 1 / sq_h) + c_res * B**2 * (1 + 1 / sq_h) + c_res / sq_h * aq * B**3 * c_res * e3) \
        + c_res * c_phi * y_norm * e3**2 * aq**2 * B**2 * M * (1 + 1 / sq_h) * (1 + c_res / math.sqrt(m) * aq * B * e3)
    radius = 4 * k / ((1 - dp) ** 2 * math.sqrt(c_phi)) * math.exp(2 * B * c_res) / math.sqrt(lambda_x) * math.sqrt(n)
    common = k**2 * math.exp(4 * B * c_res) / ((1 - dp) ** 4 * c_phi * lambda_x)
    width_factor = max(64 * B**2 * c_res**2 / math.log(1 / (1 - dp)) ** 2, 32 / (d * dp**2)) * common
    eta = min(1.0, alpha**2 / (lipschitz * k * y_norm)) / beta**2
    return Theory(k, alpha0, alpha, beta, lipschitz, radius, width_factor, eta)


@torch.no_grad()
def kappa_at_init(net: GulcuResNet, x: torch.Tensor, delta: float = 1.0, B: float = 1.0) -> float:
    """kappa (4.7) from the layer outputs of ``net`` at its current (initial) weights."""
    norms = [float(h.norm()) for h in net.hidden(x)]
    return kappa(norms, len(x), float(x.norm()), net.c_phi, net.c_res, net.depth, delta, B)
