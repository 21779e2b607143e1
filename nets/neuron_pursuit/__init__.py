"""Neuron Pursuit (Kumar & Haupt): the growable homogeneous net and the NCF maths, no Lightning."""
from nets.neuron_pursuit.growable import GrowableNet

__all__ = ["GrowableNet"]
