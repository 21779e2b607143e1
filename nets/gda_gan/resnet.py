"""ResNet generators and critics with width k, after WGAN-GP's ``gan_cifar_resnet.py`` (32x32, DIM = k, standard
k = 128) and ``gan_64x64.py`` (64x64, dim = k, channels k .. 8k). Fig. 8 of Balaji et al. is missing, so the
layouts are assumptions. Pre-activation blocks, nearest upsampling, average-pool downsampling, no normalisation in
the critic; Xavier-uniform weights, zero biases.
"""
from torch import Tensor, nn
from torch.nn import functional as F

from nets.gda_gan.dcgan import check_width


def xavier_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ResBlock(nn.Module):
    """Pre-activation residual block; ``resample`` is ``up`` (G, with BN), ``down`` or None (critic, no norm).

    ``first`` marks the critic's optimised first block (no activation before the first conv, pooled shortcut).
    """

    def __init__(self, c_in: int, c_out: int, resample: str | None, first: bool = False) -> None:
        super().__init__()
        self.resample, self.first = resample, first
        generator = resample == "up"
        self.norm1 = nn.BatchNorm2d(c_in) if generator else nn.Identity()
        self.norm2 = nn.BatchNorm2d(c_out) if generator else nn.Identity()
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, 1, 1), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out or resample else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = x if self.first else F.relu(self.norm1(x))
        if self.resample == "up":
            h, x = F.interpolate(h, scale_factor=2.0), F.interpolate(x, scale_factor=2.0)
        h = self.conv2(F.relu(self.norm2(self.conv1(h))))
        if self.resample == "down":
            h = F.avg_pool2d(h, 2)
            x = self.shortcut(F.avg_pool2d(x, 2)) if self.first else F.avg_pool2d(self.shortcut(x), 2)
            return h + x
        return h + self.shortcut(x)


class ResNetGenerator(nn.Module):
    """Linear(z -> 4x4 x mult[0] k) -> up-blocks through ``mults`` -> BN -> ReLU -> Conv3x3 -> tanh."""

    def __init__(self, k: int, latent_dim: int, channels: int, mults: tuple[int, ...]) -> None:
        super().__init__()
        check_width(k, latent_dim, channels)
        self.k = k
        self.latent_dim, self.c0 = latent_dim, mults[0] * k
        self.fc = nn.Linear(latent_dim, 16 * self.c0)
        self.blocks = nn.Sequential(*(ResBlock(a * k, b * k, "up") for a, b in zip(mults[:-1], mults[1:])))
        self.out = nn.Sequential(nn.BatchNorm2d(mults[-1] * k), nn.ReLU(True),
                                 nn.Conv2d(mults[-1] * k, channels, 3, 1, 1), nn.Tanh())
        xavier_init(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.out(self.blocks(self.fc(z).view(len(z), self.c0, 4, 4)))


class ResNetGenerator32(ResNetGenerator):
    """CIFAR layout: three up-blocks k -> k (4 -> 32 px)."""

    def __init__(self, k: int = 128, latent_dim: int = 128, channels: int = 3) -> None:
        super().__init__(k, latent_dim, channels, (1, 1, 1, 1))


class ResNetGenerator64(ResNetGenerator):
    """64x64 layout: up-blocks 8k -> 8k -> 4k -> 2k -> k (4 -> 64 px)."""

    def __init__(self, k: int = 64, latent_dim: int = 128, channels: int = 3) -> None:
        super().__init__(k, latent_dim, channels, (8, 8, 4, 2, 1))


class ResNetCritic32(nn.Module):
    """Optimised block C -> k (down), block k -> k (down), two blocks k -> k, ReLU, global mean pool, Linear."""

    def __init__(self, k: int = 128, channels: int = 3) -> None:
        super().__init__()
        check_width(k, channels=channels)
        self.k = k
        self.blocks = nn.Sequential(ResBlock(channels, k, "down", first=True), ResBlock(k, k, "down"),
                                    ResBlock(k, k, None), ResBlock(k, k, None))
        self.fc = nn.Linear(k, 1)
        xavier_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(F.relu(self.blocks(x)).mean((2, 3))).squeeze(1)


class ResNetCritic64(nn.Module):
    """Conv3x3 C -> k, down-blocks k -> 2k -> 4k -> 8k -> 8k (64 -> 4 px), Linear(4*4*8k -> 1)."""

    def __init__(self, k: int = 64, channels: int = 3) -> None:
        super().__init__()
        check_width(k, channels=channels)
        self.k = k
        mults = (1, 2, 4, 8, 8)
        self.stem = nn.Conv2d(channels, k, 3, 1, 1)
        self.blocks = nn.Sequential(*(ResBlock(a * k, b * k, "down") for a, b in zip(mults[:-1], mults[1:])))
        self.fc = nn.Linear(16 * 8 * k, 1)
        xavier_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.blocks(self.stem(x)).flatten(1)).squeeze(1)
