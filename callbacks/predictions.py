"""What ``train.py predict`` writes: labels and class probabilities (CSV) for classifiers, predicted values for
regression, masks (PNG, one per image) for segmentation, and for generators a PNG grid plus the sample tensor."""
import csv
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from torch import Tensor


class PredictionWriter(BasePredictionWriter):
    """Writes each predicted batch (``{"output", "target"}`` from the module's ``predict_step``) into ``out_dir``:
    ``predictions.csv`` or ``masks/<index>.png``; ``files`` names them afterwards. Sample indices count through
    the prediction split in loader order (each process adds its rank to the file name under DDP)."""

    def __init__(self, out_dir: Path) -> None:
        super().__init__(write_interval="batch")
        self.out_dir, self.seen, self.files = Path(out_dir), 0, {}

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        out, target = prediction["output"].detach().cpu(), prediction["target"].detach().cpu()
        suffix = f"_rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        first, self.seen = self.seen, self.seen + len(out)
        if out.ndim == 4:  # (N, C, H, W) logits: one class-id mask per image
            folder = self.out_dir / f"masks{suffix}"
            folder.mkdir(exist_ok=True)
            from PIL import Image  # torchvision.io's PNG codec is deprecated since torchvision 0.29

            for i, mask in enumerate(out.argmax(1).to(torch.uint8)):
                Image.fromarray(mask.numpy(), mode="L").save(folder / f"{first + i:06d}.png")
            self.files["predictions"] = str(folder)
            return
        path = self.out_dir / f"predictions{suffix}.csv"
        rows, header = prediction_rows(out, target, first, getattr(pl_module, "task", "classification"))
        new = not path.exists()
        with open(path, "a", newline="") as file:
            writer = csv.writer(file)
            if new:
                writer.writerow(header)
            writer.writerows(rows)
        self.files["predictions"] = str(path)


def prediction_rows(out: Tensor, target: Tensor, first: int, task: str) -> tuple[list[list[Any]], list[str]]:
    if task == "classification":
        probs = out.float().softmax(-1)
        header = ["index", "target", "label", *(f"prob_{c}" for c in range(probs.shape[1]))]
        return [[first + i, int(t), int(p.argmax()), *(f"{v:.6g}" for v in p.tolist())]
                for i, (t, p) in enumerate(zip(target, probs))], header
    flat_out, flat_target = out.reshape(len(out), -1), target.reshape(len(target), -1)
    header = ["index", *(f"target_{j}" for j in range(flat_target.shape[1])),
              *(f"prediction_{j}" for j in range(flat_out.shape[1]))]
    return [[first + i, *t.tolist(), *p.tolist()] for i, (t, p) in enumerate(zip(flat_target, flat_out))], header


def save_samples(images: Tensor, out_dir: Path) -> dict[str, str]:
    """A generator's samples in [0, 1]: ``samples.png`` (8 per row) and the tensor ``samples.pt``."""
    from torchvision.utils import save_image

    images = images.detach().cpu()
    torch.save(images, out_dir / "samples.pt")
    save_image(images, str(out_dir / "samples.png"), nrow=8)
    return {"samples_png": str(out_dir / "samples.png"), "samples": str(out_dir / "samples.pt")}
