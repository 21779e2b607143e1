"""Fixed column-orthonormal projections R^d -> R^P, regenerated from a seed (never stored in checkpoints), and
the trainable mapper of the Full DNN ablations (whose weights are parameters, hence in checkpoints).

``DenseProjector`` holds the exact P x d matrix (small targets only). ``HadamardProjector`` stacks
m = ceil(P / n) randomized Hadamard blocks Q_b = (1/n) H D2_b Pi_b H D1 (n = 2^ceil(log2 d), z zero-padded
to n), each exactly orthogonal, scaled by 1/sqrt(m): O(P) memory, O(P log n) time per product. When P is
not a multiple of n the rows past P are dropped and a low-rank correction W (W^T W)^(-1/2) restores exact
column-orthonormality.
"""
import functools
import math
from typing import Literal

import torch
from torch import Tensor, nn


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class DenseProjector(nn.Module):
    """Exact orthonormal-column P x d matrix from the QR of a seeded Gaussian (float64, sign-fixed)."""

    kind = "dense"

    def __init__(self, out_features: int, in_features: int, seed: int) -> None:
        super().__init__()
        check_sizes(out_features, in_features)
        self.out_features, self.in_features, self.seed = out_features, in_features, seed
        gaussian = torch.randn(out_features, in_features, generator=_generator(seed), dtype=torch.float64)
        q, r = torch.linalg.qr(gaussian)
        q = q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()))
        self.register_buffer("weight", q.float(), persistent=False)

    def forward(self, z: Tensor) -> Tensor:
        return self.weight @ z

    def transpose(self, g: Tensor) -> Tensor:
        return self.weight.T @ g

    def row_sq_norms(self) -> Tensor:
        return self.weight.square().sum(1)

    def memory_bytes(self) -> int:
        return self.weight.numel() * self.weight.element_size()


def hadamard_transform(x: Tensor) -> Tensor:
    """Unnormalised Walsh-Hadamard transform over the last dim (a power of two), as H_a X H_b matmuls."""
    n = x.shape[-1]
    if n == 1:
        return x
    k = n.bit_length() - 1
    a, b = 1 << (k // 2), 1 << (k - k // 2)
    h_a, h_b = _hadamard_matrix(a, x), _hadamard_matrix(b, x)
    y = h_a @ x.reshape(*x.shape[:-1], a, b) @ h_b
    return y.reshape(x.shape)


def _hadamard_matrix(n: int, like: Tensor) -> Tensor:
    return _sylvester(n, like.dtype, like.device)


@functools.lru_cache(maxsize=64)
def _sylvester(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    h = torch.ones(1, 1, dtype=dtype, device=device)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


class _Project(torch.autograd.Function):
    """W z with backward W^T g, so autograd stores nothing of size P x log n."""

    generate_vmap_rule = True  # lets torch.func (jacrev, vmap) differentiate through it

    @staticmethod
    def forward(z: Tensor, projector: "HadamardProjector") -> Tensor:
        return projector.apply_forward(z)

    @staticmethod
    def setup_context(ctx, inputs: tuple, output: Tensor) -> None:
        ctx.projector = inputs[1]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return ctx.projector.transpose(grad), None


class HadamardProjector(nn.Module):
    """Structured orthogonal projection; buffers are O(P) (signs and permutations), none persistent."""

    kind = "hadamard"

    def __init__(self, out_features: int, in_features: int, seed: int) -> None:
        super().__init__()
        check_sizes(out_features, in_features)
        self.out_features, self.in_features, self.seed = out_features, in_features, seed
        n = 1 << max(in_features - 1, 0).bit_length()
        m = math.ceil(out_features / n)
        self.block, self.blocks = n, m
        gen = _generator(seed)
        self.register_buffer("d1", _signs(n, gen), persistent=False)
        self.register_buffer("d2", _signs(m * n, gen).view(m, n), persistent=False)
        perm = torch.argsort(torch.rand(m, n, generator=gen), dim=1)
        self.register_buffer("perm", perm, persistent=False)
        self.scale = 1.0 / (n * math.sqrt(m))
        self.corr_scale, u, coef = self._correction()
        self.register_buffer("corr_u", u, persistent=False)
        self.register_buffer("corr_coef", coef, persistent=False)

    def _raw(self, z: Tensor, blocks: slice = slice(None)) -> Tensor:
        """The stacked blocks (or a range of them) applied to z (..., d) -> (..., m * n), before the row cut."""
        d2, perm = self.d2[blocks], self.perm[blocks]
        x = torch.nn.functional.pad(z, (0, self.block - self.in_features)) * self.d1
        x = hadamard_transform(x).unsqueeze(-2) * d2  # (..., m, n)
        x = x.gather(-1, perm.expand(*x.shape[:-2], -1, -1))
        return hadamard_transform(x).flatten(-2) * self.scale

    def _raw_transpose(self, g: Tensor) -> Tensor:
        g = torch.nn.functional.pad(g, (0, self.blocks * self.block - self.out_features))
        x = hadamard_transform(g.unflatten(-1, (self.blocks, self.block))) * self.scale
        x = torch.zeros_like(x).scatter(-1, self.perm.expand(*x.shape[:-2], -1, -1), x) * self.d2
        x = hadamard_transform(x.sum(-2)) * self.d1
        return x[..., : self.in_features]

    def _correction(self) -> tuple[float, Tensor, Tensor]:
        """(W^T W)^(-1/2) as c^(-1/2) I + U diag(coef) U^T (U: d x q), or (1, empty, empty) if no row is dropped.

        Only the last block is cut, so W^T W = I - B^T B / m (B: its q dropped rows) or, when fewer rows are
        kept than dropped, ((m - 1) I + B^T B) / m (B: its kept rows): a rank-q update of a scaled identity,
        inverted through the q x q matrix B B^T."""
        n, m = self.block, self.blocks
        kept = self.out_features - (m - 1) * n
        if kept == n:
            return 1.0, torch.empty(0), torch.empty(0)
        last = self._raw(torch.eye(self.in_features), slice(m - 1, None)).double().T * math.sqrt(m)  # (n, d)
        if kept < n - kept and m > 1:
            rows, c, sign = last[:kept], (m - 1) / m, 1.0
        else:
            rows, c, sign = last[kept:], 1.0, -1.0
        lam, vecs = torch.linalg.eigh(rows @ rows.T)
        keep = lam > 1e-9 * max(float(lam.max()), 1.0)
        lam, vecs = lam[keep], vecs[:, keep]
        u = rows.T @ vecs / lam.sqrt()  # orthonormal eigenvectors of B^T B
        coef = (c + sign * lam / m).rsqrt() - c ** -0.5
        return c ** -0.5, u.float(), coef.float()

    def _correct(self, z: Tensor) -> Tensor:
        if not self.corr_u.numel():
            return z
        return self.corr_scale * z + ((z @ self.corr_u) * self.corr_coef) @ self.corr_u.T

    def apply_forward(self, z: Tensor) -> Tensor:
        return self._raw(self._correct(z))[..., : self.out_features]

    def transpose(self, g: Tensor) -> Tensor:
        return self._correct(self._raw_transpose(g))

    def forward(self, z: Tensor) -> Tensor:
        return _Project.apply(z, self)

    def row_sq_norms(self) -> Tensor:
        # exact in sum (trace W^T W = d); individual rows deviate slightly from the mean
        return torch.full((self.out_features,), self.in_features / self.out_features, device=self.d1.device)

    def memory_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers())


def _signs(n: int, gen: torch.Generator) -> Tensor:
    return torch.randint(0, 2, (n,), generator=gen).float().mul_(2).sub_(1)


def check_sizes(out_features: int, in_features: int) -> None:
    if in_features <= 0:
        raise ValueError(f"latent size must be positive, got {in_features}")
    if in_features > out_features:
        raise ValueError(f"latent size {in_features} exceeds the {out_features} parameters it generates; "
                         "orthonormal columns need latent size <= parameter count")


class TrainableProjector(nn.Module):
    """A trained mapper d -> P (the Full DNN and LV + FullDNN ablations, Table 8); its weights are parameters.

    ``hidden`` = 0: one P x d matrix, started at the seeded orthonormal W of :class:`DenseProjector`.
    ``hidden`` > 0: d -> hidden (tanh) -> P, the first layer seeded orthogonal and the output layer started at
    zero (so the generated net starts at its bias b, like z = 0 in the fixed mapper). ``bias`` gives every layer
    a trainable bias (started at 0)."""

    kind = "trainable"

    def __init__(self, out_features: int, in_features: int, seed: int, hidden: int = 0, bias: bool = False) -> None:
        super().__init__()
        check_sizes(out_features, in_features)
        if hidden < 0:
            raise ValueError(f"mapper_hidden must be >= 0, got {hidden}")
        self.out_features, self.in_features, self.seed, self.hidden = out_features, in_features, seed, hidden
        if hidden == 0:
            layer = nn.Linear(in_features, out_features, bias=bias)
            with torch.no_grad():
                layer.weight.copy_(DenseProjector(out_features, in_features, seed).weight)
            self.layers = nn.Sequential(layer)
        else:
            first, last = nn.Linear(in_features, hidden, bias=bias), nn.Linear(hidden, out_features, bias=bias)
            with torch.no_grad():
                nn.init.orthogonal_(first.weight, generator=_generator(seed))
                last.weight.zero_()
            self.layers = nn.Sequential(first, nn.Tanh(), last)
        for layer in self.layers:
            if getattr(layer, "bias", None) is not None:
                nn.init.zeros_(layer.bias)

    def forward(self, z: Tensor) -> Tensor:
        return self.layers(z)

    def _matrix(self) -> Tensor:
        if self.hidden:
            raise ValueError("the smoothness and alignment terms have a closed form only for a linear mapper "
                             "(mapper_hidden 0); set lambda_smooth and lambda_align to 0")
        return self.layers[0].weight

    def transpose(self, g: Tensor) -> Tensor:
        return self._matrix().T @ g

    def row_sq_norms(self) -> Tensor:
        return self._matrix().square().sum(1)

    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.parameters(), *self.buffers()))


Projector = DenseProjector | HadamardProjector | TrainableProjector
ProjectorKind = Literal["auto", "dense", "hadamard", "trainable"]


def make_projector(kind: ProjectorKind, out_features: int, in_features: int, seed: int,
                   dense_limit_mb: float = 8.0, hidden: int = 0, bias: bool = False) -> Projector:
    """``auto`` picks the exact dense matrix when it fits in ``dense_limit_mb`` (fp32), else Hadamard blocks;
    ``trainable`` is :class:`TrainableProjector` (``hidden``, ``bias``), the only kind with a hidden layer or bias."""
    if kind == "trainable":
        return TrainableProjector(out_features, in_features, seed, hidden, bias)
    if hidden or bias:
        raise ValueError(f"mapper_hidden and mapper_bias need projector trainable, got projector {kind!r}")
    if kind == "auto":
        kind = "dense" if 4 * out_features * in_features <= dense_limit_mb * 2**20 else "hadamard"
    if kind == "dense":
        return DenseProjector(out_features, in_features, seed)
    if kind == "hadamard":
        return HadamardProjector(out_features, in_features, seed)
    raise ValueError(f"projector must be auto, dense, hadamard or trainable, got {kind!r}")
