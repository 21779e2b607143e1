"""Datamodules over real on-disk formats: IDX (plain and .gz), CIFAR pickles, the shipped Fashion-MNIST slice."""
import gzip
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest
import torch

from datamodules import CIFAR10DataModule, CIFAR100DataModule, DataError, FashionMNISTDataModule, MNISTDataModule
from datamodules.base import extract_gz_archives, random_crop_flip
from datamodules.loader import EpochShuffle, ResumableBatchSampler, ResumableDataLoader
from tests.conftest import FMNIST_SLICE
from tests.data_fixtures import write_cifar, write_mnist


def setup(dm):
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_mnist_idx_split_and_batches(tmp_path: Path) -> None:
    write_mnist(tmp_path, n_train=200, n_test=50)
    dm = setup(MNISTDataModule(root=str(tmp_path), download=False, batch_size=32, val_fraction=0.25))
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (150, 50, 50)
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (32, 1, 28, 28) and y.dtype == torch.long
    x, _ = dm.on_after_batch_transfer((x, y), 0)
    assert x.dtype == torch.float32
    # the split is seeded: same seed same validation set, other seed another one
    again = setup(MNISTDataModule(root=str(tmp_path), download=False, val_fraction=0.25))
    other = setup(MNISTDataModule(root=str(tmp_path), download=False, val_fraction=0.25, split_seed=1))
    assert torch.equal(again.val_set.targets, dm.val_set.targets)
    assert not torch.equal(other.val_set.images, dm.val_set.images)


def test_gz_archives_are_extracted_next_to_themselves(tmp_path: Path) -> None:
    raw = write_mnist(tmp_path, folder="FashionMNIST", compress=True)
    assert not (raw / "train-images-idx3-ubyte").exists()
    setup(FashionMNISTDataModule(root=str(tmp_path), download=False))
    assert (raw / "train-images-idx3-ubyte").is_file()


def test_read_only_fallback_uses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # simulated: CI runs as root, where chmod does not stop writes to the read-only shared data folder
    raw = write_mnist(tmp_path, folder="FashionMNIST", compress=True)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    dm = setup(FashionMNISTDataModule(root=str(tmp_path), download=False))
    assert len(dm.test_set) == 50 and not (raw / "train-images-idx3-ubyte").exists()
    assert list(Path(os.environ["OVERPARAM_CACHE"]).rglob("train-images-idx3-ubyte"))


def test_val_from_test_validates_on_the_test_set_and_needs_no_held_out_split() -> None:
    dm = setup(FashionMNISTDataModule(root=str(FMNIST_SLICE), download=False, val_fraction=0.0, val_from_test=True))
    assert len(dm.train_set) == 10_000 and dm.val_set is dm.test_set
    with pytest.raises(ValueError, match="val_from_test validates on the test set, so data.val_fraction must be 0"):
        FashionMNISTDataModule(root=str(FMNIST_SLICE), val_fraction=0.1, val_from_test=True)


def test_classes_keep_a_label_subset_renumbered_in_every_split_and_path() -> None:
    full = setup(FashionMNISTDataModule(root=str(FMNIST_SLICE), download=False, val_fraction=0.0))
    kept = full.test_set.targets >= 5
    dms = [setup(FashionMNISTDataModule(root=str(FMNIST_SLICE), download=False, classes=[5, 6, 7, 8, 9],
                                        val_fraction=0.1, in_memory=in_memory, batch_size=64)) for in_memory in (True, False)]
    fast, slow = dms
    assert len(fast.train_set) + len(fast.val_set) == int((full.train_set.targets >= 5).sum())
    assert torch.equal(fast.test_set.targets, full.test_set.targets[kept] - 5)
    assert torch.equal(fast.test_set.images, full.test_set.images[kept])
    for split in ("train_set", "val_set", "test_set"):
        assert set(getattr(fast, split).targets.tolist()) == {0, 1, 2, 3, 4}
    for a, b in zip(fast.train_dataloader(), slow.train_dataloader()):  # per-item decoding renumbers too
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    swapped = setup(FashionMNISTDataModule(root=str(FMNIST_SLICE), download=False, classes=[9, 0], val_fraction=0.0))
    assert torch.equal(swapped.test_set.targets, (full.test_set.targets[full.test_set.targets % 9 == 0] == 0).long())


def test_shipped_fashion_mnist_slice_is_real_and_balanced() -> None:
    dm = setup(FashionMNISTDataModule(root=str(FMNIST_SLICE), download=False, val_fraction=0.0))
    assert len(dm.train_set) == 10_000 and len(dm.test_set) == 2_000
    counts = torch.bincount(dm.train_set.targets, minlength=10)
    assert counts.min() > 900  # every class present in roughly equal share
    assert 70 < dm.train_set.images.float().mean() < 75  # Fashion-MNIST's mean pixel is ~72.9


@pytest.mark.parametrize("classes, cls", [(10, CIFAR10DataModule), (100, CIFAR100DataModule)])
def test_cifar_pickles(tmp_path: Path, classes: int, cls) -> None:
    write_cifar(tmp_path, classes=classes, n_per_file=20)
    dm = setup(cls(root=str(tmp_path), download=False, batch_size=10, val_fraction=0.1))
    assert len(dm.train_set) + len(dm.val_set) == 100 and len(dm.test_set) == 20
    dm.trainer = type("T", (), {"training": True, "global_rank": 0, "world_size": 1})()
    x, y = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.shape == (10, 3, 32, 32) and int(y.max()) < classes and dm.augment


def test_in_memory_and_decoding_paths_give_the_same_batches(tmp_path: Path) -> None:
    write_cifar(tmp_path, classes=10)
    fast = setup(CIFAR10DataModule(root=str(tmp_path), download=False, augment=False, batch_size=16))
    slow = setup(CIFAR10DataModule(root=str(tmp_path), download=False, augment=False, batch_size=16, in_memory=False))
    for a, b in zip(fast.train_dataloader(), slow.train_dataloader()):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_missing_data_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"put .*train-images-idx3-ubyte.* in .*FashionMNIST"):
        FashionMNISTDataModule(root=str(tmp_path), download=False).prepare_data()
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        CIFAR10DataModule(root=str(tmp_path), download=False).prepare_data()


def test_truncated_idx_file_is_reported(tmp_path: Path) -> None:
    raw = write_mnist(tmp_path)
    data = (raw / "train-images-idx3-ubyte").read_bytes()
    (raw / "train-images-idx3-ubyte").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="MNIST"):
        setup(MNISTDataModule(root=str(tmp_path), download=False))


def test_corrupt_cifar_pickle_is_reported(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        setup(CIFAR10DataModule(root=str(tmp_path), download=False))


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 0}, "batch_size must be positive"), ({"val_fraction": 1.0}, "val_fraction"),
    ({"num_workers": -1}, "num_workers"), ({"max_train_samples": 0}, "max_train_samples"),
    ({"classes": []}, "classes must be distinct labels"), ({"classes": [3, 3]}, "classes"), ({"classes": [10]}, "classes")])
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MNISTDataModule(**kwargs)


def test_ranks_split_each_global_batch() -> None:
    order = EpochShuffle(103, seed=3)
    single = list(ResumableBatchSampler(order, 10))
    ranks = [list(ResumableBatchSampler(order, 5, rank=r, world_size=2)) for r in range(2)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 11
    for k, batch in enumerate(single):
        assert sorted(ranks[0][k] + ranks[1][k]) == sorted(batch)


def test_epochs_reshuffle_and_resume_skips_consumed_batches() -> None:
    order = EpochShuffle(40, seed=0)
    loader = ResumableDataLoader(list(range(40)), ResumableBatchSampler(order, 8))
    first = [b.tolist() for b in loader]
    order.set_epoch(1)
    second = [b.tolist() for b in loader]
    assert first != second
    it = iter(loader)
    next(it), next(it)
    state = loader.state_dict()
    assert state == {"epoch": 1, "consumed": 2}
    fresh = ResumableDataLoader(list(range(40)), ResumableBatchSampler(EpochShuffle(40, seed=0), 8))
    fresh.batch_sampler.sampler.set_epoch(1)
    fresh.load_state_dict(state)
    assert [b.tolist() for b in fresh] == second[2:]
    assert fresh.state_dict()["consumed"] == 5


def test_random_crop_flip_keeps_content() -> None:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = random_crop_flip(x, padding=0)
    for i in range(2):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))
    assert random_crop_flip(x, padding=4).shape == x.shape


def test_global_batch_must_divide_across_processes(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    dm = setup(MNISTDataModule(root=str(tmp_path), download=False, batch_size=128))
    dm.trainer = type("T", (), {"training": True, "global_rank": 1, "world_size": 3})()
    with pytest.raises(ValueError, match="not divisible by 3 processes"):
        dm.train_dataloader()
    dm.trainer.world_size = 4
    batch = next(iter(dm.train_dataloader()))[0]
    assert len(batch) == 32


def _extract(raw: str, names: list[str], start: float) -> str:
    while time.time() < start:  # both processes begin together
        pass
    return str(extract_gz_archives(Path(raw), names))


def test_concurrent_extraction_of_the_same_archives(tmp_path: Path) -> None:
    """Two runs of a sweep decompress the same archives at once: each writes its own temporary file."""
    raw = tmp_path / "raw"
    raw.mkdir()
    names = [f"part{i}" for i in range(4)]
    payload = os.urandom(1 << 20) * 8
    for name in names:
        with gzip.open(raw / f"{name}.gz", "wb", compresslevel=1) as f:
            f.write(payload)
    start = time.time() + 1.0
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        done = [pool.submit(_extract, str(raw), names, start) for _ in range(2)]
        assert [f.result() for f in done] == [str(raw)] * 2
    assert all((raw / n).read_bytes() == payload for n in names)
    assert not list(raw.glob("*partial*"))
