"""MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 over the torchvision dataset classes."""
import pickle
from pathlib import Path

from torchvision import datasets

from datamodules.base import VisionDataModule, extract_gz_archives

MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


class _IdxDataModule(VisionDataModule):
    """MNIST-family layout ``<root>/<Name>/raw/*-ubyte``; local ``.gz`` archives are extracted, not downloaded."""


    expected_files = ", ".join(f"{n}[.gz]" for n in MNIST_FILES)
    num_classes = 10

    def locate_root(self) -> Path:
        raw = extract_gz_archives(self.root / self.folder, MNIST_FILES)
        return raw.parent.parent if raw is not None else self.root


class MNISTDataModule(_IdxDataModule):
    dataset_cls = datasets.MNIST
    folder = "MNIST/raw"
    mean, std = (0.1307,), (0.3081,)


class FashionMNISTDataModule(_IdxDataModule):
    dataset_cls = datasets.FashionMNIST
    folder = "FashionMNIST/raw"
    mean, std = (0.2860,), (0.3530,)


class _CIFAR10(datasets.CIFAR10):
    # torchvision checks the official MD5 sums; a corrupt file shows up when unpickling anyway, and the
    # check would reject fixtures and subsets in the real format, so only presence is checked here.
    def _check_integrity(self) -> bool:
        files = [name for name, _ in self.train_list + self.test_list] + [self.meta["filename"]]
        return all((Path(self.root) / self.base_folder / name).is_file() for name in files)

    def _load_meta(self) -> None:
        with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as file:
            self.classes = pickle.load(file, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


class _CIFAR100(datasets.CIFAR100):
    _check_integrity = _CIFAR10._check_integrity
    _load_meta = _CIFAR10._load_meta


class CIFAR10DataModule(VisionDataModule):
    dataset_cls = _CIFAR10
    folder = "cifar-10-batches-py"
    expected_files = "data_batch_1..5, test_batch, batches.meta (the python version of CIFAR-10)"
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    num_classes = 10
    default_augment = True


class CIFAR100DataModule(VisionDataModule):
    dataset_cls = _CIFAR100
    folder = "cifar-100-python"
    expected_files = "train, test, meta (the python version of CIFAR-100)"
    mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    num_classes = 100
    default_augment = True
