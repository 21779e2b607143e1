"""Fine-tuning a pretrained net: by Mapping Networks modulation (Eq. 25, Table 10) or normally (its baselines).

Both take a layer set (``all`` or ``layer4+fc``; weights outside it stay the pretrained ones) and a BatchNorm mode
(``eval``: every BatchNorm uses its pretrained running statistics, never updated; ``train``: those inside the layer
set use batch statistics and update theirs). The pretrained weights are the net's own (e.g. ``nets.ResNet50`` with
``weights_path``).
"""
from typing import Any, Callable, Literal, Optional

from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lit_modules.deepfake import DetectionMetrics
from lit_modules.mapping import MappingNetModule
from lit_modules.supervised import SupervisedModule, adam
from nets.mapping.finetune import ModulationMapping, finetuned_names, frozen_norm_layers


class FrozenNorms:
    """Keeps ``self.frozen_norms`` in eval mode whenever the module is put in training mode."""

    frozen_norms: tuple[nn.Module, ...] = ()

    def train(self, mode: bool = True) -> Any:
        super().train(mode)
        if mode:
            for norm in self.frozen_norms:
                norm.eval()
        return self


class MappingFineTuneModule(FrozenNorms, MappingNetModule):
    """Eq. 25: theta = theta_pre + alpha * repeat_interleave(o, L) over the layer set, o = g(z), one trainable
    latent z (the paper's Ours*). ``mapping`` is a :class:`nets.mapping.finetune.ModulationMapping` (its ``layers``
    also choose which BatchNorms ``batchnorm: train`` leaves in training mode; ``tie`` is L); the Mapping Loss and
    its flags are :class:`MappingNetModule`'s: the stability term runs a second forward pass on ``stab_samples``
    samples, smoothness (closed form) and alignment cost O(P / L).
    """

    # batchnorm is typed str, not Literal, so a bad value reaches our ValueError (jsonargparse's own message for a
    # Literal does not name the allowed values)
    def __init__(self, net: nn.Module, mapping: Callable[[nn.Module], ModulationMapping] = ModulationMapping,
                 batchnorm: str = "eval", **kwargs: Any) -> None:
        super().__init__(net, mapping, **kwargs)
        self.frozen_norms = tuple(frozen_norm_layers(net, self.mapping.layers, batchnorm))

    def parameter_counts(self) -> dict[str, int]:
        return {**super().parameter_counts(), "finetuned_params": self.mapping.size,
                "modulation_elements": self.mapping.elements}

    def results(self) -> dict[str, Any]:
        return {**super().results(), "layers": self.mapping.layers, "tie": self.mapping.tie,
                "finetuned_params": self.mapping.size, "modulation_elements": self.mapping.elements}


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


class DeepfakeMappingFineTuneModule(DetectionMetrics, MappingFineTuneModule):
    """:class:`MappingFineTuneModule` with AUROC and F1 (real 0 / fake 1): the Ours* rows of Table 10."""


class DeepfakeFineTuneModule(DetectionMetrics, FineTuneModule):
    """:class:`FineTuneModule` with AUROC and F1: the full fine-tuning rows of Table 10."""
