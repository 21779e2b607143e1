"""LightningDataModules. Nothing here knows about models."""
from datamodules.base import DataError, VisionDataModule
from datamodules.vision import CIFAR10DataModule, CIFAR100DataModule, FashionMNISTDataModule, MNISTDataModule

__all__ = ["CIFAR10DataModule", "CIFAR100DataModule", "DataError", "FashionMNISTDataModule", "MNISTDataModule",
           "VisionDataModule"]
