"""A CSVLogger that appends to an existing log (resume) instead of deleting it, with one row per step.

Lightning logs a step's metrics in several calls (learning rate at the batch start, the step's loss, validation,
the epoch-end summary), some before and some after the checkpoint of that step. ``metrics_raw.csv`` keeps one row
per call, so a resumed run can cut it back to exactly its checkpoint (``truncate_metrics``); ``metrics.csv`` is
rewritten from it, with the calls of one step joined into one row, at every checkpoint and at the end of the run
(``ResumableCSVLogger.merge``): rewriting it at every save made a long run's logging cost grow with its length.
"""
import csv
import os
from typing import Any

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

RAW, MERGED = "metrics_raw.csv", "metrics.csv"


class _AppendingWriter(ExperimentWriter):
    NAME_METRICS_FILE = RAW
    rows_written = 0  # rows in metrics_raw.csv, recorded in each checkpoint to cut a resumed log back exactly

    def _check_log_dir_exists(self) -> None:
        # Lightning's writer deletes an existing log here; a resumed run must keep its history,
        # so adopt the file's header instead and let later saves append (or rewrite with merged keys).
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as file:
                reader = csv.DictReader(file)
                self.metrics_keys = sorted(reader.fieldnames or [])
                self.rows_written = sum(1 for _ in reader)

    def save(self) -> None:
        if self.metrics:
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

    @rank_zero_only
    def merge(self) -> None:
        """Write the buffered rows and bring ``metrics.csv`` up to date."""
        self.save()
        if os.path.isfile(os.path.join(self.log_dir, RAW)):
            merge_steps(self.log_dir)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._experiment is not None:  # a process that never logged has nothing to merge
            self.merge()


def write_logs(loggers: list) -> None:
    """Writes every logger's buffered rows; our CSV logger also brings ``metrics.csv`` up to date."""
    for logger in loggers:
        if isinstance(logger, ResumableCSVLogger):
            logger.merge()
        else:
            logger.save()


def read_rows(path: str) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


def write_rows(path: str, fields: list[str], rows: list[dict[str, Any]]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def merge_steps(folder: str) -> None:
    """``metrics.csv`` from ``metrics_raw.csv``: consecutive rows of the same step become one row, unless they
    disagree on a value (then both stay)."""
    fields, rows = read_rows(os.path.join(folder, RAW))
    merged: list[dict[str, str]] = []
    for row in rows:
        last = merged[-1] if merged else None
        if last is not None and last["step"] == row["step"] and all(
                last[k] in ("", v) for k, v in row.items() if v != ""):
            last.update({k: v for k, v in row.items() if v != ""})
        else:
            merged.append(dict(row))
    write_rows(os.path.join(folder, MERGED), fields, merged)


def truncate_metrics(folder: str, rows: int, global_step: int, row_follows: bool = True) -> None:
    """Cut the log of the run in ``folder`` back to what it had logged when it wrote the checkpoint it resumes from.

    ``rows`` were flushed when the checkpoint was written. A checkpoint written inside a training batch or at an
    epoch's end (``row_follows``) is followed by the metrics of that batch or epoch, so the next row belongs too
    when its step is still below the checkpoint's ``global_step``; anything later (work after the checkpoint, a
    partial-epoch summary of a run stopped by max_steps, test rows) is dropped.
    """
    path = os.path.join(folder, RAW)
    if not os.path.isfile(path):
        return
    fields, table = read_rows(path)
    follower = [row for row in table[rows:rows + 1] if row_follows and int(row["step"]) < global_step]
    write_rows(path, fields, table[:rows] + follower)
    merge_steps(folder)
