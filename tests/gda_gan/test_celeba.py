"""CelebA64DataModule on a tiny Celeb-A in the official on-disk layout, and one WGAN-GP step on it."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import DataError
from datamodules.celeba import CelebA64DataModule
from tests.conftest import read_results, run_dir, run_train

ATTRS = ["5_o_Clock_Shadow", "Arched_Eyebrows"]


def write_celeba(root: Path, partitions: list[int]) -> Path:
    """img_align_celeba/*.jpg (178x218 like the release) and the five annotation files."""
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"{i + 1:06d}.jpg" for i in range(len(partitions))]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(folder / "img_align_celeba" / name)
    rows = lambda fn: "\n".join(f"{n} {fn(i)}" for i, n in enumerate(names)) + "\n"  # noqa: E731
    (folder / "list_eval_partition.txt").write_text(rows(lambda i: partitions[i]))
    (folder / "identity_CelebA.txt").write_text(rows(lambda i: i + 1))
    (folder / "list_attr_celeba.txt").write_text(f"{len(names)}\n{' '.join(ATTRS)}\n" + rows(lambda i: "1 -1"))
    (folder / "list_bbox_celeba.txt").write_text(f"{len(names)}\nimage_id x_1 y_1 width height\n"
                                                 + rows(lambda i: "1 2 3 4"))
    (folder / "list_landmarks_align_celeba.txt").write_text(
        f"{len(names)}\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
        "rightmouth_x rightmouth_y\n" + rows(lambda i: " ".join(["1"] * 10)))
    return root


def test_partitions_and_64px(tmp_path: Path) -> None:
    root = write_celeba(tmp_path, [0] * 5 + [1, 1] + [2] * 3)
    dm = CelebA64DataModule(str(root), batch_size=2, heldout="test", num_workers=0)
    dm.setup()
    assert (len(dm.train_set), len(dm.test_set)) == (5, 3)
    images, attrs = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 3, 64, 64) and images.dtype == torch.uint8 and attrs.shape == (2, 2)
    x, _ = dm.on_after_batch_transfer((images, attrs), 0)
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    dm = CelebA64DataModule(str(root), heldout="valid", num_workers=0)
    dm.setup()
    assert len(dm.test_set) == 2


def test_missing_data_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nothing is downloaded"):
        CelebA64DataModule(str(tmp_path), num_workers=0).setup()
    with pytest.raises(ValueError, match="heldout"):
        CelebA64DataModule(str(tmp_path), heldout="train")


def test_dcgan64_runs_on_celeba(tmp_path: Path) -> None:
    root = write_celeba(tmp_path / "data", [0] * 10 + [2] * 4)
    args = ["--config", "configs/gan/dcgan64_celeba.yaml", "--data.root", str(root), "--data.batch_size", "2",
            "--data.num_workers", "0", "--model.init_args.generator.init_args.k", "4",
            "--model.init_args.critic.init_args.k", "4", "--trainer.max_steps", "1",
            "--trainer.callbacks.init_args.feature_extractor", "nets.gda_gan.TinyFeatures",
            "--trainer.callbacks.init_args.num_samples", "8", "--trainer.callbacks.init_args.batch_size", "4"]
    assert run_train(args, tmp_path / "runs") == 0
    res = read_results(run_dir(tmp_path / "runs", "dcgan64_celeba"))
    assert res["generator_params"] > 0 and "test/fid_tiny_test" in res
