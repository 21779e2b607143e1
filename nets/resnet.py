"""ResNets: the CIFAR ResNet-18 (3x3 stem, no max-pool), torchvision's ResNet-50 and a small stand-in for it."""
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
        model.load_state_dict(read_state_dict(weights_path, "ResNet-50", " (pass a torchvision .pth file)"))
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


class TransferCNN(nn.Module):
    """A 56K-parameter ResNet-style net for 1x28x28 inputs: ``conv1``/``bn1`` -> ``layer4`` (two conv-BN-ReLU) -> ``fc``.

    Stands in for ResNet-50 in the Fashion-MNIST transfer experiment (docs/results/mapping_finetune.md); the names are
    torchvision's, so Table 10's layer sets (``all``, ``layer4+fc``) apply. ``weights_path`` loads a state dict (e.g.
    ``train.py export``'s ``net.pt``) except ``fc``: the head is always new, as the fine-tuning task has other classes.
    """

    def __init__(self, num_classes: int = 10, weights_path: Optional[str] = None) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.layer4 = nn.Sequential(nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                    nn.MaxPool2d(2), nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64),
                                    nn.ReLU())
        self.fc = nn.Linear(64, num_classes)
        if weights_path:
            state = read_state_dict(weights_path, "TransferCNN")
            body = {k: v for k, v in state.items() if not k.startswith("fc.")}
            missing, unexpected = self.load_state_dict(body, strict=False)
            if unexpected or [k for k in missing if not k.startswith("fc.")]:
                raise ValueError(f"{weights_path} does not hold TransferCNN weights "
                                 f"(missing {missing[:2]}, unexpected {unexpected[:2]})")

    def forward(self, x: Tensor) -> Tensor:
        x = nn.functional.max_pool2d(self.bn1(self.conv1(x)).relu(), 2)
        return self.fc(self.layer4(x).mean((2, 3)))


def read_state_dict(path: str, what: str, hint: str = "") -> dict[str, Tensor]:
    """The state dict in ``path``, with one clear error when the file is absent."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} weights not found at {path}{hint}")
    return torch.load(path, map_location="cpu", weights_only=True)
