"""The two-layer network of the Gauss-Newton dynamics paper: phi(x; W) = sum_i c_i tanh(x^T w_i)."""
from typing import Optional

import torch
from torch import Tensor, nn


class TwoLayerTanh(nn.Module):
    """Hidden weights W (width x in_features) trained; output signs c in {-1, +1} a frozen buffer.

    No bias and no 1/sqrt(width) factor (the paper's literal definition). W ~ N(0, 1), c ~ Unif{-1, +1},
    drawn from ``init_seed`` so every run of a sweep starts from the same network; float64 (its Gram matrix is ill-conditioned).
    """

    def __init__(self, in_features: int = 8, width: int = 18, init_seed: Optional[int] = 0) -> None:
        super().__init__()
        if in_features <= 0 or width <= 0:
            raise ValueError(f"TwoLayerTanh needs positive in_features and width, got {in_features}, {width}")
        gen = torch.Generator().manual_seed(init_seed) if init_seed is not None else None
        self.weight = nn.Parameter(torch.randn(width, in_features, generator=gen, dtype=torch.float64))
        signs = torch.randint(0, 2, (width,), generator=gen).double() * 2 - 1
        self.register_buffer("signs", signs)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x @ self.weight.T) @ self.signs

    def jacobian(self, x: Tensor) -> Tensor:
        """Closed-form d phi(x_j) / d W, shape (n, width * in_features), columns in W's row-major order."""
        slope = 1 - torch.tanh(x @ self.weight.T) ** 2  # (n, width)
        return ((self.signs * slope).unsqueeze(2) * x.unsqueeze(1)).reshape(len(x), -1)
