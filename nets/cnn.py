"""The small classification CNNs of the Mapping Networks appendix (Tables 1-2)."""
import math
from typing import Optional

import torch
from torch import Tensor, nn


class CNN1(nn.Module):
    """AlexNet-like CNN for 1x28x28 inputs: 537,994 parameters with 10 classes (Table 1)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 28 -> 14
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 14 -> 7
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),
            nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 7 -> 3
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(128 * 3 * 3, 256), nn.ReLU(), nn.Linear(256, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class LowRankLinear(nn.Module):
    """y = x V^T U^T + b: a Linear whose out x in weight is the product U V of rank ``rank`` (LRD, Table 9).

    V starts as ``nn.Linear(in, rank)``'s default weight and U with variance 1 / rank, so U V has the default
    Linear weight's variance."""

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        if not 1 <= rank <= min(in_features, out_features):
            raise ValueError(f"low-rank rank must be in [1, {min(in_features, out_features)}] for a "
                             f"{in_features} -> {out_features} layer, got {rank}")
        self.v = nn.Parameter(nn.Linear(in_features, rank, bias=False).weight.detach())
        bound = math.sqrt(3 / rank)
        self.u = nn.Parameter(torch.empty(out_features, rank).uniform_(-bound, bound))
        self.bias = nn.Parameter(nn.Linear(in_features, out_features).bias.detach())

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(nn.functional.linear(x, self.v), self.u, self.bias)


class CNN2(nn.Module):
    """LeNet-like CNN for 1x28x28 inputs: 108,618 parameters with 10 classes (Table 2).

    ``fc1_rank`` replaces FC1 (800 -> 128) by :class:`LowRankLinear` factors (LRD): rank 32 gives 35,914."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, fc1_rank: Optional[int] = None) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3), nn.ReLU(), nn.MaxPool2d(2),  # 28 -> 26 -> 13
            nn.Conv2d(16, 32, 3), nn.ReLU(), nn.MaxPool2d(2),  # 13 -> 11 -> 5
        )
        fc1 = nn.Linear(32 * 5 * 5, 128) if fc1_rank is None else LowRankLinear(32 * 5 * 5, 128, fc1_rank)
        self.classifier = nn.Sequential(
            nn.Flatten(), fc1, nn.ReLU(), nn.Linear(128, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
