"""Mapping Networks: fixed orthogonal projections that generate a target net's parameters from latents."""
from nets.mapping.generator import LatentMapping
from nets.mapping.finetune import ModulationMapping
from nets.mapping.groups import allocate, layer_groups
from nets.mapping.projectors import (DenseProjector, HadamardProjector, TrainableProjector, hadamard_transform,
                                     make_projector)
from nets.mapping.prune import MagnitudeMask, MagnitudePruned

__all__ = ["DenseProjector", "HadamardProjector", "LatentMapping", "MagnitudeMask", "MagnitudePruned",
           "TrainableProjector", "allocate", "hadamard_transform", "layer_groups", "make_projector", "ModulationMapping"]
