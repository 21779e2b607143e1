"""Semantic segmentation: pixel cross-entropy with an ignore label, pixel accuracy, mIoU, per-class IoU, W&B masks.

``SegmentationTask`` turns any :class:`SupervisedModule` subclass into a segmentation module, so the plain net
(``SegmentationModule``) and the mapping-network net (:class:`lit_modules.mapping.MappingSegmentationModule`) share
one implementation.
"""
import math
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from lit_modules.supervised import SupervisedModule, adam


class SegmentationTask:
    """Mixin placed before a ``SupervisedModule`` subclass; call :meth:`setup_segmentation` after its ``__init__``.

    Logs ``{train,val,test}/loss``, ``pixel_acc`` (over labelled pixels) and ``miou`` (mean over classes present in
    the labels or predictions of the whole split, from one accumulated confusion matrix); ``results()`` adds
    ``test/iou_per_class``. Every ``log_images_every_n_epochs`` validation epochs, when a W&B logger is attached, the
    first ``num_logged_images`` validation images go to W&B with predicted and ground-truth masks (``val/masks``)
    and as input | truth | prediction panels in the dataset's palette (``val/palette``).
    """

    def setup_segmentation(self, num_classes: int, ignore_index: int, log_images_every_n_epochs: int,
                           num_logged_images: int) -> None:
        if num_classes <= 1:
            raise ValueError(f"model.num_classes must be >= 2, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"model.ignore_index {ignore_index} is a class id (num_classes {num_classes})")
        if log_images_every_n_epochs < 0 or num_logged_images < 0:
            raise ValueError("model.log_images_every_n_epochs and num_logged_images must be >= 0")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.image_every, self.num_images = log_images_every_n_epochs, num_logged_images
        self.loss_fn = nn.CrossEntropyLoss(ignore_index=ignore_index)
        metrics = MetricCollection({
            "pixel_acc": MulticlassAccuracy(num_classes, average="micro", ignore_index=ignore_index),
            "miou": MulticlassJaccardIndex(num_classes, average="macro", ignore_index=ignore_index)})
        self.metrics = nn.ModuleDict({f"{s}_": metrics.clone(prefix=f"{s}/") for s in ("train", "val", "test")})
        self.metrics["train_"].persistent(True)  # epoch-level train metrics survive a mid-epoch resume
        # NaN for a class absent from both labels and predictions (reported as None), as the mIoU leaves it out
        self.test_iou = MulticlassJaccardIndex(num_classes, average="none", ignore_index=ignore_index,
                                               zero_division=float("nan"))
        self.monitor, self.monitor_mode = "val/miou", "max"
        self.class_iou: Optional[list[Optional[float]]] = None
        self._images: Optional[tuple[Tensor, Tensor, Tensor]] = None

    def _eval_step(self, stage: str, batch: tuple[Tensor, Tensor]) -> None:
        x, y = batch
        loss, out = self._loss(x, y)
        pred = out.argmax(1)
        self.metrics[f"{stage}_"].update(pred, y)
        self.mean_loss[f"{stage}_"].update(loss, weight=(y != self.ignore_index).sum())
        self.log(f"{stage}/loss", self.mean_loss[f"{stage}_"], prog_bar=stage == "val")
        self.log_dict(self.metrics[f"{stage}_"], prog_bar=stage == "val")
        if stage == "test":
            self.test_iou.update(pred, y)
        elif self._images is None and self.wants_images():
            k = self.num_images
            self._images = (x[:k].detach(), y[:k].detach(), pred[:k].detach())

    # ------------------------------------------------------------------ per-class IoU
    def on_test_epoch_start(self) -> None:
        self.test_iou.reset()

    def on_test_epoch_end(self) -> None:
        iou = self.test_iou.compute().tolist()  # synced over processes
        self.class_iou = [None if math.isnan(v) else v for v in iou]

    def results(self) -> dict[str, Any]:
        extra = super().results() if callable(getattr(super(), "results", None)) else {}
        if self.class_iou is not None:
            names = self.class_names()
            extra["test/iou_per_class"] = dict(zip(names, self.class_iou))
        return extra

    def class_names(self) -> list[str]:
        names = getattr(self.trainer.datamodule, "class_names", None) if self._trainer is not None else None
        return list(names) if names is not None else [str(c) for c in range(self.num_classes)]

    # ------------------------------------------------------------------ W&B images
    def wandb_logger(self) -> Optional[pl.loggers.WandbLogger]:
        if self._trainer is None:
            return None
        return next((lg for lg in self.trainer.loggers if isinstance(lg, pl.loggers.WandbLogger)), None)

    def wants_images(self) -> bool:
        trainer = self.trainer
        return (self.image_every > 0 and self.num_images > 0 and not trainer.sanity_checking and
                trainer.is_global_zero and (trainer.current_epoch + 1) % self.image_every == 0 and
                self.wandb_logger() is not None)

    def on_validation_epoch_end(self) -> None:
        if self._images is None:
            return
        x, y, pred = self._images
        self._images = None
        import wandb  # only when a W&B logger is attached

        data = self.trainer.datamodule
        rgb = data.denormalize(x) if hasattr(data, "denormalize") else rescale_to_uint8(x)
        palette = torch.tensor(getattr(data, "palette", None) or default_palette(self.num_classes), dtype=torch.uint8)
        labels = dict(enumerate(self.class_names())) | {self.ignore_index: "ignore"}
        masks, panels = [], []
        for img, truth, guess in zip(rgb.cpu(), y.cpu(), pred.cpu()):
            masks.append(wandb.Image(img.permute(1, 2, 0).numpy(), masks={
                "prediction": {"mask_data": guess.numpy(), "class_labels": labels},
                "ground_truth": {"mask_data": truth.numpy(), "class_labels": labels}}))
            panel = torch.cat([img, colourise(truth, palette, self.ignore_index),
                               colourise(guess, palette, self.ignore_index)], dim=2)
            panels.append(wandb.Image(panel.permute(1, 2, 0).numpy(), caption="input | truth | prediction"))
        self.wandb_logger().experiment.log({"val/masks": masks, "val/palette": panels,
                                            "trainer/global_step": self.global_step})


def colourise(mask: Tensor, palette: Tensor, ignore_index: int) -> Tensor:
    """(H, W) class ids -> (3, H, W) uint8 colours; ignored pixels black."""
    ids = torch.where(mask == ignore_index, len(palette), mask).long()
    table = torch.cat([palette, torch.zeros(1, 3, dtype=torch.uint8)])
    return table[ids].permute(2, 0, 1)


def rescale_to_uint8(x: Tensor) -> Tensor:
    """Min-max rescaled images, for data modules that cannot undo their own normalisation."""
    return (x - x.amin()).div(x.amax() - x.amin() + 1e-12).mul(255).to(torch.uint8)


def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    generator = torch.Generator().manual_seed(0)
    return [tuple(c) for c in torch.randint(0, 256, (num_classes, 3), generator=generator).tolist()]


class SegmentationModule(SegmentationTask, SupervisedModule):
    """Trains ``net`` (logits ``(N, C, H, W)``) with pixel cross-entropy; best checkpoint by ``val/miou``."""

    def __init__(self, net: nn.Module, num_classes: int = 19, ignore_index: int = 255,
                 log_images_every_n_epochs: int = 5, num_logged_images: int = 4, optimizer: OptimizerCallable = adam,
                 lr_scheduler: Optional[LRSchedulerCallable] = None) -> None:
        super().__init__(net, "classification", num_classes, optimizer, lr_scheduler)
        self.setup_segmentation(num_classes, ignore_index, log_images_every_n_epochs, num_logged_images)

