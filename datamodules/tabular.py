"""Small regression data sets (California Housing, a synthetic stand-in), held in float64.

By default each training "batch" is the whole seeded subset; one epoch repeats it ``steps_per_epoch`` times, so a
full-batch optimiser takes one step per batch and Lightning checkpoints every ``steps_per_epoch`` steps. With
``batch_size`` an epoch is one seeded shuffle of the training rows cut into minibatches.
"""
import csv
import io
import os
import tarfile
from pathlib import Path
from typing import Optional

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.base import DataError
from datamodules.loader import EpochShuffle, ResumableBatchSampler, ResumableDataLoader, keep_batch

FEATURES = ("MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup", "Latitude", "Longitude")
TARGET = "MedHouseVal"


class FullBatch(Dataset):
    """``length`` copies of one batch (x, y); ``__getitems__`` hands the batch out whole."""

    def __init__(self, x: Tensor, y: Tensor, length: int = 1) -> None:
        self.x, self.y, self.length = x, y, length

    def __len__(self) -> int:
        return self.length

    def __getitems__(self, idx: list[int]) -> tuple[Tensor, Tensor]:
        return self.x, self.y


class Rows(Dataset):
    """Rows of (x, y); ``__getitems__`` hands a minibatch out as two tensors."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitems__(self, idx: list[int]) -> tuple[Tensor, Tensor]:
        return self.x[idx], self.y[idx]


class FullBatchRegressionDataModule(pl.LightningDataModule):
    """A seeded subset of ``n_train`` rows (and disjoint ``n_val`` and ``n_test`` rows) of a regression table.

    Features are standardised with the training subset's mean and (population) std, like scikit-learn's
    StandardScaler fitted on the subset; the target is left raw. Everything is float64. ``seed`` fixes the split;
    the minibatch order (``batch_size`` set) follows the run's seed.
    """

    def __init__(self, n_train: int = 256, n_test: int = 256, seed: int = 0, steps_per_epoch: int = 100,
                 n_val: int = 0, batch_size: Optional[int] = None) -> None:
        super().__init__()
        if n_train <= 0 or n_test < 0 or n_val < 0 or steps_per_epoch <= 0 or (batch_size is not None and batch_size <= 0):
            raise ValueError(f"need n_train > 0, n_val >= 0, n_test >= 0, steps_per_epoch > 0, batch_size > 0; got "
                             f"{n_train}, {n_val}, {n_test}, {steps_per_epoch}, {batch_size}")
        self.n_train, self.n_test, self.seed, self.steps_per_epoch = n_train, n_test, seed, steps_per_epoch
        self.n_val, self.batch_size = n_val, batch_size
        self.train_xy: Optional[tuple[Tensor, Tensor]] = None
        self.val_xy: Optional[tuple[Tensor, Tensor]] = None
        self.test_xy: Optional[tuple[Tensor, Tensor]] = None

    def load_table(self) -> tuple[np.ndarray, np.ndarray]:
        """All rows: features (N, d) and target (N,)."""
        raise NotImplementedError

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_xy is not None:
            return
        x, y = self.load_table()
        if len(x) < self.n_train + self.n_val + self.n_test:
            raise ValueError(f"{type(self).__name__}: the table has {len(x)} rows, fewer than n_train={self.n_train} + "
                             f"n_val={self.n_val} + n_test={self.n_test} = {self.n_train + self.n_val + self.n_test}")
        order = np.random.default_rng(self.seed).permutation(len(x))
        # the test rows come right after the training rows, so n_val = 0 keeps the draws of earlier runs
        train, test = order[:self.n_train], order[self.n_train:self.n_train + self.n_test]
        val = order[self.n_train + self.n_test:self.n_train + self.n_test + self.n_val]
        mean, std = x[train].mean(0), x[train].std(0)
        std[std == 0] = 1.0  # as StandardScaler: constant columns are centred, not scaled
        as_t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)  # noqa: E731
        self.train_xy = as_t((x[train] - mean) / std), as_t(y[train])
        self.test_xy = as_t((x[test] - mean) / std), as_t(y[test])
        self.val_xy = as_t((x[val] - mean) / std), as_t(y[val])

    @property
    def in_features(self) -> int:
        self.setup()
        return self.train_xy[0].shape[1]

    def train_dataloader(self) -> DataLoader:
        if self.trainer is not None and self.trainer.world_size > 1:
            raise ValueError(f"{type(self).__name__} serves one full batch; run it on a single process")
        if self.batch_size is not None:  # PL_GLOBAL_SEED: the run's seed_everything
            order = EpochShuffle(self.n_train, shuffle=True, seed=int(os.environ.get("PL_GLOBAL_SEED", 0)))
            return ResumableDataLoader(Rows(*self.train_xy), ResumableBatchSampler(order, self.batch_size),
                                       collate_fn=keep_batch)
        sampler = ResumableBatchSampler(EpochShuffle(self.steps_per_epoch, shuffle=False), 1)
        return ResumableDataLoader(FullBatch(*self.train_xy, self.steps_per_epoch), sampler, collate_fn=keep_batch)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(FullBatch(*self.val_xy), batch_size=1, collate_fn=keep_batch) if self.n_val else []

    def test_dataloader(self) -> DataLoader:
        data = self.test_xy if self.n_test > 0 else self.train_xy
        return DataLoader(FullBatch(*data), batch_size=1, collate_fn=keep_batch)


class CaliforniaHousingDataModule(FullBatchRegressionDataModule):
    """California Housing (20,640 rows, 8 features, target in $100k) as scikit-learn serves it.

    Reads, from ``root``: ``california_housing.csv`` (scikit-learn's column names MedInc ... Longitude,
    MedHouseVal, e.g. ``fetch_california_housing(as_frame=True).frame.to_csv(index=False)``), scikit-learn's
    cache ``cal_housing_py3.pkz``, or the raw archive ``cal_housing.tgz``. With ``download`` and scikit-learn
    installed it fetches into ``root`` when none is present.
    """

    def __init__(self, root: str = "data", download: bool = False, n_train: int = 256, n_test: int = 256,
                 seed: int = 0, steps_per_epoch: int = 100, n_val: int = 0, batch_size: Optional[int] = None) -> None:
        super().__init__(n_train, n_test, seed, steps_per_epoch, n_val, batch_size)
        self.root, self.download = Path(root).expanduser(), download

    def load_table(self) -> tuple[np.ndarray, np.ndarray]:
        csv_path, pkz, tgz = (self.root / n for n in ("california_housing.csv", "cal_housing_py3.pkz",
                                                         "cal_housing.tgz"))
        try:
            if csv_path.is_file():
                return read_csv(csv_path)
            if pkz.is_file():
                import joblib  # scikit-learn's cache format; joblib comes with scikit-learn

                return derive_features(np.asarray(joblib.load(pkz), dtype=np.float64))
            if tgz.is_file():
                return read_raw_archive(tgz)
        except (OSError, ValueError, KeyError, EOFError, tarfile.TarError) as err:
            raise DataError(f"CaliforniaHousingDataModule: cannot read {self.root}: {err}") from err
        except ImportError as err:
            raise DataError(f"CaliforniaHousingDataModule: reading {pkz} needs joblib (pip install joblib)") from err
        if self.download:
            try:
                from sklearn.datasets import fetch_california_housing

                bunch = fetch_california_housing(data_home=str(self.root), download_if_missing=True)
                return np.asarray(bunch.data, np.float64), np.asarray(bunch.target, np.float64)
            except Exception as err:  # ImportError or any network error
                raise DataError(self.missing(f"fetching failed ({type(err).__name__}: {err})")) from err
        raise DataError(self.missing("download is off"))

    def missing(self, why: str) -> str:
        return (f"CaliforniaHousingDataModule: no california_housing.csv, cal_housing_py3.pkz or cal_housing.tgz "
                f"in {self.root} and {why}; put one there (a CSV with columns {', '.join(FEATURES)}, {TARGET}) "
                "or set --data.root to the folder that holds it")


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Features and target from scikit-learn's CSV layout; a bad cell is named by file, line and column."""
    with open(path, newline="") as file:
        reader = csv.reader(file)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path} is empty")
        header = [h.strip() for h in header]
        if len(header) == 1 and any(d in header[0] for d in ";\t|"):
            raise ValueError(f"{path} line 1: the header is one field ({header[0][:60]!r}): columns must be "
                             "separated by commas")
        missing = [c for c in (*FEATURES, TARGET) if c not in header]
        if missing:
            raise ValueError(f"{path} lacks columns {', '.join(missing)} (has {', '.join(header)})")
        cols = [header.index(c) for c in (*FEATURES, TARGET)]
        rows = [[cell(row, i, header[i], path, reader.line_num) for i in cols] for row in reader]
    if not rows:
        raise ValueError(f"{path} has a header but no data rows")
    table = np.array(rows, dtype=np.float64)
    return table[:, :-1], table[:, -1]


def cell(row: list[str], i: int, column: str, path: Path, line: int) -> float:
    """One finite number, or an error naming the file, the line and the column."""
    text = row[i].strip() if i < len(row) else ""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not np.isfinite(value):
        what = "is empty" if not text else f"holds {text[:30]!r}, not a finite number"
        raise ValueError(f"{path} line {line}, column {column}: the cell {what}")
    return value


def derive_features(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's features from its cached column order: medianHouseValue, medianIncome,
    housingMedianAge, totalRooms, totalBedrooms, population, households, latitude, longitude."""
    if raw.ndim != 2 or raw.shape[1] != 9:
        raise ValueError(f"expected 9 columns, got shape {raw.shape}")
    value, income, age, rooms, bedrooms, population, households, lat, lon = raw.T
    x = np.stack([income, age, rooms / households, bedrooms / households, population, population / households,
                  lat, lon], axis=1)
    return x, value / 100_000.0


def read_raw_archive(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``cal_housing.tgz`` (member CaliforniaHousing/cal_housing.data, columns longitude, latitude,
    housingMedianAge, totalRooms, totalBedrooms, population, households, medianIncome, medianHouseValue)."""
    with tarfile.open(path) as archive:
        member = archive.extractfile("CaliforniaHousing/cal_housing.data")
        raw = np.loadtxt(io.TextIOWrapper(member), delimiter=",", ndmin=2)
    return derive_features(raw[:, [8, 7, 2, 3, 4, 5, 6, 1, 0]])


class SyntheticRegressionDataModule(FullBatchRegressionDataModule):
    """A synthetic stand-in (NOT California Housing): x ~ N(0, I_d) (or Student-t(2) with ``heavy_tailed``),
    y = sin(x_1) + 0.5 x_2^2 + 2 + noise * N(0, 1), the reference simulation of docs/gauss_newton.md ("Data").

    ``near_duplicates`` = eps > 0 makes every odd row a copy of the row before it plus eps * N(0, I_d), which
    shrinks the smallest NTK eigenvalue (the conditioning lambda_0 of the theory) as eps -> 0.
    """

    def __init__(self, in_features: int = 8, heavy_tailed: bool = False, noise: float = 0.0,
                 near_duplicates: float = 0.0, n_train: int = 256, n_test: int = 256, seed: int = 0,
                 steps_per_epoch: int = 100) -> None:
        super().__init__(n_train, n_test, seed, steps_per_epoch)
        if in_features < 2 or near_duplicates < 0:
            raise ValueError(f"SyntheticRegressionDataModule needs in_features >= 2 and near_duplicates >= 0, got "
                             f"{in_features}, {near_duplicates}")
        self.d, self.heavy_tailed, self.noise, self.near_duplicates = in_features, heavy_tailed, noise, near_duplicates

    def load_table(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed + 1)
        shape = (self.n_train + self.n_test, self.d)
        x = rng.standard_t(2, shape) if self.heavy_tailed else rng.standard_normal(shape)
        if self.near_duplicates > 0:
            x[1::2] = x[0::2][:len(x[1::2])] + self.near_duplicates * rng.standard_normal(x[1::2].shape)
        y = np.sin(x[:, 0]) + 0.5 * x[:, 1] ** 2 + 2 + self.noise * rng.standard_normal(len(x))
        return x, y
