"""One LightningModule per method. Modules know nothing of file formats."""
from lit_modules.supervised import SupervisedModule
from lit_modules.gda_gan import SyntheticGDAModule, WGANGPModule
from lit_modules.gauss_newton import GaussNewtonModule, LevenbergMarquardtModule
from lit_modules.mapping import (DeepfakeMappingFineTuneModule, DeepfakeMappingNetModule, MappingFineTuneModule,
                                 MappingNetModule, MappingSegmentationModule)
from lit_modules.neuron_pursuit import NeuronPursuitModule, SaddleDynamicsModule
from lit_modules.resnet_width import FullBatchGD
from lit_modules.segmentation import SegmentationModule
from lit_modules.deepfake import DeepfakeSupervisedModule
from lit_modules.finetune import DeepfakeFineTuneModule, FineTuneModule

__all__ = ["FullBatchGD", "GaussNewtonModule", "LevenbergMarquardtModule", "MappingNetModule", "NeuronPursuitModule", "SaddleDynamicsModule", "SupervisedModule", "SyntheticGDAModule", "WGANGPModule", "MappingSegmentationModule", "SegmentationModule", "DeepfakeMappingNetModule", "DeepfakeSupervisedModule", "DeepfakeFineTuneModule", "DeepfakeMappingFineTuneModule", "FineTuneModule", "MappingFineTuneModule"]
