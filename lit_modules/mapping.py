"""Mapping Networks (Sen & Mukherjee, CVPR 2026): train only latents that generate a target net's parameters.

The method's LightningModules: :class:`MappingNetModule` (Tables 4, 7-9, 11), its deepfake (Table 5, 12) and
segmentation (Table 6) variants, and fine-tuning by modulation (Eq. 25, Table 10). The mappings, projections and
loss-term maths are in :mod:`nets.mapping`.
"""
import copy
from typing import Any, Callable, Literal, Optional

import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn
from torch.func import functional_call

from lit_modules.deepfake import DetectionMetrics
from lit_modules.finetune import FrozenNorms
from lit_modules.segmentation import SegmentationTask
from lit_modules.supervised import SupervisedModule
from nets.mapping import LatentMapping, ModulationMapping
from nets.mapping.base import ParameterMapping
from nets.mapping.finetune import frozen_norm_layers
from nets.mapping.loss_weights import LossWeights, Scheme

# a mapping class with its settings, called with the target net: in a config, class_path + init_args
# (jsonargparse hands the module a partial, as for the optimizer); in Python, e.g. functools.partial(LatentMapping, ...)
MappingFactory = Callable[[nn.Module], ParameterMapping]


def adam_latent(params: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-2)


class MappingNetModule(SupervisedModule):
    """Trains ``net`` through ``mapping`` (:class:`nets.mapping.LatentMapping` unless another
    :class:`nets.mapping.base.ParameterMapping` is given): the net's own parameters are frozen (they are the mapping
    bias b = theta_0) and replaced in every forward pass by generated tensors (``torch.func.functional_call``);
    BatchNorm running statistics stay the net's buffers.

    Loss (Eq. 26): task + lambda_stab * E||f(z + eps) - f(z)||^2 (on ``stab_samples`` samples of the batch,
    eps ~ N(0, stab_sigma^2)) + lambda_smooth * ||dtheta/dz||_F^2 (closed form) + lambda_align * (1 - cos).
    ``lambda_scheme`` is that of :class:`LossWeights`. The ablations of Tables 8-9 are the mapping's settings
    (docs/mapping_networks.md): ``alpha`` 0 (WM), ``modulation`` (LV + WMAP), ``projector: trainable`` with
    ``mapper_hidden``/``mapper_bias``/``train_latent`` (Full DNN, LV + FullDNN), ``prune_*`` (Prune); LRD is a
    low-rank target net (``nets.CNN2`` ``fc1_rank``).
    """

    def __init__(self, net: nn.Module, mapping: MappingFactory = LatentMapping, lambda_scheme: Scheme = "fixed",
                 lambda_stab: float = 0.01, lambda_smooth: float = 0.01, lambda_align: float = 0.01,
                 stab_sigma: float = 0.01, stab_samples: int = 32,
                 task: Literal["classification", "regression"] = "classification", num_classes: int = 10,
                 optimizer: OptimizerCallable = adam_latent,
                 lr_scheduler: Optional[LRSchedulerCallable] = None) -> None:
        super().__init__(net, task, num_classes, optimizer, lr_scheduler)
        self.save_hyperparameters(ignore=["net", "mapping", "optimizer", "lr_scheduler"])
        if stab_sigma <= 0 or stab_samples <= 0:
            raise ValueError(f"stab_sigma and stab_samples must be positive, got {stab_sigma}, {stab_samples}")
        net.requires_grad_(False)
        self.mapping = mapping(net)
        if not self.mapping.closed_form_terms and (lambda_smooth > 0 or lambda_align > 0):
            raise ValueError("the smoothness and alignment terms have a closed form only for a linear mapper: with "
                             "mapper_hidden > 0 set lambda_smooth and lambda_align to 0")
        self.loss_weights = LossWeights(lambda_scheme, (lambda_stab, lambda_smooth, lambda_align))
        rank_zero_info(f"mapping: {self.mapping.summary()}")

    # ------------------------------------------------------------------ generation and forward
    def generated(self, latents: Optional[list[Tensor]] = None, refresh_mask: bool = False
                  ) -> tuple[dict[str, Tensor], list]:
        return self.mapping(dict(self.net.named_parameters()), latents, refresh_mask)

    def forward(self, x: Tensor) -> Tensor:
        return functional_call(self.net, self.generated()[0], (x,))

    figure_curves = {"latent norm ||z||": ("train/z_norm",), "λ (loss weights)": ("train/lambda_",)}

    @torch.no_grad()
    def figure_histograms(self) -> dict[str, Tensor]:
        """Generated weights per mapping group (callbacks/figures.py)."""
        params = self.generated()[0]
        return {f"group {g}: {names[0]}" + (" ..." if len(names) > 1 else ""):
                torch.cat([params[n].flatten() for n in names]) for g, names in enumerate(self.mapping.groups)}

    @torch.no_grad()
    def export_net(self) -> nn.Module:
        """A copy of the target net holding the generated weights as its own (``train.py export``)."""
        net = copy.deepcopy(self.net)
        for name, value in self.generated()[0].items():
            net.get_parameter(name).copy_(value)
        return net

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        mask = self.mapping.mask
        params, aux = self.generated(refresh_mask=mask is not None and mask.due(self.global_step))
        out = functional_call(self.net, params, (x,))
        pred = out.reshape(y.shape) if self.task == "regression" else out
        task = self.loss_fn(pred, y)
        terms = self.regularisers(x, out, params, aux)
        loss = task + self.loss_weights(terms)
        self.track_train(loss, pred.detach(), y)
        if self.logs_this_step():
            self.log_diagnostics(task, terms)
        return loss

    def log_diagnostics(self, task: Tensor, terms: dict[str, Tensor]) -> None:
        latents = list(self.mapping.latents)
        z_sq = sum(z.detach().square().sum() for z in latents)
        shift = sum(self.mapping.shift(g, z).detach() for g, z in enumerate(latents))
        lam = self.loss_weights.lambdas().detach()
        self.log_dict({"train/task_loss": task.detach(), "train/z_norm": z_sq.sqrt(), "train/mod_shift": shift,
                       **{f"train/{k}": v.detach() for k, v in terms.items()},
                       **{f"train/lambda_{k}": lam[i] for i, k in enumerate(("stab", "smooth", "align"))}})

    def regularisers(self, x: Tensor, out: Tensor, params: dict[str, Tensor], aux: list) -> dict[str, Tensor]:
        use_stab, use_smooth, use_align = self.loss_weights.active()
        terms = {}
        if use_stab:
            terms["stab"] = self.stability(x, out, params, aux)
        if use_smooth:
            terms["smooth"] = self.mapping.smoothness(aux)
        if use_align:
            terms["align"] = self.mapping.alignment()
        return terms

    def stability(self, x: Tensor, out: Tensor, params: dict[str, Tensor], aux: list) -> Tensor:
        """E||f(z + eps) - f(z)||^2 on the first ``stab_samples`` samples (one eps per step). The tensors at z + eps
        come from this step's generation (``mapping.perturbed``: one W^T product for both passes); the noisy pass
        works on copies of the buffers so BatchNorm statistics are updated once per step."""
        k = min(self.hparams.stab_samples, len(x))
        noise = [self.hparams.stab_sigma * torch.randn_like(z) for z in self.mapping.latents]
        noisy = self.mapping.perturbed(params, aux, noise)
        buffers = {name: b.clone() for name, b in self.net.named_buffers()}
        out_noisy = functional_call(self.net, {**noisy, **buffers}, (x[:k],))
        return (out_noisy - out[:k]).square().reshape(k, -1).sum(1).mean()  # also 1-D outputs (one per sample)

    # ------------------------------------------------------------------ counts, results, checkpoints
    def parameter_counts(self) -> dict[str, int]:
        """The paper's count: trainable_params = latent entries, plus modulation vectors and mapper weights when
        those are trained (ablations); lambdas listed separately; inference_params = generated entries the net
        uses (fewer once a pruning mask exists)."""
        return {"trainable_params": self.mapping.trainable_count(), "latent_params": self.mapping.latent_count(),
                "total_params": sum(p.numel() for p in self.net.parameters()),
                "inference_params": self.mapping.inference_count(),
                "lambda_params": sum(p.numel() for p in self.loss_weights.parameters()),
                "mapper_bytes": self.mapping.memory_bytes()}

    def results(self) -> dict[str, Any]:
        lam = self.loss_weights.lambdas().detach().tolist()
        return {"latent_dims": self.mapping.dims, "group_sizes": self.mapping.sizes,
                "projectors": [p.kind for p in self.mapping.projectors],
                "final_lambdas": dict(zip(("stab", "smooth", "align"), lam)),
                "final_z_norm": float(sum(z.detach().square().sum() for z in self.mapping.latents).sqrt())}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["mapping"] = {"target": type(self.net).__qualname__, **self.mapping.describe()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Checkpoints written before the mapping became one argument keep its settings as flat hyper-parameters
        # (mapping_seed among them), which jsonargparse drops silently when load_from_checkpoint rebuilds the
        # module: it would get a default mapping. Their weights still load into a module built from a migrated
        # config (train.py --config ... --ckpt_path), which states the mapping.
        if "mapping_seed" in checkpoint.get("hyper_parameters", {}) and "mapping" not in self.hparams:
            raise ValueError("checkpoint predates model.init_args.mapping (its mapping settings are flat "
                             "hyper-parameters): resume or test it with train.py --config <migrated config> "
                             "--ckpt_path <it>; docs/mapping_networks.md, 'Configs', lists the moved keys")
        self.prepare_for_checkpoint(checkpoint)

    def prepare_for_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint made with another target net, latent split, projector, mapping seed or any further
        setting the mapping describes (e.g. fine-tuning's layer set and L): the projections are regenerated from
        this run's seed, so they must be the ones the latents were trained in."""
        saved = checkpoint.get("mapping")
        if saved is None:
            raise ValueError("checkpoint has no mapping metadata: it was not written by MappingNetModule")
        ours = {"target": type(self.net).__qualname__, **self.mapping.describe()}
        if saved["target"] != ours["target"]:
            raise ValueError(f"checkpoint generates a {saved['target']}, this run's target net is {ours['target']}")
        mine = [(g["size"], g["latent_dim"], g["projector"]) for g in ours["groups"]]
        theirs = [(g["size"], g["latent_dim"], g["projector"]) for g in saved["groups"]]
        if mine != theirs:
            raise ValueError(f"checkpoint's mapping groups (params, latent length, projector) {theirs} differ from "
                             f"this run's {mine}")
        if saved["seed"] != ours["seed"]:
            raise ValueError(f"checkpoint was trained with mapping seed {saved['seed']}, this run has {ours['seed']}")
        for key in sorted(ours.keys() - {"target", "groups", "seed"}):
            if saved.get(key) != ours[key]:
                raise ValueError(f"checkpoint's mapping has {key} {saved.get(key)!r}, this run's has {ours[key]!r}")


class DeepfakeMappingNetModule(DetectionMetrics, MappingNetModule):
    """:class:`MappingNetModule` (same arguments) with AUROC and F1; the Ours* / Ours-dagger rows of Table 5."""


class MappingSegmentationModule(SegmentationTask, MappingNetModule):
    """A :class:`MappingNetModule` (all of its arguments) trained and evaluated as segmentation (Table 6)."""

    def __init__(self, *args: Any, ignore_index: int = 255, log_images_every_n_epochs: int = 5,
                 num_logged_images: int = 4, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.setup_segmentation(self.hparams.num_classes, ignore_index, log_images_every_n_epochs, num_logged_images)


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


class DeepfakeMappingFineTuneModule(DetectionMetrics, MappingFineTuneModule):
    """:class:`MappingFineTuneModule` with AUROC and F1 (real 0 / fake 1): the Ours* rows of Table 10."""
