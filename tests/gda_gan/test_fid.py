"""FID callback: torchmetrics path against an independent float64 Frechet distance, disk cache, offline weights."""
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from callbacks.gda_gan import FID, as_rgb01
from datamodules.base import InMemoryImages
from nets import CNN2
from nets.gda_gan.fid_features import (FMNIST_WEIGHTS_MD5, ClassifierFeatures, InceptionFeatures, TinyFeatures,
                                      TorchScriptFeatures)


def sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(a)
    return vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T


def frechet(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2) in float64 (Heusel et al. 2017)."""
    f1, f2 = f1.double(), f2.double()
    mu1, mu2, s1, s2 = f1.mean(0), f2.mean(0), torch.cov(f1.T), torch.cov(f2.T)
    root = sqrtm_psd(s1)
    return float((mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * sqrtm_psd(root @ s2 @ root).trace())


class ToyGenerator(nn.Module):
    latent_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 3 * 16 * 16)

    def sample(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(z)).view(len(z), 3, 16, 16)


def setup(tmp_path: Path, n_train: int = 80, n_test: int = 60) -> tuple[FID, SimpleNamespace, SimpleNamespace]:
    g = torch.Generator().manual_seed(0)
    images = lambda n: torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8)  # noqa: E731
    data = SimpleNamespace(train_set=InMemoryImages(images(n_train), torch.zeros(n_train)),
                           test_set=InMemoryImages(images(n_test), torch.zeros(n_test)), root="fixture")
    torch.manual_seed(0)
    gen = ToyGenerator()
    module = SimpleNamespace(device=torch.device("cpu"), generator=gen, sample=gen.sample)
    fid = FID(feature_extractor=TinyFeatures(16), num_samples=70, num_real_train=None, num_real_test=50,
              batch_size=32, cache_dir=str(tmp_path / "cache"))
    return fid, data, module


def test_fid_matches_independent_frechet_distance(tmp_path: Path) -> None:
    fid, data, module = setup(tmp_path)
    scores = fid.evaluate(SimpleNamespace(datamodule=data), module)
    extractor = fid.extractor
    with torch.no_grad():
        z = torch.randn(70, 8, generator=torch.Generator().manual_seed(fid.seed))
        fake = extractor(as_rgb01(module.sample(z)))
        train = extractor(as_rgb01(data.train_set.images))
        test = extractor(as_rgb01(data.test_set.images[:50]))
    assert scores["fid_tiny_train"] == pytest.approx(frechet(train, fake), rel=1e-6, abs=1e-9)
    assert scores["fid_tiny_test"] == pytest.approx(frechet(test, fake), rel=1e-6, abs=1e-9)


def test_real_statistics_are_cached(tmp_path: Path) -> None:
    fid, data, module = setup(tmp_path)
    trainer = SimpleNamespace(datamodule=data)
    first = fid.evaluate(trainer, module)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2
    data.train_set.images.zero_()  # a cache hit never looks at the images again
    assert fid.evaluate(trainer, module) == first
    fid.num_real["train"] = 40  # a different reference size is a different cache entry
    assert fid.evaluate(trainer, module)["fid_tiny_train"] != first["fid_tiny_train"]


def test_statistics_of_another_feature_space_are_not_reused(tmp_path: Path) -> None:
    fid, data, module = setup(tmp_path)
    trainer = SimpleNamespace(datamodule=data)
    first = fid.evaluate(trainer, module)
    other = FID(feature_extractor=TinyFeatures(16, seed=1), num_samples=70, num_real_train=None, num_real_test=50,
                batch_size=32, cache_dir=str(tmp_path / "cache"))
    assert other.evaluate(trainer, module) != first and len(list((tmp_path / "cache").glob("*.pt"))) == 4
    # a cache file holding another space's statistics under this space's name is recomputed, with a warning
    for path in (tmp_path / "cache").glob("*.pt"):
        saved = torch.load(path, weights_only=True)
        saved["key"] = "another space"
        torch.save(saved, path)
    with pytest.warns(UserWarning, match="recomputing them"):
        assert fid.evaluate(trainer, module) == first


def test_grayscale_is_replicated() -> None:
    assert as_rgb01(torch.zeros(2, 1, 8, 8, dtype=torch.uint8)).shape == (2, 3, 8, 8)


def test_the_default_space_is_the_shipped_fashion_mnist_classifier() -> None:
    fid = FID()
    assert fid.space == "fmnist" and fid.extractor.weights_md5 == FMNIST_WEIGHTS_MD5
    out = fid.extractor(torch.rand(4, 3, 32, 32))  # padded 32x32 images are cropped back to 28x28
    assert out.shape == (4, 128) and torch.isfinite(out).all()


class NotAFeatureMap(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1)  # (N, H, W), not (N, F)


def test_offline_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        InceptionFeatures(str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match="feature checkpoint not found"):
        ClassifierFeatures(str(tmp_path / "missing.pt"))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable torch file"):
        ClassifierFeatures(str(corrupt))
    other_size = tmp_path / "cnn2_5_classes.pt"
    torch.save(CNN2(num_classes=5).state_dict(), other_size)
    with pytest.raises(ValueError, match="does not fit the 128-d CNN2 feature net"):
        ClassifierFeatures(str(other_size))
    with pytest.raises(ValueError, match="is not a TorchScript file"):
        TorchScriptFeatures(str(corrupt))
    scripted = tmp_path / "bad_shape.pt"
    torch.jit.script(NotAFeatureMap()).save(str(scripted))
    with pytest.raises(ValueError, match=r"not \(N, F\)"):
        TorchScriptFeatures(str(scripted))


class InputEcho(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x.amin((1, 2, 3)), x.amax((1, 2, 3))], 1)


@pytest.mark.parametrize("input_range, low, high", [("0-1", 0.0, 1.0), ("0-255", 0.0, 255.0), ("-1-1", -1.0, 1.0),
                                                    ("tf", -1.0, 127 / 128)])
def test_torchscript_features_get_the_input_range_they_expect(tmp_path: Path, input_range: str, low: float,
                                                               high: float) -> None:
    scripted = tmp_path / "echo.pt"
    torch.jit.script(InputEcho()).save(str(scripted))
    extractor = TorchScriptFeatures(str(scripted), input_range=input_range, size=None)
    images = torch.zeros(2, 3, 8, 8)
    images[:, :, 0, 0] = 1.0  # black and white pixels in each image
    assert extractor(images).tolist() == [[pytest.approx(low), pytest.approx(high)]] * 2


def test_inception_loads_local_weights_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Builds a random-weights file in torch-fidelity's format, then loads it through the offline path."""
    pytest.importorskip("torch_fidelity")
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    def no_download(*args, **kwargs):  # a stand-in state dict with the right keys, never the network
        raise AssertionError("tried to download")

    monkeypatch.setattr(fe, "load_state_dict_from_url", no_download)
    with monkeypatch.context() as patch:
        patch.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        patch.setattr(fe, "load_state_dict_from_url", lambda *a, **k: None)
        template = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    weights = tmp_path / "pt_inception.pth"
    torch.save(template.state_dict(), weights)
    features = InceptionFeatures(str(weights))
    out = features(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 2048) and torch.isfinite(out).all()
