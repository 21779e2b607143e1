"""LightningDataModules. Nothing here knows about models."""
from datamodules.base import DataError, VisionDataModule
from datamodules.vision import CIFAR10DataModule, CIFAR100DataModule, FashionMNISTDataModule, MNISTDataModule
from datamodules.synthetic_gan import GaussianMeanDataModule, TwoMoonsDataModule
from datamodules.synthetic import ModularAdditionDataModule, SparseFunctionDataModule

from datamodules.sphere import SphereDataModule
__all__ = ["SphereDataModule", "CIFAR100DataModule", "CIFAR10DataModule", "DataError", "FashionMNISTDataModule",
           "GaussianMeanDataModule", "MNISTDataModule", "TwoMoonsDataModule", "VisionDataModule", "ModularAdditionDataModule", "SparseFunctionDataModule"]
