"""One LightningModule per method. Modules know nothing of file formats."""
from lit_modules.supervised import SupervisedModule
from lit_modules.gda_gan import SyntheticGDAModule, WGANGPModule
from lit_modules.gauss_newton import GaussNewtonModule
from lit_modules.gauss_newton_minibatch import MinibatchLMModule
from lit_modules.mapping import MappingNetModule
from lit_modules.neuron_pursuit import NeuronPursuitModule
from lit_modules.saddle_dynamics import SaddleDynamicsModule
from lit_modules.resnet_width import FullBatchGD
from lit_modules.segmentation import MappingSegmentationModule, SegmentationModule
from lit_modules.deepfake import DeepfakeMappingNetModule, DeepfakeSupervisedModule
from lit_modules.mapping_finetune import (DeepfakeFineTuneModule, DeepfakeMappingFineTuneModule, FineTuneModule,
                                         MappingFineTuneModule)

__all__ = ["FullBatchGD", "GaussNewtonModule", "MinibatchLMModule", "MappingNetModule", "NeuronPursuitModule", "SaddleDynamicsModule", "SupervisedModule", "SyntheticGDAModule", "WGANGPModule", "MappingSegmentationModule", "SegmentationModule", "DeepfakeMappingNetModule", "DeepfakeSupervisedModule", "DeepfakeFineTuneModule", "DeepfakeMappingFineTuneModule", "FineTuneModule", "MappingFineTuneModule"]
