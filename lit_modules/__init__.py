"""One LightningModule per method. Modules know nothing of file formats."""
from lit_modules.supervised import SupervisedModule
from lit_modules.gda_gan import SyntheticGDAModule

__all__ = ["SupervisedModule", "SyntheticGDAModule"]
