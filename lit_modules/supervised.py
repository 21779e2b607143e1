"""Generic supervised training of any ``nn.Module``: classification or regression."""
from typing import Any, Literal, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric, MeanSquaredError, MetricCollection
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.regression import MeanAbsoluteError

from lit_modules.step_logging import WrittenStepLogging


def adam(params: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-3)


class CosineAnnealingLR(torch.optim.lr_scheduler.CosineAnnealingLR):
    """torch's cosine annealing (per epoch) whose ``T_max`` defaults to the run's ``trainer.max_epochs`` (set by
    :meth:`SupervisedModule.configure_optimizers`), so that ``--trainer.max_epochs 30`` decays to ``eta_min`` over
    30 epochs without a second flag. An explicit ``T_max`` is kept."""

    def __init__(self, optimizer: torch.optim.Optimizer, T_max: Optional[int] = None, eta_min: float = 0.0,
                 last_epoch: int = -1) -> None:
        self.follows_run = T_max is None
        # the initial step does not use T_max; configure_optimizers sets it before the first epoch ends
        super().__init__(optimizer, 1 if T_max is None else T_max, eta_min, last_epoch)


class SupervisedModule(WrittenStepLogging, pl.LightningModule):
    """Trains ``net`` with cross-entropy (classification) or MSE (regression).

    Logs ``{train,val,test}/loss`` and ``acc`` (classification) or ``mse``/``mae`` (regression).
    The best checkpoint is chosen by ``monitor`` (``val/acc`` or ``val/loss``).
    """

    def __init__(self, net: nn.Module, task: Literal["classification", "regression"] = "classification",
                 num_classes: int = 10, optimizer: OptimizerCallable = adam,
                 lr_scheduler: Optional[LRSchedulerCallable] = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "lr_scheduler"])
        self.net, self.task = net, task
        self.optimizer_factory, self.scheduler_factory = optimizer, lr_scheduler
        self.loss_fn = nn.CrossEntropyLoss() if task == "classification" else nn.MSELoss()
        if task == "classification":
            metrics = MetricCollection({"acc": MulticlassAccuracy(num_classes, average="micro")})
            self.monitor, self.monitor_mode = "val/acc", "max"
        else:
            metrics = MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError()})
            self.monitor, self.monitor_mode = "val/loss", "min"
        # keys get a suffix because ModuleDict keys may not shadow nn.Module attributes such as .train
        self.metrics = nn.ModuleDict({f"{s}_": metrics.clone(prefix=f"{s}/") for s in ("train", "val", "test")})
        self.metrics["train_"].persistent(True)  # epoch-level train metrics survive a mid-epoch resume
        self.mean_loss = nn.ModuleDict({f"{s}_": MeanMetric() for s in ("val", "test")})

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        out = self(x)
        if self.task == "regression":
            out = out.reshape(y.shape)
        return self.loss_fn(out, y), out.detach()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss, out = self._loss(x, y)
        self.track_train(loss, out, y)
        return loss

    def track_train(self, loss: Tensor, out: Tensor, y: Tensor) -> None:
        """Log the step's loss and accumulate the epoch's train metrics (logged in ``on_train_epoch_end``)."""
        self.metrics["train_"].update(out, y)
        if self.logs_this_step():
            # not prog_bar: Lightning reads bar values back to the host after every batch, a wait per step on a GPU
            # (callbacks.console.RunProgressBar shows the written value instead)
            self.log("train/loss", loss, sync_dist=True)

    def on_train_epoch_end(self) -> None:
        # logged once per epoch from compute() (which syncs across processes): handing the metric objects to
        # self.log every step costs Lightning ~1 ms per step in device moves (ResultCollection.log -> .to)
        self.log_dict(self.metrics["train_"].compute())
        self.metrics["train_"].reset()

    def _eval_step(self, stage: str, batch: tuple[Tensor, Tensor]) -> None:
        x, y = batch
        loss, out = self._loss(x, y)
        self.metrics[f"{stage}_"].update(out, y)
        self.mean_loss[f"{stage}_"].update(loss, weight=len(y))
        self.log(f"{stage}/loss", self.mean_loss[f"{stage}_"], prog_bar=stage == "val")
        self.log_dict(self.metrics[f"{stage}_"], prog_bar=stage == "val")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        x, y = batch
        return {"output": self(x), "target": y}  # train.py predict writes them (callbacks/predictions.py)

    def configure_optimizers(self) -> Any:
        # frozen parameters (mapping networks' targets, fine-tuning outside the layer set) stay out of the optimizer
        optimizer = self.optimizer_factory([p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        if getattr(scheduler, "follows_run", False):
            epochs = self.trainer.max_epochs
            if epochs is None or epochs < 1:
                raise ValueError("lr_scheduler CosineAnnealingLR without T_max follows trainer.max_epochs, which is "
                                 f"{epochs}: give T_max or a positive trainer.max_epochs")
            scheduler.T_max = epochs
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor}}
