"""Evaluation callbacks of the image GANs (Balaji et al. 2021): FID-train/-test, NND, sample and neighbour grids.

FID: one pass over generated samples serves both references: the fake-feature sums of one metric are copied into a
second metric holding the other split's real statistics, and torchmetrics computes each distance in float64.
Real statistics (feature sum, outer-product sum, count) are computed once per dataset / split / sample count /
feature space and cached on disk under a key stored in the file and checked when read. Generated samples come
from private seeded RNGs with BatchNorm in eval mode, so evaluating never changes the training trajectory.
"""
import copy
import hashlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchvision.utils import make_grid, save_image

from nets.gda_gan.fid_features import ClassifierFeatures

REAL_STATES = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")
FAKE_STATES = ("fake_features_sum", "fake_features_cov_sum", "fake_features_num_samples")


def default_cache_dir() -> Path:
    return Path(os.environ.get("OVERPARAM_CACHE", Path.home() / ".cache" / "overparam")) / "fid"


def real_images(dataset: Any, count: Optional[int], batch_size: int) -> Iterator[Tensor]:
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


def real_tensor(dataset: Any, count: Optional[int]) -> Tensor:
    """The first ``count`` images of a split as one float [0, 1] tensor (N, C, H, W)."""
    return torch.cat([as_rgb01(b)[:, :b.shape[1]] for b in real_images(dataset, count, 1000)])


@torch.no_grad()
def generate(pl_module: pl.LightningModule, n: int, seed: int, batch_size: int = 250) -> Iterator[Tensor]:
    """Batches of ``n`` samples in [0, 1] from a private seeded RNG (BatchNorm in eval mode, no state changes)."""
    generator = torch.Generator(device=pl_module.device).manual_seed(seed)
    for start in range(0, n, batch_size):
        z = torch.randn(min(batch_size, n - start), pl_module.generator.latent_dim, generator=generator,
                        device=pl_module.device)
        yield pl_module.sample(z)


def figures_dir(trainer: pl.Trainer) -> Path:
    return Path(trainer.log_dir or ".") / "figures"


class FID(Callback):
    """Logs ``{train,test}/fid_<space>_train`` and ``..._test``: Frechet distances to the training and test split.

    Args:
        feature_extractor: module mapping float images in [0, 1] to (N, F) features with a ``fid_name`` (the
            ``<space>`` in metric names) and a ``fid_id``; default: ``nets.gda_gan.ClassifierFeatures()`` (the
            Fashion-MNIST domain space). Others: ``nets.gda_gan.InceptionFeatures``, ``TorchScriptFeatures``,
            ``TinyFeatures``. Two FID callbacks with different extractors evaluate two spaces.
        num_samples: generated samples per evaluation (both references use the same pass).
        num_real_train, num_real_test: real images in each reference (None: the whole split).
        every_n_gen_iters: also evaluate during training every this many generator steps (0: only at test).
        batch_size: generation and feature batch size.
        seed: seed of the generated samples' noise (the same noise at every evaluation).
        cache_dir: folder for cached real statistics (default: $OVERPARAM_CACHE/fid or ~/.cache/overparam/fid).
    """

    def __init__(self, feature_extractor: Optional[nn.Module] = None, num_samples: int = 10000,
                 num_real_train: Optional[int] = 10000, num_real_test: Optional[int] = 10000,
                 every_n_gen_iters: int = 0, batch_size: int = 250, seed: int = 0,
                 cache_dir: Optional[str] = None) -> None:
        if num_samples < 2 or batch_size < 1 or every_n_gen_iters < 0:
            raise ValueError("FID: num_samples must be >= 2, batch_size >= 1, every_n_gen_iters >= 0")
        self.extractor = feature_extractor if feature_extractor is not None else ClassifierFeatures()
        self.space = getattr(self.extractor, "fid_name", type(self.extractor).__name__.lower())
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.num_real = {"train": num_real_train, "test": num_real_test}
        self.every = every_n_gen_iters
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.best: dict[str, float] = {}
        self._evaluated_at = -1

    @property
    def state_key(self) -> str:
        return f"FID[{self.space}]"  # one state per feature space when several FID callbacks run

    # ------------------------------------------------------------------ statistics
    def new_metric(self, device: torch.device) -> FrechetInceptionDistance:
        return FrechetInceptionDistance(feature=self.extractor, reset_real_features=False, normalize=True).to(device)

    def cache_key(self, datamodule: Any, split: str) -> str:
        dataset = getattr(datamodule, f"{split}_set")
        return "|".join([type(datamodule).__name__, str(getattr(datamodule, "root", "")), split, str(len(dataset)),
                         str(self.num_real[split]), getattr(self.extractor, "fid_id", type(self.extractor).__name__)])

    def cache_path(self, key: str, datamodule: Any, split: str) -> Path:
        return self.cache_dir / f"{type(datamodule).__name__}-{split}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"

    def cached(self, path: Path, key: str) -> Optional[dict[str, Tensor]]:
        """The statistics in ``path`` if they were made under ``key``; a stale or unreadable file is recomputed."""
        if not path.is_file():
            return None
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            ok = saved["key"] == key and saved["real_features_sum"].shape == (self.extractor_dim(),)
        except Exception:  # a truncated or foreign file: recomputing is always safe
            ok = False
        if not ok:
            rank_zero_warn(f"FID: cached real statistics {path} are not those of {key}; recomputing them")
            return None
        return {name: saved[name] for name in REAL_STATES}

    def extractor_dim(self) -> int:
        return int(getattr(self.extractor, "num_features", -1))

    def real_stats(self, datamodule: Any, split: str, device: torch.device) -> dict[str, Tensor]:
        key = self.cache_key(datamodule, split)
        path = self.cache_path(key, datamodule, split)
        stats = self.cached(path, key)
        if stats is not None:
            return {k: v.to(device) for k, v in stats.items()}
        metric = self.new_metric(device)
        for images in real_images(getattr(datamodule, f"{split}_set"), self.num_real[split], self.batch_size):
            metric.update(as_rgb01(images.to(device)), real=True)
        stats = {name: getattr(metric, name) for name in REAL_STATES}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save({"key": key, **{k: v.cpu() for k, v in stats.items()}}, tmp)
        os.replace(tmp, path)  # atomic: concurrent runs never read half a file
        return stats

    @torch.no_grad()
    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        device = pl_module.device
        fake = self.new_metric(device)
        for images in generate(pl_module, self.num_samples, self.seed, self.batch_size):
            fake.update(as_rgb01(images), real=False)
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
                scores[f"fid_{self.space}_{split}"] = float(metric.compute())
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

    def results(self) -> dict[str, Any]:
        return {f"fid_{self.space}_feature_id": getattr(self.extractor, "fid_id", None),
                f"fid_{self.space}_weights_md5": getattr(self.extractor, "weights_md5", None),
                f"fid_{self.space}_num_samples": self.num_samples,
                **{f"best_{k}": v for k, v in self.best.items()}}

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "evaluated_at": self._evaluated_at}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self._evaluated_at = state_dict["best"], state_dict["evaluated_at"]


def real_uint8(dataset: Any, count: Optional[int] = None) -> Tensor:
    """The first ``count`` images of a split as one uint8 tensor (N, C, H, W): 60k Fashion-MNIST images = 47 MB."""
    return torch.cat([b if b.dtype == torch.uint8 else (b * 255).round().to(torch.uint8)
                      for b in real_images(dataset, count, 1000)])


def to_pm1(images: Tensor) -> Tensor:
    """uint8 or [0, 1] images -> float [-1, 1], the critics' input range."""
    return (images.float().div(255) if images.dtype == torch.uint8 else images.float()) * 2 - 1


class NND(Callback):
    """Neural-net divergence of the final generator (Gulrajani, Raffel & Metz 2019; the paper's Fig. 6).

    A fresh copy of ``critic`` (re-initialised from ``seed``) is trained from scratch with the WGAN-GP loss
    (Adam 1e-4 (0.5, 0.999), GP 10, batch 64) to separate ``pool`` generated samples from training images; then
    ``test/nnd`` = mean D(test images) - mean D(new samples) over ``num_eval`` of each. Lower = closer to the data.
    ``memorised`` adds ``test/nnd_memorised``, whose "samples" are training images (the paper's memorisation
    baseline). Use one critic architecture for a whole sweep, so values compare across widths.
    """

    def __init__(self, critic: nn.Module, steps: int = 1000, pool: int = 10000, num_eval: int = 2000,
                 memorised: bool = False, seed: int = 0) -> None:
        if min(steps, pool, num_eval) < 1:
            raise ValueError("NND: steps, pool and num_eval must be >= 1")
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in critic.modules()):
            raise ValueError("NND: the critic has BatchNorm, which breaks the per-sample gradient penalty")
        self.critic, self.steps, self.pool, self.num_eval = critic, steps, pool, num_eval
        self.memorised, self.seed = memorised, seed

    def divergence(self, train: Tensor, fakes: Tensor, test: Tensor, new_fakes: Tensor, device: torch.device) -> float:
        from lit_modules.gda_gan import critic_loss

        # the test stage runs under inference mode; this critic trains, so it needs autograd back
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                torch.inference_mode(False), torch.enable_grad():
            torch.manual_seed(self.seed)
            critic = copy.deepcopy(self.critic).to(device)
            for m in critic.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
            opt = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.5, 0.999))
            for _ in range(self.steps):
                real = to_pm1(train[torch.randint(len(train), (64,))].clone().to(device))
                fake = to_pm1(fakes[torch.randint(len(fakes), (64,))].clone().to(device))
                loss, _, _ = critic_loss(critic, real, fake, 10.0)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        with torch.no_grad():
            score = lambda images: torch.cat([critic(to_pm1(b.to(device))) for b in images.split(500)]).mean()  # noqa: E731
            return float(score(test) - score(new_fakes))

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        data, device = trainer.datamodule, pl_module.device
        train, test = real_uint8(data.train_set), real_uint8(data.test_set, self.num_eval)
        fakes = torch.cat(list(generate(pl_module, self.pool, self.seed + 1))).cpu()
        new_fakes = torch.cat(list(generate(pl_module, len(test), self.seed + 2))).cpu()
        values = {"test/nnd": self.divergence(train, fakes, test, new_fakes, device)}
        if self.memorised:
            pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed))
            values["test/nnd_memorised"] = self.divergence(train, train[pick[:self.pool]], test,
                                                           train[pick[self.pool:self.pool + len(test)]], device)
        pl_module.log_dict(values)

    def results(self) -> dict[str, Any]:
        return {"nnd_critic": type(self.critic).__name__, "nnd_critic_k": getattr(self.critic, "k", None),
                "nnd_steps": self.steps, "nnd_pool": self.pool, "nnd_num_eval": self.num_eval}


class SampleGrids(Callback):
    """At test: ``figures/samples.png`` (``num_samples`` seeded samples) and ``figures/nearest_neighbours.png``
    (the paper's App. E: each of ``rows`` samples followed by its ``neighbours`` nearest training images by L2
    distance on [0, 1] pixels), also sent to W&B; ``test/nn_l2`` = the mean distance of a sample to its nearest
    training image (small values would flag memorisation)."""

    def __init__(self, num_samples: int = 64, rows: int = 16, neighbours: int = 3, seed: int = 0) -> None:
        if min(num_samples, rows, neighbours) < 1 or rows > num_samples:
            raise ValueError("SampleGrids: num_samples, rows, neighbours must be >= 1 and rows <= num_samples")
        self.num_samples, self.rows, self.neighbours, self.seed = num_samples, rows, neighbours, seed

    @torch.no_grad()
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        samples = torch.cat(list(generate(pl_module, self.num_samples, self.seed))).cpu()
        train = real_uint8(trainer.datamodule.train_set)
        flat = samples.flatten(1)
        dist = torch.cat([torch.cdist(flat, chunk.flatten(1).float().div(255)) for chunk in train.split(10000)], 1)
        nearest = dist.topk(self.neighbours, largest=False)
        pl_module.log("test/nn_l2", nearest.values[:, 0].mean())
        rows = torch.cat([samples[:self.rows, None], train[nearest.indices[:self.rows]].float().div(255)], 1)
        grids = {"samples": make_grid(samples, nrow=8, padding=2, pad_value=1.0),
                 "nearest_neighbours": make_grid(rows.flatten(0, 1), nrow=1 + self.neighbours, padding=2,
                                                 pad_value=1.0)}
        folder = figures_dir(trainer)
        if not trainer.is_global_zero:
            return
        folder.mkdir(parents=True, exist_ok=True)
        for name, grid in grids.items():
            save_image(grid, folder / f"{name}.png")
            for logger in trainer.loggers:
                if isinstance(logger, pl.loggers.WandbLogger):
                    logger.log_image(f"figures/{name}", [grid], caption=[f"generator step {pl_module.gen_iters}"])
