"""A quiet, correct console: 1-based epoch counts, the run's version as ``v_num``, no FLOPs column when nothing was
counted, and no tips or known-harmless library warnings (filtered by their exact message, nothing else)."""
import logging
import os
import warnings
from typing import Any, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichModelSummary, RichProgressBar
from pytorch_lightning.utilities.model_summary import get_human_readable_count

# each is harmless on every run of this project: advertisements and deprecations inside the libraries
HARMLESS_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning's own pytree use under torch >= 2.10
    r"You are using the legacy TorchScript-based ONNX export",  # export --format onnx picks it on purpose
    # evaluating a checkpoint needs none of the training callbacks' states (a resumed fit gets all of them)
    r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided",
    r"Checkpoint directory .* exists and is not empty",  # --ckpt_path last continues a run in its own folder
    # shared data modules serve a validation split that some modules (GN flow, WGAN-GP) do not use
    r"You passed in a `val_dataloader` but have no `validation_step`",
    r"`torch.jit.(script|trace|trace_method|load)` is deprecated",  # export --format torchscript, on purpose
)
HARMLESS_INFO = ("💡 Tip:", "TPU available:", "HPU available:", "Trainer already configured with model summary")


class _DropHarmless(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(HARMLESS_INFO)


def quiet_console() -> None:
    """Installs the filters (for the command line; tests see every warning). W&B's banner lines go too: the run
    ends with one line that says where it lives and how to see it in W&B."""
    for message in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropHarmless) for f in logger.filters):
            logger.addFilter(_DropHarmless())
    os.environ.setdefault("WANDB_SILENT", "true")
    # Lightning 2.6's LightningCLI calls jsonargparse APIs deprecated in jsonargparse 4.49 (not ours to change)
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")


class RunProgressBar(RichProgressBar):
    """Rich bar with ``Epoch 3/10`` (1-based, and no total when training is bounded by steps only), the run's
    version number as ``v_num`` (not the last characters of a logger's id) and the last written ``train/loss``.

    The loss is read back from the device once per written log step, not at every refresh: a value logged with
    ``prog_bar=True`` is converted after every batch, which makes a GPU's host wait for its queue each step."""

    def __init__(self, version: int) -> None:
        super().__init__()
        self.version = version
        self._loss: Optional[float] = None

    def _get_train_description(self, current_epoch: int) -> str:
        total = self.trainer.max_epochs
        text = f"Epoch {current_epoch + 1}" + (f"/{total}" if total is not None and total > 0 else "")
        return f"{text:{len(self.validation_description)}}"

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        if "v_num" in items and self.version >= 0:
            items["v_num"] = str(self.version)
        if self._loss is not None:
            items["train/loss"] = self._loss
        return items

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer._logger_connector.should_update_logs:  # Lightning's rule for the steps its loggers write
            loss = trainer.callback_metrics.get("train/loss")
            if loss is not None:
                self._loss = float(loss)
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


class RunModelSummary(RichModelSummary):
    """The layer table (name, type, parameters; FLOPs only when some were counted); the totals are printed by
    ``ParameterCounts`` in the paper's own counting."""

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int,
                  **summarize_kwargs: Any) -> None:
        from rich import get_console
        from rich.table import Table

        keep = ["Name", "Type", "Params"] + (["FLOPs"] if total_flops else [])
        columns = [(name, values) for name, values in summary_data if name in keep]
        table = Table(header_style="bold magenta")
        for name, _ in columns:
            table.add_column(name, justify="right" if name in ("Params", "FLOPs") else "left")
        for row in zip(*(values for _, values in columns)):
            table.add_row(*row)
        console = get_console()
        console.print(table)
        if total_flops:
            console.print(f"Total FLOPs: {get_human_readable_count(total_flops)}")
