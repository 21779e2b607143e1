"""All parameters of a target net generated from trainable latents through fixed modulated projections.

Per group g (the whole net for SLVT, one layer group for LWT), with W_g fixed and column-orthonormal:

    u_g = W_g z_g,   a_t = s_t * (u_g[t] + alpha_g * ||z_g||^2) + b_t,   theta_t = act(a_t)

for each tensor t of the group. ``alpha * ||z||^2`` is Eq. 20's modulation w_ij <- w_ij + alpha z_i
(W' z = W z + alpha ||z||^2 1); s_t is a fixed per-tensor gain; b_t is the tensor's initial value (``bias="init"``,
so alpha = 0 is random-subspace training) or zero. Only the latents are parameters of this module, except in the
ablations (Tables 8-9): ``modulation="separate"`` (LV + WMAP) shifts by alpha <m_g, z_g> with a trainable m_g
instead; ``projector="trainable"`` (Full DNN, LV + FullDNN) trains the mapper; ``train_latent=False`` fixes z
(Full DNN); ``prune_amount`` masks the generated tensors (:mod:`nets.mapping.prune`).
"""
import math
from typing import Literal, Optional, Union

import torch
from torch import Tensor, nn

from nets.mapping.base import ParameterMapping
from nets.mapping.groups import Allocation, allocate, layer_groups
from nets.mapping.projectors import ProjectorKind, make_projector
from nets.mapping.prune import MagnitudeMask, Schedule

Strategy = Literal["slvt", "lwt"]
Activation = Literal["identity", "tanh"]
Modulation = Literal["latent", "separate"]


class LatentMapping(ParameterMapping):
    """Latents + fixed projections for ``net``'s named parameters; ``forward(base)`` returns the tensors.

    Args:
        net: the target; only its parameter names, shapes and initial values are read here.
        strategy: ``slvt`` (one latent for all parameters) or ``lwt`` (one latent per layer group).
        latent_dim: the latent length (SLVT) or the total budget split over groups by ``allocation`` (LWT).
        latent_dims: explicit per-group lengths for LWT (overrides ``latent_dim``).
        allocation: ``sqrt`` (d_g proportional to sqrt(P_g)) or ``proportional`` (to P_g).
        projector: ``auto`` (dense if it fits ``dense_limit_mb``), ``dense`` or ``hadamard``.
        alpha: modulation scale, one value or one per group.
        activation: the mapper's output activation sigma.
        bias: ``init`` (b = the target's initial parameters) or ``zero``.
        gain: ``none`` or ``init_std`` (s_t proportional to the std of tensor t at init, mean s^2 = 1 per group).
        latent_init_std: std of the initial latents (0: start at z = 0).
        seed: seed of the projections; group g uses ``seed * 1_000_003 + g``.
        modulation: ``latent`` (Eq. 20: shift alpha ||z||^2) or ``separate`` (LV + WMAP: shift alpha <m, z>,
            m trainable, one vector of length d_g per group, started at 0).
        mapper_hidden, mapper_bias: hidden width and biases of a ``trainable`` projector (Full DNN).
        train_latent: False fixes the latents (Full DNN); they then need ``latent_init_std`` > 0.
        prune_amount, prune_start_step, prune_schedule: a :class:`MagnitudeMask` on the generated tensors
            (``prune_amount`` 0: none).
    """

    def __init__(self, net: nn.Module, strategy: Strategy = "slvt", latent_dim: int = 1024,
                 latent_dims: Optional[list[int]] = None, allocation: Allocation = "sqrt",
                 projector: ProjectorKind = "auto", dense_limit_mb: float = 8.0,
                 alpha: Union[float, list[float]] = 1e-5, activation: Activation = "identity",
                 bias: Literal["init", "zero"] = "init", gain: Literal["none", "init_std"] = "init_std",
                 latent_init_std: float = 0.0, seed: int = 0, modulation: Modulation = "latent",
                 mapper_hidden: int = 0, mapper_bias: bool = False, train_latent: bool = True,
                 prune_amount: float = 0.0, prune_start_step: int = 0, prune_schedule: Schedule = "fixed") -> None:
        super().__init__()
        params = dict(net.named_parameters())
        if not params:
            raise ValueError(f"target net {type(net).__name__} has no parameters to generate")
        if strategy not in ("slvt", "lwt"):
            raise ValueError(f"strategy must be slvt or lwt, got {strategy!r}")
        if activation not in ("identity", "tanh") or bias not in ("init", "zero") or gain not in ("none", "init_std"):
            raise ValueError(f"unknown activation/bias/gain: {activation!r}/{bias!r}/{gain!r}")
        if latent_init_std < 0:
            raise ValueError(f"latent_init_std must be >= 0, got {latent_init_std}")
        if modulation not in ("latent", "separate"):
            raise ValueError(f"modulation must be latent or separate, got {modulation!r}")
        if not train_latent and (projector != "trainable" or latent_init_std == 0):
            raise ValueError("a fixed latent (train_latent false) needs projector trainable (else nothing trains) "
                             "and latent_init_std > 0 (else z = 0 carries no information)")
        self.groups = [list(params)] if strategy == "slvt" else layer_groups(net)
        self.shapes = {name: tuple(p.shape) for name, p in params.items()}
        sizes = [sum(params[n].numel() for n in group) for group in self.groups]
        dims = self._latent_dims(strategy, latent_dim, latent_dims, allocation, sizes)
        alphas = alpha if isinstance(alpha, list) else [alpha] * len(self.groups)
        if len(alphas) != len(self.groups):
            raise ValueError(f"alpha has {len(alphas)} values but there are {len(self.groups)} groups")
        self.alphas, self.activation, self.use_bias, self.seed = [float(a) for a in alphas], activation, bias == "init", seed
        self.strategy, self.sizes, self.dims = strategy, sizes, dims
        self.closed_form_terms = mapper_hidden == 0
        self.latents = nn.ParameterList(nn.Parameter(torch.randn(d) * latent_init_std, requires_grad=train_latent)
                                        for d in dims)
        self.modulators = nn.ParameterList(nn.Parameter(torch.zeros(d)) for d in dims) \
            if modulation == "separate" else None
        self.projectors = nn.ModuleList(make_projector(projector, p, d, seed * 1_000_003 + g, dense_limit_mb,
                                                       mapper_hidden, mapper_bias)
                                        for g, (p, d) in enumerate(zip(sizes, dims)))
        gains = [self._gains([params[n] for n in group]) if gain == "init_std" else torch.ones(len(group))
                 for group in self.groups]
        self.register_buffer("gains", torch.cat(gains))  # one scalar per tensor: persistent, tiny
        self.mask = MagnitudeMask(self.shapes, prune_amount, prune_start_step, prune_schedule) \
            if prune_amount > 0 else None
        for g, proj in enumerate(self.projectors):
            if proj.kind == "trainable":  # its W changes: _column_mean / _row_sq_norms compute them live
                continue
            # W^T 1 / P (alignment) and row norms (smoothness): fixed, regenerated with the projection
            self.register_buffer(f"column_mean_{g}", proj.transpose(torch.full((proj.out_features,),
                                                                                1 / proj.out_features)),
                                 persistent=False)
            self.register_buffer(f"row_sq_norms_{g}", proj.row_sq_norms(), persistent=False)

    @staticmethod
    def _latent_dims(strategy: Strategy, latent_dim: int, latent_dims: Optional[list[int]], allocation: Allocation,
                     sizes: list[int]) -> list[int]:
        if strategy == "slvt":
            if latent_dims is not None:
                raise ValueError("latent_dims is for strategy lwt; use latent_dim with slvt")
            return [latent_dim]
        if latent_dims is not None:
            if len(latent_dims) != len(sizes):
                raise ValueError(f"latent_dims has {len(latent_dims)} entries but the net has {len(sizes)} layer "
                                 f"groups of sizes {sizes}")
            return list(latent_dims)
        if allocation not in ("sqrt", "proportional"):
            raise ValueError(f"allocation must be sqrt or proportional, got {allocation!r}")
        return allocate(latent_dim, sizes, allocation)

    @staticmethod
    def _gains(tensors: list[Tensor]) -> Tensor:
        stds = torch.stack([t.detach().float().std() if t.numel() > 1 else t.new_zeros(()) for t in tensors])
        stds = torch.where(stds > 0, stds, stds.max())  # constant-initialised tensors (norm affine, zero bias)
        counts = torch.tensor([t.numel() for t in tensors], dtype=stds.dtype)
        if stds.max() == 0:
            return torch.ones(len(tensors))
        return stds / torch.sqrt((stds.square() * counts).sum() / counts.sum())

    def inference_count(self) -> int:
        """Generated entries the target uses: all of them, or those the pruning mask keeps."""
        return sum(self.sizes) if self.mask is None else self.mask.kept()

    def shift(self, g: int, z: Tensor) -> Tensor:
        """The uniform modulation shift of group g: alpha ||z||^2 (Eq. 20) or alpha <m, z> (LV + WMAP)."""
        v = z if self.modulators is None else self.modulators[g]
        return self.alphas[g] * (v @ z)

    def shift_change(self, g: int, z: Tensor, eps: Tensor) -> Tensor:
        """shift(z + eps) - shift(z) without the cancellation: alpha (2 z + eps) . eps, or alpha <m, eps>."""
        v = 2 * z + eps if self.modulators is None else self.modulators[g]
        return self.alphas[g] * (v @ eps)

    def _column_mean(self, g: int) -> Tensor:
        proj = self.projectors[g]
        if proj.kind == "trainable":
            return proj.transpose(torch.full((proj.out_features,), 1 / proj.out_features, device=self.gains.device))
        return getattr(self, f"column_mean_{g}")

    def _row_sq_norms(self, g: int) -> Tensor:
        proj = self.projectors[g]
        return proj.row_sq_norms() if proj.kind == "trainable" else getattr(self, f"row_sq_norms_{g}")

    def summary(self) -> str:
        return (f"{self.strategy} latents {self.dims} (sum {self.latent_count()}) over groups of {self.sizes}; "
                f"projectors {[p.kind for p in self.projectors]}, {self.memory_bytes() / 2**20:.1f} MB")

    def describe(self) -> dict:
        return {"groups": [{"names": names, "size": p.out_features, "latent_dim": p.in_features,
                            "projector": p.kind} for names, p in zip(self.groups, self.projectors)],
                "seed": self.seed}

    def act(self, a: Tensor) -> Tensor:
        return torch.tanh(a) if self.activation == "tanh" else a

    def group_gains(self, g: int) -> Tensor:
        """s_t of every entry of group g (the per-tensor gains repeated over each tensor's entries)."""
        first = sum(len(names) for names in self.groups[:g])
        counts = torch.tensor([math.prod(self.shapes[n]) for n in self.groups[g]], device=self.gains.device)
        return self.gains[first:first + len(counts)].repeat_interleave(counts, output_size=self.sizes[g])

    def _tensors(self, g: int, a: Tensor) -> dict[str, Tensor]:
        """Group g's tensors by name from its flat pre-activations a (split, not slicing: each slice's backward
        would write a full-size zero tensor, O(P) per tensor)."""
        names = self.groups[g]
        pieces = self.act(a).split([math.prod(self.shapes[n]) for n in names])
        return {name: piece.view(self.shapes[name]) for name, piece in zip(names, pieces)}

    def forward(self, base: dict[str, Tensor], latents: Optional[list[Tensor]] = None, refresh_mask: bool = False
                ) -> tuple[dict[str, Tensor], list[tuple[Tensor, Tensor, Tensor]]]:
        """Generated tensors by name (masked once a pruning mask exists; ``refresh_mask`` first recomputes it
        from these tensors), and per group (z, W z, flat pre-activations a) for the loss terms."""
        latents = list(self.latents) if latents is None else latents
        out, aux = {}, []
        for g, (names, proj, z) in enumerate(zip(self.groups, self.projectors, latents)):
            u = proj(z)
            pre, gains = u + self.shift(g, z), self.group_gains(g)
            # one fused op over the group rather than a multiply and an add per tensor
            a = torch.addcmul(torch.cat([base[n].reshape(-1) for n in names]), gains, pre) if self.use_bias \
                else gains * pre
            out.update(self._tensors(g, a))
            aux.append((z, u, a))
        if self.mask is not None:
            if refresh_mask:
                self.mask.refresh(out)
            out = self.mask(out)
        return out, aux

    def perturbed(self, params: dict[str, Tensor], aux: list[tuple[Tensor, Tensor, Tensor]], noise: list[Tensor]
                  ) -> dict[str, Tensor]:
        """The tensors generated at latents z + eps, from the unperturbed pass's ``aux`` (``params``, its tensors,
        are not needed here: the activation is applied to a): the same values as
        ``forward`` at z + eps (up to rounding), computed as a = a(z) + s (W eps + shift(z + eps) - shift(z)).

        W eps depends on no parameter (for a fixed W), so it needs no backward of its own: the stability term's
        gradient reaches z through a(z), i.e. through the one W^T product of the step. A trainable mapper
        (Full DNN ablations; possibly non-linear) takes W(z + eps) - W z, with gradients into its weights."""
        out = {}
        for g, ((z, u, a), eps) in enumerate(zip(aux, noise)):
            proj = self.projectors[g]
            du = proj(z + eps) - u if proj.kind == "trainable" else proj(eps)
            out.update(self._tensors(g, torch.addcmul(a, self.group_gains(g), du + self.shift_change(g, z, eps))))
        return out if self.mask is None else self.mask(out)

    def smoothness(self, aux: list[tuple[Tensor, Tensor, Tensor]]) -> Tensor:
        """||d theta / d z||_F^2 in closed form (Eq. 29), summed over groups; O(P), no autograd Jacobian.

        J = diag(act'(a) s k) (W + 1 c^T) with c = d shift / dz (2 alpha z, or alpha m for ``separate``) and k the
        pruning mask (1 without), so ||J||^2 = sum_j act'(a_j)^2 s_j^2 k_j (|W_j|^2 + 2 (W c)_j + |c|^2)."""
        total = 0.0
        for g, (z, u, a) in enumerate(aux):
            alpha, rows = self.alphas[g], self._row_sq_norms(g)
            if self.modulators is None:
                c, wc = 2 * alpha * z, 2 * alpha * u
            else:
                c = alpha * self.modulators[g]
                wc = self.projectors[g](c)
            weight = self.group_gains(g).square()
            if self.activation == "tanh":
                weight = weight * (1 - torch.tanh(a).square()).square()
            if self.mask is not None and bool(self.mask.ready):
                weight = weight * torch.cat([self.mask.keep(n).reshape(-1) for n in self.groups[g]])
            total = total + (weight * (rows + 2 * wc + c.square().sum())).sum()
        return total

    def alignment(self, latents: Optional[list[Tensor]] = None) -> Tensor:
        """Sum over groups of 1 - cos(z, W'^m), W'^m = W^T 1 / P + alpha v (row mean of modulated W; Eq. 30; v = z,
        or m for ``separate``).

        At z = 0 (the default start) the cosine is undefined; it is taken as 0 there, with zero gradient."""
        latents = list(self.latents) if latents is None else latents
        total = 0.0
        for g, z in enumerate(latents):
            v = z if self.modulators is None else self.modulators[g]
            mean_row = self._column_mean(g) + self.alphas[g] * v
            norms = z.norm() * mean_row.norm()
            total = total + 1 - torch.where(norms > 0, z @ mean_row / norms.clamp_min(1e-30), 0.0)
        return total
