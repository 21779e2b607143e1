"""Deep ResNet convergence with width linear in n (Gulcu 2019): the ResNet (2.3), the exact NTK by layer factors
and Thm 6.1's constants; no Lightning."""
from nets.resnet_width.net import GulcuResNet

__all__ = ["GulcuResNet"]
