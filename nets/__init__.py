"""Plain ``nn.Module`` networks. Nothing here knows about Lightning."""
from nets.cnn import CNN1, CNN2
from nets.lstm import LSTMRegressor
from nets.resnet import CifarResNet18, ResNet50, resnet50
from nets.growable import GrowableNet

from nets.resnet_width import GulcuResNet
__all__ = ["GulcuResNet", "CNN1", "CNN2", "CifarResNet18", "LSTMRegressor", "ResNet50", "resnet50", "GrowableNet"]
