"""A plain tanh MLP for regression: the small nets on which Levenberg-Marquardt is supposed to beat Adam."""
from collections.abc import Sequence
from typing import Optional

import torch
from torch import Tensor, nn


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

    def per_sample_jacobian(self, x: Tensor, theta: Optional[Tensor] = None) -> Tensor:
        """Per-sample Jacobian (B, out_features, p) of the outputs with respect to the parameters, flattened in
        ``parameters()`` order, at ``theta`` (default: the current parameters).

        Backpropagation written out once for the whole batch: every Linear's block is the outer product of the
        signal reaching it and its input, so J costs O(B * out * p) with no per-sample autograd (vmap of jacrev
        takes ~5x longer for the 8-18-1 net on 16,000 rows: 79 against 15 ms on one CPU thread).
        """
        linears = [m for m in self if isinstance(m, nn.Linear)]
        params = list(self.parameters()) if theta is None else theta.split([p.numel() for p in self.parameters()])
        weights = [w.view(m.weight.shape) for w, m in zip(params[0::2], linears)]
        biases = params[1::2]
        inputs, a = [], x
        for w, b in zip(weights[:-1], biases[:-1]):
            inputs.append(a)
            a = torch.tanh(torch.addmm(b, a, w.T))
        inputs.append(a)
        out = weights[-1].shape[0]
        signal = torch.eye(out, dtype=x.dtype, device=x.device).expand(len(x), out, out)  # d out / d z_last
        blocks: list[Tensor] = []
        for layer in reversed(range(len(weights))):
            a_in = inputs[layer]
            blocks.append(signal)  # bias
            blocks.append((signal.unsqueeze(3) * a_in[:, None, None, :]).flatten(2))  # weight (rows = outputs)
            if layer:
                signal = (signal @ weights[layer]) * (1 - a_in.square()).unsqueeze(1)
        return torch.cat(blocks[::-1], dim=2)
