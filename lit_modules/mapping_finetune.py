"""Fine-tuning a pretrained net: by Mapping Networks modulation (Eq. 25, Table 10) or normally (its baselines).

Both take a layer set (``all`` or ``layer4+fc``; weights outside it stay the pretrained ones) and a BatchNorm mode
(``eval``: every BatchNorm uses its pretrained running statistics, never updated; ``train``: those inside the layer
set use batch statistics and update theirs). The pretrained weights are the net's own (e.g. ``nets.ResNet50`` with
``weights_path``).
"""
from typing import Any, Literal, Optional

from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.utilities import rank_zero_info
from torch import nn

from lit_modules.deepfake import DetectionMetrics
from lit_modules.mapping import MappingNetModule, adam_latent
from lit_modules.supervised import SupervisedModule, adam
from nets.mapping.finetune import ModulationMapping, finetuned_names, frozen_norm_layers
from nets.mapping.loss_weights import LossWeights, Scheme
from nets.mapping.projectors import ProjectorKind


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
    latent z (the paper's Ours*). Mapping arguments are those of :class:`nets.mapping.finetune.ModulationMapping`
    (``tie`` is L); the Mapping Loss and its flags are :class:`MappingNetModule`'s: the stability term runs a
    second forward pass on ``stab_samples`` samples, smoothness (closed form) and alignment cost O(P / L).
    """

    # layers and batchnorm are typed str, not Literal, so a bad value reaches our ValueError (jsonargparse's own
    # message for a Literal does not name the allowed values)
    def __init__(self, net: nn.Module, layers: str = "all", tie: int = 1, latent_dim: int = 2048,
                 projector: ProjectorKind = "auto", dense_limit_mb: float = 8.0, alpha: float = 1e-2,
                 mapper_alpha: float = 1e-5, normalize: bool = True, latent_init_std: float = 0.0,
                 mapping_seed: int = 0, batchnorm: str = "eval",
                 lambda_scheme: Scheme = "fixed", lambda_stab: float = 0.01, lambda_smooth: float = 0.01,
                 lambda_align: float = 0.01, stab_sigma: float = 0.01, stab_samples: int = 8,
                 task: Literal["classification", "regression"] = "classification", num_classes: int = 2,
                 optimizer: OptimizerCallable = adam_latent,
                 lr_scheduler: Optional[LRSchedulerCallable] = None) -> None:
        # SupervisedModule's constructor, not MappingNetModule's: that one would build a LatentMapping that
        # generates all P weights; everything else (steps, loss, counts, checkpoint checks) is MappingNetModule's.
        # (super(), not SupervisedModule.__init__: save_hyperparameters finds the init frames through it)
        super(MappingNetModule, self).__init__(net, task, num_classes, optimizer, lr_scheduler)
        self.save_hyperparameters(ignore=["net", "optimizer", "lr_scheduler"])
        if stab_sigma <= 0 or stab_samples <= 0:
            raise ValueError(f"stab_sigma and stab_samples must be positive, got {stab_sigma}, {stab_samples}")
        net.requires_grad_(False)
        self.mapping = ModulationMapping(net, layers, tie, latent_dim, projector, dense_limit_mb, alpha,
                                         mapper_alpha, normalize, latent_init_std, mapping_seed)
        self.loss_weights = LossWeights(lambda_scheme, (lambda_stab, lambda_smooth, lambda_align))
        self.frozen_norms = tuple(frozen_norm_layers(net, layers, batchnorm))
        m = self.mapping
        rank_zero_info(f"mapping fine-tune: layers {layers}, {m.size:,} weights, L = {tie} -> {m.elements:,} "
                       f"elements from d = {latent_dim}; projector {m.projector.kind}, "
                       f"{m.memory_bytes() / 2**20:.1f} MB; batchnorm {batchnorm}")

    def parameter_counts(self) -> dict[str, int]:
        return {**super().parameter_counts(), "finetuned_params": self.mapping.size,
                "modulation_elements": self.mapping.elements}

    def results(self) -> dict[str, Any]:
        return {**super().results(), "layers": self.mapping.layers, "tie": self.mapping.tie,
                "finetuned_params": self.mapping.size, "modulation_elements": self.mapping.elements}

    def prepare_for_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().prepare_for_checkpoint(checkpoint)
        saved = checkpoint["mapping"]
        for key in ("layers", "tie"):
            if saved.get(key) != getattr(self.mapping, key):
                raise ValueError(f"checkpoint was fine-tuned with {key} {saved.get(key)!r}, this run has "
                                 f"{getattr(self.mapping, key)!r}")


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
