"""What a mapping is to :class:`lit_modules.mapping.MappingNetModule`: latents that generate some of a target net's
parameters through fixed (or, in ablations, trainable) projections, plus the closed forms of the Mapping Loss terms.

A mapping is built from the target net (``Mapping(net, **settings)``), so a config names it by ``class_path`` and
``init_args`` and the module calls it with its ``net`` (docs/mapping_networks.md, "Configs").
"""
from abc import ABC, abstractmethod
from typing import Any, Optional

from torch import Tensor, nn

from nets.mapping.prune import MagnitudeMask


class ParameterMapping(nn.Module, ABC):
    """Subclasses set ``latents`` (a ParameterList, one latent per group), ``projectors`` (one per group),
    ``groups`` (the parameter names of each group), ``dims`` (latent lengths), ``sizes`` (generated entries per
    group), ``alphas`` (Eq. 20's modulation scale per group) and ``mask`` (a pruning mask or None)."""

    latents: nn.ParameterList
    projectors: nn.ModuleList
    groups: list[list[str]]
    dims: list[int]
    sizes: list[int]
    alphas: list[float]
    mask: Optional[MagnitudeMask]  # set in __init__: a class default would hide the registered submodule
    # the smoothness and alignment terms have closed forms only while the map z -> theta is linear in W
    closed_form_terms = True

    def latent_count(self) -> int:
        return sum(self.dims)

    def trainable_count(self) -> int:
        """Entries trained: latents (unless fixed), modulation vectors and a trainable mapper's weights."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def memory_bytes(self) -> int:
        return sum(p.memory_bytes() for p in self.projectors)

    @abstractmethod
    def inference_count(self) -> int:
        """Generated entries the target uses at inference."""

    @abstractmethod
    def summary(self) -> str:
        """One line for the console when the module is built."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What a checkpoint must match to be loaded: ``groups`` (names, size, latent_dim, projector per group),
        ``seed``, and any further setting the latents depend on."""

    @abstractmethod
    def shift(self, g: int, z: Tensor) -> Tensor:
        """The uniform modulation shift of group g (Eq. 20)."""

    @abstractmethod
    def forward(self, base: dict[str, Tensor], latents: Optional[list[Tensor]] = None, refresh_mask: bool = False
                ) -> tuple[dict[str, Tensor], list]:
        """Generated tensors by name and per-group intermediates for :meth:`smoothness`."""

    @abstractmethod
    def smoothness(self, aux: list) -> Tensor:
        """||d theta / d z||_F^2 (Eq. 29) from :meth:`forward`'s intermediates."""

    @abstractmethod
    def alignment(self, latents: Optional[list[Tensor]] = None) -> Tensor:
        """Sum over groups of 1 - cos(z, row mean of the modulated W) (Eq. 30)."""
