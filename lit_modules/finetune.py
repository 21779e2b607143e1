"""Ordinary fine-tuning of a pretrained net's layer set: the baselines of Mapping Networks Table 10 (the method's own
fine-tuning by modulation, Eq. 25, is :class:`lit_modules.mapping.MappingFineTuneModule`).

Both take a layer set (``all`` or ``layer4+fc``; weights outside it stay the pretrained ones) and a BatchNorm mode
(``eval``: every BatchNorm uses its pretrained running statistics, never updated; ``train``: those inside the layer
set use batch statistics and update theirs). The pretrained weights are the net's own (e.g. ``nets.ResNet50`` with
``weights_path``).
"""
from typing import Any, Literal, Optional

from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lit_modules.deepfake import DetectionMetrics
from lit_modules.supervised import SupervisedModule, adam
from nets.mapping.finetune import finetuned_names, frozen_norm_layers


class FrozenNorms:
    """Keeps ``self.frozen_norms`` in eval mode in training: from the start of fit (Lightning never calls ``train()``
    there; it restores each submodule's own mode after validation) and whenever the module is put in training mode."""

    frozen_norms: tuple[nn.Module, ...] = ()

    def on_train_start(self) -> None:
        super().on_train_start()
        for norm in self.frozen_norms:
            norm.eval()

    def train(self, mode: bool = True) -> Any:
        super().train(mode)
        if mode:
            for norm in self.frozen_norms:
                norm.eval()
        return self


class FineTuneModule(FrozenNorms, SupervisedModule):
    """Ordinary fine-tuning of the layer set's weights (the ResNet50 rows of Table 10); the rest is frozen."""

    def __init__(self, net: nn.Module, layers: str = "all", batchnorm: str = "eval",
                 task: Literal["classification", "regression"] = "classification", num_classes: int = 2,
                 optimizer: OptimizerCallable = adam, lr_scheduler: Optional[LRSchedulerCallable] = None) -> None:
        super().__init__(net, task, num_classes, optimizer, lr_scheduler)
        self.save_hyperparameters(ignore=["net", "optimizer", "lr_scheduler"])
        tuned = set(finetuned_names(net, layers))
        for name, param in net.named_parameters():
            param.requires_grad_(name in tuned)
        self.frozen_norms = tuple(frozen_norm_layers(net, layers, batchnorm))


class DeepfakeFineTuneModule(DetectionMetrics, FineTuneModule):
    """:class:`FineTuneModule` with AUROC and F1: the full fine-tuning rows of Table 10."""
