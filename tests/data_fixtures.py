"""Tiny data sets written in the real on-disk formats (IDX for MNIST, pickled batches for CIFAR)."""
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """IDX file as in the MNIST distribution: magic (0, 0, 0x08 = ubyte, ndim), big-endian dims, data."""
    payload = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(f"{path}.gz", "wb") as file:
            file.write(payload)
    else:
        path.write_bytes(payload)


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 200, n_test: int = 50, compress: bool = False,
                seed: int = 0) -> Path:
    """Class-dependent images so a model can learn something; returns the raw folder."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 60, (n, 28, 28))
        for i, label in enumerate(labels):
            images[i, 2 * label:2 * label + 6, 4:24] += 180  # a bar whose height encodes the class
        write_idx(raw / f"{split}-images-idx3-ubyte", images, compress)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels, compress)
    return raw


def write_cifar(root: Path, classes: int = 10, n_per_file: int = 20, seed: int = 0) -> Path:
    """CIFAR-10 (5 data batches + test batch + meta) or CIFAR-100 (train/test/meta) python pickles."""
    rng = np.random.default_rng(seed)

    def batch(n: int, key: str) -> dict:
        return {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), key: rng.integers(0, classes, n).tolist(),
                "filenames": [f"img{i}.png" for i in range(n)]}

    if classes == 10:
        folder = root / "cifar-10-batches-py"
        files = {f"data_batch_{i}": batch(n_per_file, "labels") for i in range(1, 6)}
        files["test_batch"] = batch(n_per_file, "labels")
        files["batches.meta"] = {"label_names": [f"class{i}" for i in range(10)]}
    else:
        folder = root / "cifar-100-python"
        files = {"train": batch(5 * n_per_file, "fine_labels"), "test": batch(n_per_file, "fine_labels"),
                 "meta": {"fine_label_names": [f"class{i}" for i in range(100)]}}
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        with open(folder / name, "wb") as file:
            pickle.dump(content, file)
    return folder
