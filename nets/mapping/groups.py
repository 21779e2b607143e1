"""Which target tensors share a latent (LWT layer groups) and how a latent budget is split among groups."""
from typing import Literal

import torch
from torch import nn

Allocation = Literal["sqrt", "proportional"]


def layer_groups(net: nn.Module) -> list[list[str]]:
    """One group per weight tensor with ndim >= 2 (conv/linear/LSTM matrix); 1-D tensors (its bias, the
    following norm layer's affine) join the group before them (the first group if none precedes)."""
    groups: list[list[str]] = []
    pending: list[str] = []
    for name, param in net.named_parameters():
        if param.ndim >= 2:
            groups.append(pending + [name])
            pending = []
        elif groups:
            groups[-1].append(name)
        else:
            pending.append(name)
    if pending:
        if not groups:
            return [pending]
        groups[-1].extend(pending)
    return groups


def allocate(total: int, sizes: list[int], rule: Allocation = "sqrt") -> list[int]:
    """Split ``total`` latent entries over groups of ``sizes`` parameters, d_g proportional to sqrt(P_g)
    (or P_g), each in [1, P_g], summing exactly to ``total`` (largest-remainder rounding)."""
    if not len(sizes) <= total <= sum(sizes):
        raise ValueError(f"a latent budget of {total} cannot cover {len(sizes)} layer groups of sizes {sizes} "
                         f"(need between {len(sizes)} and {sum(sizes)})")
    weights = torch.tensor(sizes, dtype=torch.float64)
    weights = weights.sqrt() if rule == "sqrt" else weights
    caps = torch.tensor(sizes, dtype=torch.float64)
    dims = torch.zeros(len(sizes), dtype=torch.float64)
    free = torch.ones(len(sizes), dtype=torch.bool)
    while True:  # water-filling: groups whose share exceeds their size are capped, the rest re-split
        share = weights * free / (weights * free).sum() * (total - dims[~free].sum())
        over = free & (share > caps)
        if not over.any():
            dims[free] = share[free]
            break
        dims[over], free = caps[over], free & ~over
    floor = dims.floor().clamp_min(1)
    floor = torch.minimum(floor, caps)
    rest = int(total - floor.sum())
    order = torch.argsort(dims - floor, descending=True) if rest > 0 else torch.argsort(floor, descending=True)
    out = floor.long().tolist()
    i = 0
    while rest != 0:
        g = int(order[i % len(out)])
        step = 1 if rest > 0 else -1
        if 1 <= out[g] + step <= sizes[g]:
            out[g] += step
            rest -= step
        i += 1
    return out
