"""ResNets: the CIFAR ResNet-18 (3x3 stem, no max-pool) and torchvision's ResNet-50."""
from pathlib import Path
from typing import Optional

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock


class CifarResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs: 11,173,962 parameters with 10 classes, 11,220,132 with 100."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        )
        layers, width = [], 64
        for out, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            down = None
            if stride != 1 or width != out:
                down = nn.Sequential(nn.Conv2d(width, out, 1, stride, bias=False), nn.BatchNorm2d(out))
            layers.append(nn.Sequential(BasicBlock(width, out, stride, down), BasicBlock(out, out)))
            width = out
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.layers(self.stem(x)))


def resnet50(num_classes: int = 1000, weights_path: Optional[str] = None) -> nn.Module:
    """torchvision ResNet-50; ``weights_path`` is a local torchvision ``.pth`` state dict.

    The ImageNet head is kept when loading weights and replaced afterwards if ``num_classes`` differs,
    so pretrained features load for any head size.
    """
    model = torchvision.models.resnet50(num_classes=1000 if weights_path else num_classes)
    if weights_path:
        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(f"ResNet-50 weights not found at {path} (pass a torchvision .pth file)")
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        if num_classes != 1000:
            model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


class ResNet50(nn.Module):
    """Config-friendly wrapper so ResNet-50 is chosen by class name like every other net."""

    def __init__(self, num_classes: int = 1000, weights_path: Optional[str] = None) -> None:
        super().__init__()
        self.net = resnet50(num_classes, weights_path)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
