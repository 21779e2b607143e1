"""A CSVLogger that appends to an existing ``metrics.csv`` (resume) instead of deleting it."""
import csv
import os

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment


class _AppendingWriter(ExperimentWriter):
    rows_written = 0  # rows in metrics.csv, recorded in each checkpoint to cut a resumed log back exactly

    def _check_log_dir_exists(self) -> None:
        # Lightning's writer deletes an existing metrics.csv here; a resumed run must keep its history,
        # so adopt the file's header instead and let later saves append (or rewrite with merged keys).
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as file:
                reader = csv.DictReader(file)
                self.metrics_keys = sorted(reader.fieldnames or [])
                self.rows_written = sum(1 for _ in reader)

    def save(self) -> None:
        self.rows_written += len(self.metrics)
        super().save()


class ResumableCSVLogger(CSVLogger):
    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def truncate_metrics(path: str, rows: int, global_step: int) -> None:
    """Cut ``metrics.csv`` back to what a run had logged when it wrote the checkpoint it resumes from.

    ``rows`` were flushed when the checkpoint was written. Lightning logs the metrics of the batch (or epoch)
    that triggered the checkpoint right after it, so the next row belongs too when its step is still below
    the checkpoint's ``global_step``; anything later (work after the checkpoint, a partial-epoch summary of a
    run stopped by max_steps, test rows) is dropped.
    """
    if not os.path.isfile(path):
        return
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        fields, table = reader.fieldnames or [], list(reader)
    kept = table[:rows] + [row for row in table[rows:rows + 1] if int(row["step"]) < global_step]
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
    os.replace(tmp, path)
