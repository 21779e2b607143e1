"""Deepfake detection (real 0 / fake 1): AUROC and F1 for any 2-class :class:`SupervisedModule` subclass (the
Mapping Networks ones are in :mod:`lit_modules.mapping`).

Both log ``{val,test}/auroc`` and ``{val,test}/f1`` (fake is the positive class, from softmax(logits)[:, 1]) next to
the inherited ``acc`` and ``loss``; ``results.json`` also gets the data's class balance.
"""
from typing import Any, Optional

from torch import Tensor
from torchmetrics.classification import BinaryAUROC, BinaryF1Score

from lit_modules.supervised import SupervisedModule


class _OnFakeProbability:
    """Binary metric fed with the fake-class probability of 2-class logits (N, 2)."""

    def update(self, logits: Tensor, target: Tensor) -> None:
        super().update(logits.float().softmax(-1)[:, 1], target)


class FakeAUROC(_OnFakeProbability, BinaryAUROC):
    pass


class FakeF1(_OnFakeProbability, BinaryF1Score):
    pass


class DetectionMetrics:
    """Adds AUROC and F1 to the validation and test metrics of a 2-class :class:`SupervisedModule` subclass.

    Added in ``setup`` rather than ``__init__`` so the subclass keeps its parent's constructor (and config keys)
    unchanged; their states are not persistent, so checkpoints are the parent's.
    """

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.hparams.num_classes != 2 or self.task != "classification":
            raise ValueError(f"{type(self).__name__} detects real vs fake: it needs task: classification and "
                             f"num_classes: 2, got {self.task}, {self.hparams.num_classes}")
        for stage_name in ("val", "test"):
            collection = self.metrics[f"{stage_name}_"]
            if "auroc" not in collection:
                collection.add_metrics({"auroc": FakeAUROC(), "f1": FakeF1()})
                collection.to(self.device)

    def results(self) -> dict[str, Any]:
        parent: Optional[Any] = getattr(super(), "results", None)
        out = dict(parent()) if callable(parent) else {}
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if hasattr(datamodule, "class_balance"):
            out["class_balance"] = datamodule.class_balance()
        return out


class DeepfakeSupervisedModule(DetectionMetrics, SupervisedModule):
    """:class:`SupervisedModule` (same arguments) with AUROC and F1; the CNN1/CNN2 baselines of Table 5."""
