"""Unstructured magnitude pruning (Table 9): one global top-k mask over a set of named tensors.

The mask keeps the ``N - round(amount * N)`` largest-magnitude entries of all tensors together (N their total
size; the count ``torch.nn.utils.prune.global_unstructured`` keeps), so 90 % of CNN2's 108,618 leaves exactly
10,862. Schedule: nothing is masked before training step ``start_step``; at that step the mask is computed from
that step's tensors; ``fixed`` keeps it from then on, ``every_step`` recomputes it from every later training
step's tensors (a pruned entry can come back). The mask is a persistent buffer, so resumes keep it.
"""
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

Schedule = Literal["fixed", "every_step"]


class MagnitudeMask(nn.Module):
    """Global unstructured magnitude mask; ``forward(tensors)`` returns them masked (unchanged before the start)."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], amount: float, start_step: int = 0,
                 schedule: Schedule = "fixed") -> None:
        super().__init__()
        if not 0 < amount < 1:
            raise ValueError(f"prune_amount must be in (0, 1), got {amount}")
        if start_step < 0 or schedule not in ("fixed", "every_step"):
            raise ValueError(f"prune_start_step must be >= 0 and prune_schedule fixed or every_step, got "
                             f"{start_step}, {schedule!r}")
        self.amount, self.start_step, self.schedule = amount, start_step, schedule
        self.names, self.shapes = list(shapes), {n: tuple(s) for n, s in shapes.items()}
        for i, shape in enumerate(self.shapes.values()):
            self.register_buffer(f"keep_{i}", torch.ones(shape, dtype=torch.bool))
        self.register_buffer("ready", torch.tensor(False))

    def keep(self, name: str) -> Tensor:
        return getattr(self, f"keep_{self.names.index(name)}")

    def kept(self) -> int:
        """Entries left unmasked (all of them before the mask exists)."""
        return sum(int(self.keep(n).sum()) for n in self.names)

    def due(self, step: int) -> bool:
        """Whether training step ``step`` (re)computes the mask."""
        return step >= self.start_step and (self.schedule == "every_step" or not bool(self.ready))

    @torch.no_grad()
    def refresh(self, tensors: dict[str, Tensor]) -> None:
        flat = torch.cat([tensors[n].detach().abs().reshape(-1) for n in self.names])
        keep = torch.zeros_like(flat, dtype=torch.bool)
        keep[flat.topk(flat.numel() - round(self.amount * flat.numel())).indices] = True
        for name, piece in zip(self.names, keep.split([self.keep(n).numel() for n in self.names])):
            self.keep(name).copy_(piece.view(self.shapes[name]))
        self.ready.fill_(True)

    def forward(self, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        if not bool(self.ready):
            return tensors
        return {n: t * self.keep(n) if n in self.shapes else t for n, t in tensors.items()}


class MagnitudePruned(nn.Module):
    """``net`` with a :class:`MagnitudeMask` over all its parameters, applied functionally in every forward: the
    dense weights stay parameters (a pruned entry contributes 0 and gets zero gradient). Training steps are counted
    as training-mode forward passes (one per step under ``SupervisedModule``). The CNN2 + Prune baseline."""

    def __init__(self, net: nn.Module, amount: float = 0.9, start_step: int = 0, schedule: Schedule = "fixed") -> None:
        super().__init__()
        self.net = net
        self.mask = MagnitudeMask({n: tuple(p.shape) for n, p in net.named_parameters()}, amount, start_step,
                                  schedule)
        self.register_buffer("steps", torch.tensor(0))

    def forward(self, x: Tensor) -> Tensor:
        params = dict(self.net.named_parameters())
        if self.training:
            if self.mask.due(int(self.steps)):
                self.mask.refresh(params)
            self.steps += 1
        return functional_call(self.net, self.mask(params), (x,))

    def nonzero_params(self) -> int:
        """Parameters the pruned net uses at inference."""
        return self.mask.kept()
