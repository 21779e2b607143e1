"""How the Mapping Loss weighs its three regularisers (Eq. 26): fixed, the paper's trainable, or uncertainty."""
import math
from typing import Literal

import torch
from torch import Tensor, nn

Scheme = Literal["fixed", "trainable", "uncertainty"]
TERMS = ("stab", "smooth", "align")


class LossWeights(nn.Module):
    """Combines {stab, smooth, align} with weights lambda_k.

    - ``fixed``: lambda_k as given (no parameters).
    - ``trainable`` (the paper): lambda_k = softplus(rho_k), rho_k trained with the latents. Since
      dL/d lambda_k = L_k >= 0, gradient descent drives every lambda_k to 0 (docs/mapping_networks.md).
    - ``uncertainty``: L_k exp(-s_k) / 2 + s_k / 2 (homoscedastic uncertainty, Kendall et al. 2018) with s_k
      trainable, starting at exp(-s_k) / 2 = lambda_k; it settles at lambda_k = 1 / (2 L_k) and cannot collapse.
    """

    def __init__(self, scheme: Scheme, lambdas: tuple[float, float, float]) -> None:
        super().__init__()
        if scheme not in ("fixed", "trainable", "uncertainty"):
            raise ValueError(f"lambda_scheme must be fixed, trainable or uncertainty, got {scheme!r}")
        if any(v < 0 for v in lambdas):
            raise ValueError(f"lambdas must be >= 0, got {lambdas}")
        self.scheme = scheme
        self.register_buffer("fixed", torch.tensor(lambdas, dtype=torch.float32))
        if scheme == "trainable":
            self.raw = nn.Parameter(torch.tensor([math.log(math.expm1(v)) if v > 0 else 0.0 for v in lambdas]))
        elif scheme == "uncertainty":
            self.raw = nn.Parameter(torch.tensor([-math.log(2 * v) if v > 0 else 0.0 for v in lambdas]))

    def active(self) -> tuple[bool, bool, bool]:
        """Which terms are on: an initial lambda of 0 switches a term off in every scheme (and skips its cost,
        e.g. the stability term's second forward pass)."""
        return tuple(float(v) > 0 for v in self.fixed)

    def lambdas(self) -> Tensor:
        if self.scheme == "trainable":
            lam = nn.functional.softplus(self.raw)
        elif self.scheme == "uncertainty":
            lam = torch.exp(-self.raw) / 2
        else:
            return self.fixed
        return torch.where(self.fixed > 0, lam, torch.zeros_like(lam))

    def forward(self, terms: dict[str, Tensor]) -> Tensor:
        lam = self.lambdas()
        total = sum((lam[i] * terms[k] for i, k in enumerate(TERMS) if k in terms), torch.zeros(()))
        if self.scheme == "uncertainty":
            total = total + sum(self.raw[i] / 2 for i, k in enumerate(TERMS) if k in terms and self.fixed[i] > 0)
        return total
