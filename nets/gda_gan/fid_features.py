"""Feature extractors for the Frechet distance: Inception-v3 from a local weights file, or a tiny fixed conv net.

Both take float images in [0, 1] of shape (N, 3, H, W) and return (N, F) features, and carry ``fid_id``, the
string that names their feature space in cached real statistics.
"""
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class InceptionFeatures(nn.Module):
    """2048-d pool features of the FID Inception-v3 (torch-fidelity's port of the TF graph), loaded offline.

    ``weights`` is a local copy of torch-fidelity's ``pt_inception-2015-12-05-6726825d.pth``; nothing is downloaded.
    Needs the ``torch-fidelity`` package (torchmetrics' NoTrainInceptionV3 is built on it).
    """

    def __init__(self, weights: str) -> None:
        super().__init__()
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Inception weights not found at {path}: put torch-fidelity's "
                                    "pt_inception-2015-12-05-6726825d.pth there (nothing is downloaded)")
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.inception = NoTrainInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
        self.num_features, self.fid_id = 2048, f"inception-2048:{path.name}:{path.stat().st_size}"

    def forward(self, x: Tensor) -> Tensor:
        # the port expects uint8 in [0, 255] and resizes to 299 itself, as the TF reference does
        return self.inception((x.clamp(0, 1) * 255).round().to(torch.uint8)).reshape(len(x), -1)


class TinyFeatures(nn.Module):
    """A fixed, seeded random conv net (two stride-2 convs, ReLU, global mean pool); for offline tests and for
    "FD in a random feature space" when no Inception weights are at hand. Not comparable with published FIDs."""

    def __init__(self, num_features: int = 64, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 32, 3, 2, 1)
        self.conv2 = nn.Conv2d(32, num_features, 3, 2, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) / (p[0].numel() ** 0.5 if p.ndim > 1 else 10))
        self.requires_grad_(False)
        self.num_features, self.fid_id = num_features, f"tiny-{num_features}-seed{seed}"

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x.float())))).mean((2, 3))
