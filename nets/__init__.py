"""Plain ``nn.Module`` networks. Nothing here knows about Lightning."""
from nets.cnn import CNN1, CNN2
from nets.lstm import LSTMRegressor
from nets.resnet import CifarResNet18, ResNet50, TransferCNN, resnet50
from nets.gauss_newton import TanhMLP, TwoLayerTanh
from nets.neuron_pursuit import GrowableNet
from nets.resnet_width import GulcuResNet
from nets.unet import CNN3
from nets.video_features import VideoFeatures

__all__ = ["GulcuResNet", "CifarResNet18", "CNN1", "CNN2", "GrowableNet", "LSTMRegressor", "ResNet50", "resnet50", "TanhMLP", "TransferCNN", "TwoLayerTanh", "CNN3", "VideoFeatures"]
