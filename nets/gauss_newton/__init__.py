"""Gauss-Newton dynamics (Cayci): the two-layer tanh net, the GN/LM solver and the theory calculator, no Lightning."""
from nets.gauss_newton.mlp import TanhMLP
from nets.gauss_newton.two_layer import TwoLayerTanh

__all__ = ["TanhMLP", "TwoLayerTanh"]
