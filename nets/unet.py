"""CNN3, the small U-Net of the Mapping Networks appendix (Table 3), for 19-class Cityscapes segmentation."""
import torch
from torch import Tensor, nn


def conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    # Table 3 lists Conv3x3 + BatchNorm; the ReLU after each pair is the usual U-Net choice (no parameters)
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class CNN3(nn.Module):
    """U-Net: encoder [Conv3x3+BN]x2 + MaxPool at 32/64/128 channels, bottleneck [Conv3x3+BN]x2 at 256,
    decoder ConvTranspose2x2/2 + skip concat + one Conv3x3+BN per stage, 1x1 classifier.

    1,734,803 parameters with 19 classes and RGB input. Height and width must be divisible by 8.
    """

    def __init__(self, num_classes: int = 19, in_channels: int = 3) -> None:
        super().__init__()
        widths = (32, 64, 128)
        self.encoder = nn.ModuleList()
        c = in_channels
        for w in widths:
            self.encoder.append(nn.Sequential(*conv_bn(c, w), *conv_bn(w, w)))
            c = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = nn.Sequential(*conv_bn(c, 256), *conv_bn(256, 256))
        self.decoder = nn.ModuleList()
        c = 256
        for w in reversed(widths):
            self.decoder.append(UpBlock(c, w))
            c = w
        self.classifier = nn.Conv2d(c, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(f"CNN3 needs height and width divisible by 8 (three poolings), got {tuple(x.shape[-2:])}")
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for block, skip in zip(self.decoder, reversed(skips)):
            x = block(x, skip)
        return self.classifier(x)


class UpBlock(nn.Module):
    """ConvTranspose 2x2/2, concatenation with the encoder skip, Conv3x3 + BN + ReLU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_out, 2, stride=2)
        self.conv = nn.Sequential(*conv_bn(2 * c_out, c_out))

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))
