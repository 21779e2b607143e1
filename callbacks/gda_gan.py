"""FID-train and FID-test of a GAN generator through torchmetrics' FrechetInceptionDistance.

One pass over generated samples serves both references: the fake-feature sums of one metric are copied into a
second metric holding the other split's real statistics, and torchmetrics computes each distance in float64.
Real statistics (feature sum, outer-product sum, count) are computed once per dataset / split / sample count /
feature space and cached on disk. Generated samples come from a private seeded RNG with BatchNorm in eval mode,
so evaluating never changes the training trajectory.
"""
import hashlib
import os
import warnings
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance

from nets.gda_gan.fid_features import InceptionFeatures

REAL_STATES = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")
FAKE_STATES = ("fake_features_sum", "fake_features_cov_sum", "fake_features_num_samples")


def default_cache_dir() -> Path:
    return Path(os.environ.get("OVERPARAM_CACHE", Path.home() / ".cache" / "overparam")) / "fid"


def real_images(dataset: Any, count: Optional[int], batch_size: int) -> Any:
    """uint8 (B, C, H, W) batches of the first ``count`` images of a (image, target) dataset."""
    total = len(dataset) if count is None else min(count, len(dataset))
    for start in range(0, total, batch_size):
        idx = list(range(start, min(start + batch_size, total)))
        items = dataset.__getitems__(idx) if hasattr(dataset, "__getitems__") else [dataset[i] for i in idx]
        # in-memory datasets return one (images, targets) batch, others a list of items
        yield items[0] if isinstance(items, tuple) else torch.stack([torch.as_tensor(item[0]) for item in items])


def as_rgb01(images: Tensor) -> Tensor:
    """uint8 or [0, 1] float images -> float [0, 1] with 3 channels (grayscale is replicated)."""
    x = images.float().div(255) if images.dtype == torch.uint8 else images.float()
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class FID(Callback):
    """Logs ``{train,test}/fid_train`` and ``{train,test}/fid_test`` (FID against the training and the test split).

    Args:
        feature_extractor: module mapping float images in [0, 1] to (N, F) features (e.g. ``nets.gda_gan.TinyFeatures``);
            default: Inception-v3 pool features from ``inception_weights``.
        inception_weights: local path of torch-fidelity's Inception weights (needs the torch-fidelity package).
        num_samples: generated samples per evaluation (both references use the same pass).
        num_real_train, num_real_test: real images in each reference (None: the whole split).
        every_n_gen_iters: also evaluate during training every this many generator iterations (0: only at test).
        batch_size: generation and feature batch size.
        seed: seed of the generated samples' noise (the same noise at every evaluation).
        cache_dir: folder for cached real statistics (default: $OVERPARAM_CACHE/fid or ~/.cache/overparam/fid).
    """

    def __init__(self, feature_extractor: Optional[nn.Module] = None, inception_weights: Optional[str] = None,
                 num_samples: int = 10000, num_real_train: Optional[int] = 10000, num_real_test: Optional[int] = 10000,
                 every_n_gen_iters: int = 0, batch_size: int = 250, seed: int = 0,
                 cache_dir: Optional[str] = None) -> None:
        if feature_extractor is None and inception_weights is None:
            raise ValueError("FID needs --trainer.callbacks...inception_weights PATH (a local Inception weights file; "
                             "nothing is downloaded) or a feature_extractor module")
        if num_samples < 2 or batch_size < 1 or every_n_gen_iters < 0:
            raise ValueError("FID: num_samples must be >= 2, batch_size >= 1, every_n_gen_iters >= 0")
        self.extractor = feature_extractor if feature_extractor is not None else InceptionFeatures(inception_weights)
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.num_real = {"train": num_real_train, "test": num_real_test}
        self.every = every_n_gen_iters
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.best: dict[str, float] = {}
        self._evaluated_at = -1

    # ------------------------------------------------------------------ statistics
    def new_metric(self, device: torch.device) -> FrechetInceptionDistance:
        return FrechetInceptionDistance(feature=self.extractor, reset_real_features=False, normalize=True).to(device)

    def cache_path(self, datamodule: Any, split: str) -> Path:
        dataset = getattr(datamodule, f"{split}_set")
        key = "|".join([type(datamodule).__name__, str(getattr(datamodule, "root", "")), split, str(len(dataset)),
                        str(self.num_real[split]), getattr(self.extractor, "fid_id", type(self.extractor).__name__)])
        return self.cache_dir / f"{type(datamodule).__name__}-{split}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"

    def real_stats(self, datamodule: Any, split: str, device: torch.device) -> dict[str, Tensor]:
        path = self.cache_path(datamodule, split)
        if path.is_file():
            return torch.load(path, map_location=device, weights_only=True)
        metric = self.new_metric(device)
        for images in real_images(getattr(datamodule, f"{split}_set"), self.num_real[split], self.batch_size):
            metric.update(as_rgb01(images.to(device)), real=True)
        stats = {name: getattr(metric, name) for name in REAL_STATES}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({k: v.cpu() for k, v in stats.items()}, tmp)
        os.replace(tmp, path)  # atomic: concurrent runs never read half a file
        return stats

    @torch.no_grad()
    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        device = pl_module.device
        fake = self.new_metric(device)
        generator = torch.Generator(device=device).manual_seed(self.seed)
        latent_dim = pl_module.generator.latent_dim
        for start in range(0, self.num_samples, self.batch_size):
            n = min(self.batch_size, self.num_samples - start)
            z = torch.randn(n, latent_dim, generator=generator, device=device)
            fake.update(as_rgb01(pl_module.sample(z)), real=False)
        scores = {}
        for split in ("train", "test"):
            metric = self.new_metric(device)
            for name, value in self.real_stats(trainer.datamodule, split, device).items():
                setattr(metric, name, value.to(device))
            for name in FAKE_STATES:
                setattr(metric, name, getattr(fake, name).clone())
            metric.orig_dtype = torch.float64  # compute() casts its float64 result to this (set by update())
            with warnings.catch_warnings():  # the states were filled by hand, not by update()
                warnings.filterwarnings("ignore", message=".*was called before the ``update`` method.*")
                scores[f"fid_{split}"] = float(metric.compute())
        return scores

    # ------------------------------------------------------------------ hooks
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        gen_iters = pl_module.gen_iters
        if self.every and gen_iters % self.every == 0 and gen_iters != self._evaluated_at:
            self._evaluated_at = gen_iters
            scores = self.evaluate(trainer, pl_module)
            for name, value in scores.items():
                self.best[name] = min(value, self.best.get(name, float("inf")))
            pl_module.log_dict({f"train/{k}": v for k, v in scores.items()})
            pl_module.log_dict({f"train/best_{k}": v for k, v in self.best.items()})
            pl_module.reset_iteration_clock()  # keep evaluation time out of the seconds per generator iteration

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.log_dict({f"test/{k}": v for k, v in self.evaluate(trainer, pl_module).items()})

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "evaluated_at": self._evaluated_at}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self._evaluated_at = state_dict["best"], state_dict["evaluated_at"]
