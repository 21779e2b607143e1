"""One LightningModule per method. Modules know nothing of file formats."""
from lit_modules.supervised import SupervisedModule

__all__ = ["SupervisedModule"]
