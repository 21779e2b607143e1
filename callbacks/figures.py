"""Pictures where people would look rather than read: PNG files in ``<run>/figures/`` and, when a W&B logger is
attached, the same images in W&B. A module (or callback) says what to draw:

- ``figure_curves``: ``{panel title: (metric name prefixes, ...)}``; at the end of fit every ``metrics.csv`` column
  that starts with one of the prefixes is drawn against the step (mapping: latent norm and lambdas; Gauss-Newton:
  lambda_min and gradient norms; Neuron Pursuit: the width of each layer as it grows).
- ``figure_histograms() -> {name: tensor}``: histograms at the end of fit (mapping: generated weights per group).
- ``figure_spectra``: ``{name: eigenvalues}`` drawn sorted on a log scale at the end of fit (``NTKMonitor``: the
  NTK spectrum at step 0 and at the end of the ResNet-width runs).
- classifiers (``task == "classification"``, logits ``(N, C)``) get a confusion matrix (torchmetrics) and up to 16
  misclassified test images at the end of test.
"""
import csv
import math
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from callbacks.csv_logger import write_logs

MISCLASSIFIED = 16


class Figures(Callback):
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)  # not trainer.log_dir: that is a collective under DDP, and only rank 0 draws
        self.confusion: Optional[MulticlassConfusionMatrix] = None
        self.wrong: list[tuple[Tensor, int, int]] = []

    # ------------------------------------------------------------------ end of fit
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        panels = dict(getattr(pl_module, "figure_curves", {}))
        for callback in trainer.callbacks:
            panels.update(getattr(callback, "figure_curves", {}))
        if panels:
            write_logs(trainer.loggers)  # metrics.csv up to date
            self.curves(trainer, panels)
        histograms = getattr(pl_module, "figure_histograms", None)
        if callable(histograms):
            self.histograms(trainer, histograms())
        spectra = {k: v for c in trainer.callbacks for k, v in getattr(c, "figure_spectra", {}).items()}
        if spectra:
            self.spectra(trainer, spectra)

    def spectra(self, trainer: pl.Trainer, spectra: dict[str, Tensor]) -> None:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name, values in spectra.items():
            ax.plot(values.flip(0).clamp_min(1e-12).numpy(), label=name)
        ax.set(yscale="log", xlabel="index (largest first)", ylabel="eigenvalue", title="NTK spectrum")
        ax.legend(fontsize=7)
        self.publish(trainer, "ntk_spectrum", fig)

    def curves(self, trainer: pl.Trainer, panels: dict[str, tuple[str, ...]]) -> None:
        path = self.run_dir / "metrics.csv"
        if not path.is_file():
            return
        with open(path, newline="") as file:
            rows = list(csv.DictReader(file))
        plt = pyplot()
        fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), squeeze=False)
        for ax, (title, prefixes) in zip(axes[0], panels.items()):
            keys = sorted({k for row in rows[:1] for k in row if k.startswith(tuple(prefixes))})
            for key in keys:
                points = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
                if points:
                    ax.plot(*zip(*points), label=key, marker="." if len(points) < 50 else None)
            ax.set(title=title, xlabel="step")
            if keys:
                ax.legend(fontsize=7)
        self.publish(trainer, "curves", fig)

    def histograms(self, trainer: pl.Trainer, tensors: dict[str, Tensor]) -> None:
        plt = pyplot()
        cols = min(4, len(tensors))
        fig, axes = plt.subplots(math.ceil(len(tensors) / cols), cols, figsize=(3.5 * cols, 2.6 *
                                 math.ceil(len(tensors) / cols)), squeeze=False)
        for ax, (name, values) in zip(axes.flat, tensors.items()):
            ax.hist(values.detach().float().flatten().cpu().numpy(), bins=80)
            ax.set_title(name, fontsize=8)
        for ax in list(axes.flat)[len(tensors):]:
            ax.axis("off")
        self.publish(trainer, "histograms", fig)

    # ------------------------------------------------------------------ end of test (classifiers)
    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.confusion, self.wrong = None, []

    @torch.no_grad()
    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if getattr(pl_module, "task", None) != "classification" or not isinstance(batch, (tuple, list)):
            return
        x, y = batch[0], batch[1]
        logits = pl_module(x)
        if logits.ndim != 2:  # segmentation and other dense outputs draw their own pictures
            return
        if self.confusion is None:
            self.confusion = MulticlassConfusionMatrix(logits.shape[1]).to(logits.device)
        pred = logits.argmax(1)
        self.confusion.update(pred, y)
        for i in torch.nonzero(pred != y).flatten().tolist()[:MISCLASSIFIED - len(self.wrong)]:
            self.wrong.append((x[i].detach().cpu(), int(y[i]), int(pred[i])))

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.confusion is None:
            return
        matrix = self.confusion.compute()  # synced over processes
        if not trainer.is_global_zero:
            return
        fig, _ = self.confusion.plot(matrix)
        fig.set_size_inches(6, 6)
        self.publish(trainer, "confusion_matrix", fig)
        if self.wrong and self.wrong[0][0].ndim == 3:
            self.misclassified(trainer)

    def misclassified(self, trainer: pl.Trainer) -> None:
        plt = pyplot()
        fig, axes = plt.subplots(2, MISCLASSIFIED // 2, figsize=(12, 3.4), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, (image, truth, guess) in zip(axes.flat, self.wrong):
            image = (image - image.amin()) / (image.amax() - image.amin() + 1e-12)
            ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if image.shape[0] == 1 else None)
            ax.set_title(f"true {truth} / pred {guess}", fontsize=7)
        self.publish(trainer, "misclassified", fig)

    # ------------------------------------------------------------------ output
    def publish(self, trainer: pl.Trainer, name: str, fig: Any) -> None:
        folder = self.run_dir / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        try:  # a picture that cannot be drawn must not cost the run its results
            if fig.get_layout_engine() is None:  # torchmetrics' plots bring their own
                fig.tight_layout()
            fig.savefig(folder / f"{name}.png", dpi=110)
        except (ValueError, RuntimeError, OSError) as err:
            rank_zero_warn(f"figure {name} not drawn: {err}")
            return
        finally:
            pyplot().close(fig)
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.WandbLogger):
                import wandb

                logger.experiment.log({f"figures/{name}": wandb.Image(str(folder / f"{name}.png")),
                                       "trainer/global_step": trainer.global_step})


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt
