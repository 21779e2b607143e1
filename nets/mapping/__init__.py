"""Mapping Networks: fixed orthogonal projections that generate a target net's parameters from latents."""
from nets.mapping.generator import LatentMapping
from nets.mapping.groups import allocate, layer_groups
from nets.mapping.projectors import DenseProjector, HadamardProjector, hadamard_transform, make_projector

__all__ = ["DenseProjector", "HadamardProjector", "LatentMapping", "allocate", "hadamard_transform", "layer_groups",
           "make_projector"]
