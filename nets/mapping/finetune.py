"""Fine-tuning by generated modulation (Eq. 25): each generated element o_i shifts L pretrained weights.

Over the flattened fine-tuned set W_f (P weights, in ``named_parameters`` order) with one trainable latent z (d):

    u = W z                                   fixed W: d -> n = ceil(P / L)
    o = u + alpha_m * ||z||^2                 Eq. 20-21 with b = 0 and identity activation (o = 0 at z = 0)
    theta_f = theta_pre + alpha * c * repeat_interleave(o, L)[:P]                          (Eq. 25)

Weights outside W_f stay theta_pre. c = sqrt(n / d) (``normalize``) makes RMS(o) = RMS(z) for every P and L, so
``alpha`` is the weight shift per unit of latent in every row of Table 10. W has orthonormal columns when n >= d
(a Hadamard projector: O(P) memory, so L = 1 over all ResNet-50 weights fits) and orthonormal rows when n < d
(e.g. L = 25000: 941 elements from a 2048-d latent; a small dense matrix).
"""
import math
from typing import Literal, Optional

import torch
from torch import Tensor, nn

from nets.mapping.base import ParameterMapping
from nets.mapping.projectors import DenseProjector, ProjectorKind, make_projector

LayerSet = Literal["all", "layer4+fc"]
LAYER_SETS: dict[str, Optional[frozenset[str]]] = {"all": None, "layer4+fc": frozenset({"layer4", "fc"})}
BatchNormMode = Literal["eval", "train"]


def check_layer_set(layers: str) -> None:
    if layers not in LAYER_SETS:
        raise ValueError(f"layers must be one of {', '.join(LAYER_SETS)}, got {layers!r}")


def in_layer_set(name: str, layers: LayerSet) -> bool:
    """Whether a parameter or module name lies in the layer set (``layer4+fc``: a ``layer4`` or ``fc`` module)."""
    check_layer_set(layers)
    modules = LAYER_SETS[layers]
    return modules is None or bool(modules & set(name.split(".")))


def finetuned_names(net: nn.Module, layers: LayerSet) -> list[str]:
    """The parameter names of W_f, in ``named_parameters`` order."""
    names = [n for n, _ in net.named_parameters() if in_layer_set(n, layers)]
    if not names:
        raise ValueError(f"layer set {layers!r}: {type(net).__name__} has no parameters under a "
                         f"{' or '.join(sorted(LAYER_SETS[layers] or ()))} module")
    return names


def frozen_norm_layers(net: nn.Module, layers: LayerSet, batchnorm: BatchNormMode) -> list[nn.Module]:
    """The BatchNorm layers that must stay in eval mode while training: all of them (``eval``: pretrained running
    statistics, never updated) or those outside the layer set (``train``: batch statistics inside W_f only)."""
    if batchnorm not in ("eval", "train"):
        raise ValueError(f"batchnorm must be eval or train, got {batchnorm!r}")
    norms = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return [m for n, m in norms if batchnorm == "eval" or not in_layer_set(n, layers)]


class RowOrthonormal(nn.Module):
    """n x d map with orthonormal rows (n < d): the transpose of a dense d x n orthonormal-column matrix."""

    kind = "dense_rows"

    def __init__(self, out_features: int, in_features: int, seed: int) -> None:
        super().__init__()
        self.out_features, self.in_features = out_features, in_features
        self.inner = DenseProjector(in_features, out_features, seed)

    def forward(self, z: Tensor) -> Tensor:
        return self.inner.transpose(z)

    def transpose(self, g: Tensor) -> Tensor:
        return self.inner(g)

    def row_sq_norms(self) -> Tensor:
        return torch.ones(self.out_features)

    def memory_bytes(self) -> int:
        return self.inner.memory_bytes()


class ModulationMapping(ParameterMapping):
    """Latent z -> modulated copies of ``net``'s W_f tensors (Eq. 25): one group, one latent.

    Args:
        net: the pretrained net; only its parameter names and shapes are read here.
        layers: ``all`` or ``layer4+fc`` (torchvision ResNet module names).
        tie: L, the number of consecutive weights of flattened W_f sharing one generated element (>= 1).
        latent_dim: d.
        projector: ``auto`` (dense if the fp32 matrix fits ``dense_limit_mb``), ``dense`` or ``hadamard``;
            used when ceil(P / L) >= d, otherwise the map is a dense matrix with orthonormal rows.
        alpha: Eq. 25's modulation scale.
        mapper_alpha: Eq. 20's modulation of the mapper's own weights (adds mapper_alpha * ||z||^2 to every o_i).
        normalize: scale o by sqrt(n / d) so that RMS(o) = RMS(z).
        latent_init_std: std of the initial latent (0: theta = theta_pre at step 0).
        seed: seed of the fixed projection.
    """

    # layers is typed str, not LayerSet, so a bad value in a config reaches check_layer_set's message (jsonargparse's
    # own message for a Literal does not name the allowed values)
    def __init__(self, net: nn.Module, layers: str = "all", tie: int = 1, latent_dim: int = 2048,
                 projector: ProjectorKind = "auto", dense_limit_mb: float = 8.0, alpha: float = 1e-2,
                 mapper_alpha: float = 1e-5, normalize: bool = True, latent_init_std: float = 0.0,
                 seed: int = 0) -> None:
        super().__init__()
        if isinstance(tie, bool) or not isinstance(tie, int) or tie < 1:
            raise ValueError(f"tie (L, weights per generated element) must be an integer >= 1, got {tie!r}")
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be positive, got {latent_dim}")
        if latent_init_std < 0:
            raise ValueError(f"latent_init_std must be >= 0, got {latent_init_std}")
        params = dict(net.named_parameters())
        self.layers, self.tie, self.seed = layers, tie, seed
        self.names = finetuned_names(net, layers)
        self.groups = [self.names]
        self.mask = None  # no pruning of modulated weights
        self.shapes = [tuple(params[n].shape) for n in self.names]
        self.numels = [params[n].numel() for n in self.names]
        self.size = sum(self.numels)
        self.elements = math.ceil(self.size / tie)
        if self.elements >= latent_dim:
            proj = make_projector(projector, self.elements, latent_dim, seed, dense_limit_mb)
        else:
            proj = RowOrthonormal(self.elements, latent_dim, seed)
        self.projectors = nn.ModuleList([proj])
        self.alpha, self.alphas = float(alpha), [float(mapper_alpha)]
        self.gain = math.sqrt(self.elements / latent_dim) if normalize else 1.0
        self.dims, self.sizes = [latent_dim], [self.size]
        self.latents = nn.ParameterList([nn.Parameter(torch.randn(latent_dim) * latent_init_std)])
        # W^T 1 / n (alignment) and |W_i|^2 (smoothness): fixed, regenerated with the projection
        self.register_buffer("column_mean", proj.transpose(torch.full((self.elements,), 1 / self.elements)),
                             persistent=False)
        self.register_buffer("row_sq_norms", proj.row_sq_norms(), persistent=False)
        counts = torch.full((self.elements,), float(tie))
        counts[-1] = self.size - (self.elements - 1) * tie  # the last block may be partial
        self.register_buffer("tied_counts", counts, persistent=False)

    @property
    def projector(self) -> nn.Module:
        return self.projectors[0]

    def inference_count(self) -> int:
        return self.size

    def summary(self) -> str:
        return (f"fine-tune layers {self.layers}, {self.size:,} weights, L = {self.tie} -> {self.elements:,} "
                f"elements from d = {self.dims[0]}; projector {self.projector.kind}, "
                f"{self.memory_bytes() / 2**20:.1f} MB")

    def shift(self, g: int, z: Tensor) -> Tensor:
        """Eq. 20's uniform shift of every element: alpha_m ||z||^2."""
        return self.alphas[g] * z.square().sum()

    def describe(self) -> dict:
        return {"groups": [{"names": self.names, "size": self.elements, "latent_dim": self.dims[0],
                            "projector": self.projector.kind}],
                "seed": self.seed, "layers": self.layers, "tie": self.tie, "finetuned_params": self.size}

    def modulation(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(o, W z)."""
        u = self.projector(z)
        return u + self.shift(0, z), u

    def forward(self, base: dict[str, Tensor], latents: Optional[list[Tensor]] = None, refresh_mask: bool = False
                ) -> tuple[dict[str, Tensor], list[tuple[Tensor, Tensor]]]:
        """theta_pre + modulation for every W_f tensor by name, and [(z, W z)] for the loss terms
        (``refresh_mask`` is part of the :class:`LatentMapping` interface; there is no mask here)."""
        z = (list(self.latents) if latents is None else latents)[0]
        o, u = self.modulation(z)
        return self._modulated(base, o), [(z, u)]

    def perturbed(self, params: dict[str, Tensor], aux: list[tuple[Tensor, Tensor]], noise: list[Tensor]
                  ) -> dict[str, Tensor]:
        """The tensors at z + eps from those at z: theta is affine in o, and o(z + eps) - o(z) =
        W eps + alpha_m (2 z + eps) . eps, where W eps (fixed W) needs no backward of its own."""
        (z, _), = aux
        eps, = noise
        return self._modulated(params, self.projector(eps) + self.alphas[0] * ((2 * z + eps) @ eps))

    def _modulated(self, base: dict[str, Tensor], o: Tensor) -> dict[str, Tensor]:
        """base + alpha c o, each element of o repeated over its L tied weights."""
        delta = (self.alpha * self.gain) * o
        if self.tie > 1:
            delta = delta.repeat_interleave(self.tie)
        # split, not slicing: each slice's backward would write a full-size zero tensor; the tail past P is dropped
        pieces = delta.split([*self.numels, delta.numel() - self.size])
        return {name: base[name] + piece.view(shape) for name, shape, piece in zip(self.names, self.shapes, pieces)}

    def smoothness(self, aux: list[tuple[Tensor, Tensor]]) -> Tensor:
        """||d theta / d z||_F^2 in closed form, O(P / L): J_j = alpha c (W_i + 2 alpha_m z^T) for weight j tied to
        element i, so ||J||^2 = (alpha c)^2 sum_i L_i (|W_i|^2 + 4 alpha_m W_i z + 4 alpha_m^2 |z|^2)."""
        (z, u), = aux
        am = self.alphas[0]
        rows = self.row_sq_norms + 4 * am * u + 4 * am ** 2 * z.square().sum()
        return (self.alpha * self.gain) ** 2 * (self.tied_counts * rows).sum()

    def alignment(self, latents: Optional[list[Tensor]] = None) -> Tensor:
        """1 - cos(z, W^T 1 / n + alpha_m z) (Eq. 30); taken as 0, with zero gradient, at z = 0."""
        z = (list(self.latents) if latents is None else latents)[0]
        mean_row = self.column_mean + self.alphas[0] * z
        norms = z.norm() * mean_row.norm()
        return 1 - torch.where(norms > 0, z @ mean_row / norms.clamp_min(1e-30), 0.0)
