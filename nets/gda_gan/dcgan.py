"""DCGAN generators and critics with one width knob k (Balaji et al. 2021, Fig. 8 is missing: layouts assumed).

DCGAN-32 follows WGAN-GP's ``gan_cifar.py`` with DIM = k (channels 4k, 2k, k); DCGAN-64 follows Radford et al.
with ngf = ndf = k (channels 8k .. k). Critics have no normalisation, which would break the per-sample gradient
penalty. Weights N(0, 0.02), BatchNorm gamma N(1, 0.02).
"""
from torch import Tensor, nn


def check_width(k: int, latent_dim: int = 1, channels: int = 1) -> None:
    if k < 1 or latent_dim < 1 or channels < 1:
        raise ValueError(f"width k, latent_dim and channels must be >= 1, got {k}, {latent_dim}, {channels}")


def dcgan_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def up(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]


def down(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.LeakyReLU(0.2, True)]


class DCGANGenerator32(nn.Module):
    """z -> Linear(4*4*4k) -> BN -> ReLU -> [4k,4,4] -> ConvT 4k->2k->k (BN, ReLU) -> ConvT k->C -> tanh (32x32)."""

    def __init__(self, k: int = 64, latent_dim: int = 128, channels: int = 3) -> None:
        super().__init__()
        check_width(k, latent_dim, channels)
        self.k, self.latent_dim = k, latent_dim
        self.fc = nn.Sequential(nn.Linear(latent_dim, 16 * 4 * k, bias=False), nn.BatchNorm1d(16 * 4 * k),
                                nn.ReLU(True))
        self.net = nn.Sequential(*up(4 * k, 2 * k), *up(2 * k, k), nn.ConvTranspose2d(k, channels, 4, 2, 1), nn.Tanh())
        dcgan_init(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.fc(z).view(len(z), 4 * self.k, 4, 4))


class DCGANCritic32(nn.Module):
    """Conv C->k->2k->4k (stride 2, LeakyReLU 0.2) -> Linear(4*4*4k -> 1); no normalisation."""

    def __init__(self, k: int = 64, channels: int = 3) -> None:
        super().__init__()
        check_width(k, channels=channels)
        self.k = k
        self.net = nn.Sequential(*down(channels, k), *down(k, 2 * k), *down(2 * k, 4 * k), nn.Flatten(),
                                 nn.Linear(16 * 4 * k, 1))
        dcgan_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)


class DCGANGenerator64(nn.Module):
    """ConvT(z -> 8k, 4x4) then 8k -> 4k -> 2k -> k (ConvT stride 2, BN, ReLU) -> ConvT k -> C -> tanh (64x64)."""

    def __init__(self, k: int = 64, latent_dim: int = 128, channels: int = 3) -> None:
        super().__init__()
        check_width(k, latent_dim, channels)
        self.k = k
        self.latent_dim = latent_dim
        self.net = nn.Sequential(nn.ConvTranspose2d(latent_dim, 8 * k, 4, 1, 0, bias=False), nn.BatchNorm2d(8 * k),
                                 nn.ReLU(True), *up(8 * k, 4 * k), *up(4 * k, 2 * k), *up(2 * k, k),
                                 nn.ConvTranspose2d(k, channels, 4, 2, 1), nn.Tanh())
        dcgan_init(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z[:, :, None, None])


class DCGANCritic64(nn.Module):
    """Conv C -> k -> 2k -> 4k -> 8k (stride 2, LeakyReLU 0.2) -> Conv(8k -> 1, 4x4); no normalisation."""

    def __init__(self, k: int = 64, channels: int = 3) -> None:
        super().__init__()
        check_width(k, channels=channels)
        self.k = k
        self.net = nn.Sequential(*down(channels, k), *down(k, 2 * k), *down(2 * k, 4 * k), *down(4 * k, 8 * k),
                                 nn.Conv2d(8 * k, 1, 4, 1, 0))
        dcgan_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten()
