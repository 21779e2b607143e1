"""LightningDataModules. Nothing here knows about models."""
from datamodules.base import DataError, VisionDataModule
from datamodules.vision import CIFAR10DataModule, CIFAR100DataModule, FashionMNISTDataModule, MNISTDataModule
from datamodules.synthetic_gan import GaussianMeanDataModule, TwoMoonsDataModule
from datamodules.tabular import CaliforniaHousingDataModule, SyntheticRegressionDataModule
from datamodules.synthetic import ModularAdditionDataModule, PointerValueDataModule, SparseFunctionDataModule
from datamodules.sphere import SphereDataModule
from datamodules.celeba import CelebA64DataModule
from datamodules.cityscapes import CityscapesDataModule
from datamodules.deepfake import DeepfakeFeaturesDataModule
from datamodules.deepfake_frames import DeepfakeFramesDataModule
from datamodules.timeseries import TimeSeriesCSVDataModule

__all__ = ["SphereDataModule", "CaliforniaHousingDataModule", "CIFAR100DataModule", "CIFAR10DataModule", "DataError",
           "FashionMNISTDataModule", "GaussianMeanDataModule", "MNISTDataModule", "ModularAdditionDataModule", "PointerValueDataModule",
           "SparseFunctionDataModule", "SyntheticRegressionDataModule", "TwoMoonsDataModule", "VisionDataModule",
           "CelebA64DataModule", "CityscapesDataModule", "DeepfakeFeaturesDataModule", "TimeSeriesCSVDataModule", "DeepfakeFramesDataModule"]
