"""One LightningModule per method. Modules know nothing of file formats."""
from lit_modules.supervised import SupervisedModule
from lit_modules.gda_gan import SyntheticGDAModule
from lit_modules.neuron_pursuit import NeuronPursuitModule

__all__ = ["SupervisedModule", "SyntheticGDAModule", "NeuronPursuitModule"]
