"""Cityscapes segmentation: CNN3 counts, label mapping, the datamodule on a real-layout fixture, metrics against a
hand-computed confusion matrix, a 1-epoch fit, resume parity, W&B masks, the mapping-network configs."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import CityscapesDataModule, DataError
from datamodules.cityscapes import PALETTE, random_scaled_crop_flip, to_train_ids
from lit_modules.segmentation import SegmentationModule, colourise
from nets import CNN3
from tests.cityscapes_fixture import write_cityscapes
from tests.conftest import read_metrics, read_results, run_dir, run_train
from tests.mapping.grid_cells import grid_cells

# cityscapesScripts labels.py: label id -> train id of the 19 evaluated classes; all other ids are ignored
OFFICIAL = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
            27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
SMALL = ["--data.size", "[32, 32]", "--data.batch_size", "4", "--data.num_workers", "0", "--data.val_fraction",
         "0.34", "--trainer.log_every_n_steps", "1"]


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cityscapes(tmp_path_factory.mktemp("cityscapes"))


def test_cnn3_matches_table3() -> None:
    net = CNN3()
    assert sum(p.numel() for p in net.parameters()) == 1_734_803
    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    counts = [sum(p.numel() for p in m.parameters()) for m in convs]
    # Table 3 order: encoder, bottleneck, then (transpose, conv) per decoder stage, classifier
    assert counts == [896, 9248, 18496, 36928, 73856, 147584, 295168, 590080,
                      131200, 295040, 32832, 73792, 8224, 18464, 627]
    assert net(torch.randn(1, 3, 16, 24)).shape == (1, 19, 16, 24)
    with pytest.raises(ValueError, match="divisible by 8"):
        net(torch.randn(1, 3, 20, 24))


def test_label_ids_map_to_train_ids() -> None:
    ids = torch.arange(256, dtype=torch.uint8)
    expected = torch.tensor([OFFICIAL.get(i, 255) for i in range(256)])
    assert torch.equal(to_train_ids(ids), expected)
    assert PALETTE[0] == (128, 64, 128) and PALETTE[13] == (0, 0, 142) and len(PALETTE) == 19


def test_fixture_through_torchvision(cityscapes: Path) -> None:
    dm = CityscapesDataModule(str(cityscapes), batch_size=2, val_fraction=0.34, size=(16, 32), num_workers=0)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (4, 2, 3)  # 6 train images, 3 val images
    images, masks = dm.train_set[0]
    assert images.dtype == torch.uint8 and images.shape == (3, 16, 32) and masks.shape == (16, 32)
    assert set(masks.unique().tolist()) <= set(OFFICIAL.values()) | {255}
    # the first test image is frankfurt_000000 (sorted); nearest resize from 64x32 to 32x16 keeps every other pixel
    raw = np.array(Image.open(cityscapes / "gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelIds.png"))
    resized = np.array(Image.fromarray(raw).resize((32, 16), Image.NEAREST))
    assert torch.equal(dm.test_set[0][1], to_train_ids(torch.from_numpy(resized)))
    lazy = CityscapesDataModule(str(cityscapes), val_fraction=0.34, size=(16, 32), in_memory=False, num_workers=0)
    lazy.setup()
    for a, b in zip(lazy.val_set[1], dm.val_set[1]):
        assert torch.equal(a, b)


def test_missing_folders_name_them(tmp_path: Path) -> None:
    (tmp_path / "leftImg8bit" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"missing .*gtFine/train.*cityscapes-dataset.com"):
        CityscapesDataModule(str(tmp_path)).prepare_data()
    with pytest.raises(ValueError, match="min_crop_scale"):
        CityscapesDataModule(str(tmp_path), min_crop_scale=0.0)


def test_crop_flip_keeps_labels_exact() -> None:
    torch.manual_seed(0)
    x = torch.rand(8, 3, 16, 16)
    y = torch.randint(0, 19, (8, 16, 16))
    y[:, 0] = 255
    xa, ya = random_scaled_crop_flip(x, y, 0.5)
    assert set(ya.unique().tolist()) <= set(y.unique().tolist()) and xa.shape == x.shape
    x1, y1 = random_scaled_crop_flip(x, y, 1.0)  # full-size crop: identity or a mirror image
    for i in range(8):
        assert torch.equal(y1[i], y[i]) or torch.equal(y1[i], y[i].flip(-1))
        assert torch.allclose(x1[i], x[i], atol=1e-5) or torch.allclose(x1[i], x[i].flip(-1), atol=1e-5)


def test_metrics_match_a_hand_computed_confusion_matrix() -> None:
    module = SegmentationModule(torch.nn.Identity(), num_classes=4)
    torch.manual_seed(1)
    logits, target = torch.randn(2, 4, 5, 6), torch.randint(0, 4, (2, 5, 6))
    target[target == 3] = 255  # class 3 never labelled; predictions of 3 on labelled pixels still count as errors
    pred = logits.argmax(1)
    module.metrics["test_"].update(pred, target)
    module.test_iou.update(pred, target)
    got = module.metrics["test_"].compute()
    module.on_test_epoch_end()
    keep = target != 255
    t, p = target[keep].numpy(), pred[keep].numpy()
    cm = np.zeros((4, 4))
    np.add.at(cm, (t, p), 1)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    iou = [cm[c, c] / union[c] if union[c] else None for c in range(4)]
    assert got["test/pixel_acc"].item() == pytest.approx((t == p).mean())
    assert got["test/miou"].item() == pytest.approx(np.mean([v for v in iou if v is not None]))
    assert module.class_iou == pytest.approx(iou)


def test_colourise_uses_palette_and_blacks_out_ignored() -> None:
    palette = torch.tensor(PALETTE, dtype=torch.uint8)
    out = colourise(torch.tensor([[0, 13, 255]]), palette, 255)
    assert out[:, 0, 0].tolist() == [128, 64, 128] and out[:, 0, 1].tolist() == [0, 0, 142]
    assert out[:, 0, 2].tolist() == [0, 0, 0]


def test_one_epoch_fit_writes_miou_and_per_class_iou(cityscapes: Path, tmp_path: Path) -> None:
    args = ["--config", "configs/baseline/cnn3_cityscapes.yaml", "--data.root", str(cityscapes), *SMALL,
            "--trainer.max_epochs", "1"]
    assert run_train(args, tmp_path) == 0
    res = read_results(run_dir(tmp_path, "cnn3_cityscapes"))
    assert res["trainable_params"] == 1_734_803
    assert 0 <= res["test/miou"] <= 1 and 0 <= res["test/pixel_acc"] <= 1
    per_class = res["test/iou_per_class"]
    assert set(per_class) == set(CityscapesDataModule.class_names)  # results.json sorts keys
    present = [v for v in per_class.values() if v is not None]
    assert res["test/miou"] == pytest.approx(np.mean(present), abs=1e-6)


def test_resume_mid_epoch_reproduces_the_run(cityscapes: Path, tmp_path: Path) -> None:
    base = ["--config", "configs/baseline/cnn3_cityscapes.yaml", "--data.root", str(cityscapes), *SMALL,
            "--data.batch_size", "2", "--trainer.max_epochs", "2"]  # 2 steps per epoch, augmentation on
    assert run_train([*base, "--name", "full"], tmp_path) == 0
    assert run_train([*base, "--name", "cut", "--trainer.max_steps", "3"], tmp_path) == 0
    assert run_train([*base, "--name", "cut", "--ckpt_path", "last"], tmp_path) == 0
    assert read_metrics(run_dir(tmp_path, "cut")) == read_metrics(run_dir(tmp_path, "full"))
    assert read_results(run_dir(tmp_path, "cut"))["test/miou"] == read_results(run_dir(tmp_path, "full"))["test/miou"]


def test_wandb_gets_masks_every_n_validation_epochs(cityscapes: Path, tmp_path: Path) -> None:
    args = ["--config", "configs/baseline/cnn3_cityscapes.yaml", "--data.root", str(cityscapes), *SMALL,
            "--trainer.max_epochs", "2", "--model.log_images_every_n_epochs", "2", "--model.num_logged_images", "2",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    assert run_train(args, tmp_path, quiet=False) == 0
    media = list(run_dir(tmp_path, "cnn3_cityscapes").glob("wandb/**/media/images/val/*"))
    assert len([m for m in media if m.name.startswith("masks_")]) == 2
    assert len([m for m in media if m.name.startswith("palette_")]) == 2
    masks = list(run_dir(tmp_path, "cnn3_cityscapes").glob("wandb/**/media/images/mask/val/*.mask.png"))
    assert len(masks) == 4  # prediction and ground truth for each of the 2 images, logged once (epoch 2)


@pytest.mark.parametrize("cell,dims,extra", [
    pytest.param("cnn3_slvt_cityscapes_8192", 8192, [], marks=pytest.mark.slow),  # ~20 s building the projector
    ("cnn3_slvt_cityscapes_8192", 1024, ["--model.mapping.latent_dim", "1024"]),
    ("cnn3_lwt_cityscapes_9126", 9126, [])])
def test_mapping_cells_train_one_step_through_the_structured_projector(cityscapes: Path, tmp_path: Path, cell: str,
                                                                      dims: int, extra: list[str]) -> None:
    args = [*grid_cells("table6_cityscapes")[cell], "--data.root", str(cityscapes), *SMALL, *extra,
            "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1",
            "--name", cell]
    assert run_train(args, tmp_path) == 0
    res = read_results(run_dir(tmp_path, cell))
    assert res["trainable_params"] == dims and res["total_params"] == 1_734_803
    assert set(res["projectors"]) == {"hadamard"} and sum(res["latent_dims"]) == dims
    assert res["mapper_bytes"] < 0.01 * 4 * 1_734_803 * dims  # a dense fp32 P x d mapping: 57 GB at d = 8192
    assert len(res["test/iou_per_class"]) == 19
    metrics = read_metrics(run_dir(tmp_path, cell))
    assert {"train/stab", "train/smooth", "train/align"} <= set(metrics[0])


def test_mapping_segmentation_resume_mid_epoch_reproduces_the_run(cityscapes: Path, tmp_path: Path) -> None:
    base = [*grid_cells("table6_cityscapes")["cnn3_lwt_cityscapes_9126"], "--data.root", str(cityscapes), *SMALL,
            "--model.mapping.latent_dim", "512", "--data.batch_size", "2", "--trainer.max_epochs", "2"]
    assert run_train([*base, "--name", "full"], tmp_path) == 0
    assert run_train([*base, "--name", "cut", "--trainer.max_steps", "3"], tmp_path) == 0
    assert run_train([*base, "--name", "cut", "--ckpt_path", "last"], tmp_path) == 0
    assert read_metrics(run_dir(tmp_path, "cut")) == read_metrics(run_dir(tmp_path, "full"))
    full, cut = read_results(run_dir(tmp_path, "full")), read_results(run_dir(tmp_path, "cut"))
    assert full["test/iou_per_class"] == cut["test/iou_per_class"] and full["trainable_params"] == 512
