"""Reads what an offline W&B run recorded (its ``run-*.wandb`` file), to check summary and config in tests."""
import json
import time
from pathlib import Path
from typing import Any, Iterator

from wandb.proto.wandb_internal_pb2 import Record

BLOCK, HEADER, FULL, LAST = 32768, 7, 1, 4  # LevelDB log framing after W&B's 7-byte file header


def records(path: Path) -> Iterator[Record]:
    data, pos, parts = path.read_bytes(), HEADER, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if left < 7 or (length == 0 and kind == 0):  # block trailer / padding
            pos += left
            continue
        parts += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (FULL, LAST):
            yield Record.FromString(parts)
            parts = b""


def finished_records(path: Path, timeout: float = 30.0) -> list[Record]:
    """``records(path)`` once the file holds the run's exit record: W&B's writer may still be flushing it when
    ``finish()`` has returned."""
    deadline = time.monotonic() + timeout
    while True:
        found = list(records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def summary_and_config(run_folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The final summary and config of the (newest) offline run under ``<run>/wandb/``."""
    summary: dict[str, Any] = {}
    config: dict[str, Any] = {}
    for path in sorted(run_folder.glob("wandb/offline-run-*/run-*.wandb")):
        for record in finished_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "summary":
                summary.update({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                for item in record.summary.update})
            elif kind == "config":
                config.update({item.key: json.loads(item.value_json) for item in record.config.update})
    return summary, config
