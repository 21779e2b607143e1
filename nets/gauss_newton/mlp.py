"""A plain tanh MLP for regression: the small nets on which Levenberg-Marquardt is supposed to beat Adam."""
from collections.abc import Sequence

from torch import nn


class TanhMLP(nn.Sequential):
    """in_features -> hidden[0] -> ... -> hidden[-1] -> out_features, tanh between layers, PyTorch's default init.

    ``hidden=[18]`` is the paper's width with biases and a trained output layer (unlike ``TwoLayerTanh``).
    """

    def __init__(self, in_features: int = 8, hidden: Sequence[int] = (18,), out_features: int = 1) -> None:
        if in_features <= 0 or out_features <= 0 or not hidden or min(hidden) <= 0:
            raise ValueError(f"TanhMLP needs positive sizes and at least one hidden layer, got {in_features}, "
                             f"{hidden}, {out_features}")
        sizes = [in_features, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.Tanh()]
        super().__init__(*layers, nn.Linear(sizes[-1], out_features))
