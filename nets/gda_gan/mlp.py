"""MLP generator and critic for MNIST with width k (Fig. 3 of Balaji et al. 2021; depth assumed: two hidden layers)."""
import math

from torch import Tensor, nn

from nets.gda_gan.dcgan import check_width


class MLPGenerator(nn.Module):
    """z -> Linear(k) -> ReLU -> Linear(k) -> ReLU -> Linear(prod(shape)) -> tanh, reshaped to ``shape``."""

    def __init__(self, k: int = 512, latent_dim: int = 128, shape: tuple[int, ...] = (1, 28, 28)) -> None:
        super().__init__()
        check_width(k, latent_dim)
        self.k = k
        self.latent_dim, self.shape = latent_dim, tuple(shape)
        self.net = nn.Sequential(nn.Linear(latent_dim, k), nn.ReLU(True), nn.Linear(k, k), nn.ReLU(True),
                                 nn.Linear(k, math.prod(shape)), nn.Tanh())

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(len(z), *self.shape)


class MLPCritic(nn.Module):
    """flatten -> Linear(k) -> LeakyReLU(0.2) -> Linear(k) -> LeakyReLU(0.2) -> Linear(1)."""

    def __init__(self, k: int = 512, shape: tuple[int, ...] = (1, 28, 28)) -> None:
        super().__init__()
        check_width(k)
        self.k = k
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), k), nn.LeakyReLU(0.2, True),
                                 nn.Linear(k, k), nn.LeakyReLU(0.2, True), nn.Linear(k, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)
