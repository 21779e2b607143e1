"""Deepfake detection (Table 5): real H.264 MP4s in the Celeb-DF v2 and FF++ layouts -> feature extraction with a
random ResNet-50 -> DeepfakeFeaturesDataModule -> 1 epoch of training with accuracy, AUROC and F1."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from datamodules import DataError, DeepfakeFeaturesDataModule
from datamodules.deepfake import FEATURE_DIM, feature_file, load_features
from datamodules.deepfake_videos import celebdf_videos, decode_frames, ffpp_videos, frame_indices, square_crop
from lit_modules.deepfake import FakeAUROC, FakeF1
from nets.video_features import FEATURE_DIM as NET_FEATURE_DIM
from tests.conftest import ROOT, read_metrics, read_results, run_dir, run_train
from tests.mapping.grid_cells import grid_cells, mapping_settings, resolved_config

av = pytest.importorskip("av")
spec = importlib.util.spec_from_file_location("extract", ROOT / "scripts" / "extract_deepfake_features.py")
extract = importlib.util.module_from_spec(spec)
spec.loader.exec_module(extract)

NUM_FRAMES, SIZE = 3, 32
FAST = ["--num_frames", str(NUM_FRAMES), "--size", str(SIZE), "--workers", "0", "--quiet", "--device", "cpu"]
FFPP_PAIRS = {"train": [["000", "001"], ["002", "003"]], "val": [["004", "005"]], "test": [["006", "007"]]}


# ---------------------------------------------------------------------- fixtures in the real layouts
def write_mp4(path: Path, fake: bool, seed: int, frames: int = 7, height: int = 36, width: int = 48) -> None:
    """H.264 (libx264, yuv420p) in an MP4 container: a drifting pattern; fakes get a flickering noise patch."""
    rng = np.random.default_rng(seed)
    t, y, x = np.ogrid[:frames, :height, :width]
    img = 128 + 60 * np.sin(0.3 * x + 0.2 * y + 0.5 * t + seed)
    if fake:
        img[:, 8:28, 14:34] += rng.normal(0, 60, (frames, 20, 20))
    img = np.clip(img, 0, 255).astype(np.uint8)
    rgb = np.stack([img, np.roll(img, 5, 2), 255 - img], -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        for frame in rgb:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_celebdf(root: Path) -> Path:
    videos = {"Celeb-real": [f"id{i}_0000" for i in range(4)], "YouTube-real": ["00000", "00001"],
              "Celeb-synthesis": [f"id{i}_id{i + 1}_0000" for i in range(6)]}
    for seed, (folder, names) in enumerate(videos.items()):
        for k, name in enumerate(names):
            write_mp4(root / folder / f"{name}.mp4", folder == "Celeb-synthesis", 10 * seed + k)
    (root / "List_of_testing_videos.txt").write_text(
        "1 YouTube-real/00001.mp4\n1 Celeb-real/id3_0000.mp4\n0 Celeb-synthesis/id0_id1_0000.mp4\n"
        "0 Celeb-synthesis/id5_id6_0000.mp4\n")
    return root


def write_ffpp(root: Path, methods: tuple[str, ...] = ("Deepfakes", "FaceSwap")) -> Path:
    (root / "splits").mkdir(parents=True)
    for split, pairs in FFPP_PAIRS.items():
        (root / "splits" / f"{split}.json").write_text(json.dumps(pairs))
        for a, b in pairs:
            for i in (a, b):
                write_mp4(root / f"original_sequences/youtube/c23/videos/{i}.mp4", False, int(i))
            for m, method in enumerate(methods):
                for x, y in ((a, b), (b, a)):
                    write_mp4(root / f"manipulated_sequences/{method}/c23/videos/{x}_{y}.mp4", True,
                              100 * m + int(x))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both layouts, a random ResNet-50 state dict, and the features extracted from them."""
    base = tmp_path_factory.mktemp("deepfake")
    torch.manual_seed(0)
    weights = base / "resnet50_random.pth"
    torch.save(torchvision.models.resnet50().state_dict(), weights)
    paths = {"celebdf": write_celebdf(base / "Celeb-DF-v2"), "ffpp": write_ffpp(base / "FaceForensics++"),
             "weights": weights, "features": base / "features"}
    for dataset in ("celebdf", "ffpp"):
        common = ["--root", str(paths[dataset]), "--weights", str(weights), "--out", str(paths["features"])]
        assert extract.main([dataset, *common, *FAST, "--methods", "Deepfakes", "FaceSwap"]) == 0
    return paths


def extractor_args(data: dict[str, Path], dataset: str, out: Path) -> list[str]:
    return [dataset, "--root", str(data[dataset]), "--weights", str(data["weights"]), "--out", str(out), *FAST,
            "--methods", "Deepfakes", "FaceSwap"]


# ---------------------------------------------------------------------- layouts and extraction
def test_layouts_give_the_official_splits(data: dict[str, Path]) -> None:
    celeb = celebdf_videos(data["celebdf"])
    assert [v.id for v in celeb["test"]] == sorted(["YouTube-real/00001.mp4", "Celeb-real/id3_0000.mp4",
                                                    "Celeb-synthesis/id0_id1_0000.mp4",
                                                    "Celeb-synthesis/id5_id6_0000.mp4"])
    assert len(celeb["train"]) == 8 and {v.label for v in celeb["train"] if v.source == "Celeb-synthesis"} == {1}
    ffpp = ffpp_videos(data["ffpp"], "c23", ("Deepfakes", "FaceSwap"))
    test_ids = {v.id for v in ffpp["test"]}
    assert test_ids == {"original_sequences/youtube/c23/videos/006.mp4", "original_sequences/youtube/c23/videos/007.mp4",
                        *(f"manipulated_sequences/{m}/c23/videos/{f}.mp4" for m in ("Deepfakes", "FaceSwap")
                          for f in ("006_007", "007_006"))}
    assert [sum(v.label for v in ffpp[s]) for s in ("train", "val", "test")] == [8, 4, 4]
    with pytest.raises(DataError, match="FaceForensics.*missing.*NeuralTextures"):
        ffpp_videos(data["ffpp"], "c23", ("NeuralTextures",))
    with pytest.raises(DataError, match="c40"):
        ffpp_videos(data["ffpp"], "c40", ("Deepfakes",))


def test_extractor_writes_one_2176_d_file_per_split(data: dict[str, Path]) -> None:
    assert FEATURE_DIM == NET_FEATURE_DIM == 2048 + 128
    expected = {("celebdf", "train"): 8, ("celebdf", "test"): 4, ("ffpp", "train"): 12, ("ffpp", "val"): 6,
                ("ffpp", "test"): 6}
    for (dataset, split), n in expected.items():
        content = load_features(feature_file(data["features"], dataset, split))
        assert content["features"].shape == (n, FEATURE_DIM) and content["features"].dtype == torch.float32
        assert content["split"] == split and content["recipe"]["num_frames"] == NUM_FRAMES
        fake = [s in ("Celeb-synthesis", "Deepfakes", "FaceSwap") for s in content["sources"]]
        assert content["labels"].tolist() == [int(f) for f in fake]
    assert not list(data["features"].glob("*.partial.pt"))


def test_features_match_an_independent_computation(data: dict[str, Path]) -> None:
    """Frames decoded one by one, the backbone run as torchvision's layers, statistics by explicit loops."""
    content = load_features(feature_file(data["features"], "celebdf", "test"))
    video_id = content["video_ids"][2]
    path = data["celebdf"] / video_id
    with av.open(str(path)) as container:
        every = [square_crop(f, SIZE) for f in container.decode(video=0)]
    starts = frame_indices(len(every), NUM_FRAMES)
    assert torch.equal(decode_frames(path, NUM_FRAMES, SIZE)[0], torch.from_numpy(np.stack([every[i] for i in starts])).permute(0, 3, 1, 2))
    net = torchvision.models.resnet50()
    net.load_state_dict(torch.load(data["weights"], weights_only=True))
    trunk = torch.nn.Sequential(*list(net.children())[:-1]).eval()
    x = torch.from_numpy(np.stack([every[i] for i in starts])).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    with torch.no_grad():
        per_frame = trunk((x - mean) / std).flatten(1).double()
    spread = [per_frame[:, 32 * g:32 * (g + 1)].std(0, unbiased=False).mean() for g in range(64)]
    gray = [e.astype(np.float64) / 255 @ np.array([0.299, 0.587, 0.114]) for e in every]
    pairs = [np.abs(gray[i + 1] - gray[i]) for i in starts]
    cells = [np.mean([p[4 * r:4 * r + 4, 4 * c:4 * c + 4].mean() for p in pairs]) for r in range(8) for c in range(8)]
    expected = torch.cat([per_frame.mean(0), torch.stack(spread), torch.tensor(cells)]).float()
    assert torch.allclose(content["features"][2], expected, rtol=1e-4, atol=1e-5)


def test_extraction_resumes_where_it_stopped_and_skips_finished_splits(data: dict[str, Path], tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    forward = extract.VideoFeatures.forward

    def counting(self, frames, flicker):  # noqa: ANN001, ANN202
        calls.append(len(frames))
        if len(calls) == 3 and interrupt:
            raise KeyboardInterrupt
        return forward(self, frames, flicker)

    monkeypatch.setattr(extract.VideoFeatures, "forward", counting)
    args = [*extractor_args(data, "celebdf", tmp_path), "--splits", "train", "--videos_per_batch", "2",
            "--save_every_s", "0"]
    interrupt = True
    with pytest.raises(KeyboardInterrupt):
        extract.main(args)
    partial = torch.load(tmp_path / "celebdf_train.partial.pt", weights_only=True)
    assert len(partial["video_ids"]) == 4 and not (tmp_path / "celebdf_train.pt").exists()
    interrupt, calls[:] = False, []
    assert extract.main(args) == 0
    assert sum(calls) == 8 - len(partial["video_ids"])  # only the remaining videos were decoded and embedded
    resumed = load_features(tmp_path / "celebdf_train.pt")
    reference = load_features(feature_file(data["features"], "celebdf", "train"))
    assert resumed["video_ids"] == reference["video_ids"]
    assert torch.allclose(resumed["features"], reference["features"], rtol=1e-4, atol=1e-5)
    calls[:] = []
    assert extract.main(args) == 0 and calls == []  # a finished split is skipped
    assert extract.main([*args, "--num_frames", "2"]) == 1  # another recipe does not mix into the file


def test_undecodable_video_is_reported_and_the_rest_kept(data: dict[str, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "celeb"
    write_celebdf(root)
    (root / "Celeb-real" / "id0_0000.mp4").write_bytes(b"not a video")
    args = [*extractor_args(data, "celebdf", tmp_path / "out"), "--root", str(root), "--splits", "train"]
    assert extract.main(args) == 1
    assert "id0_0000.mp4" in capsys.readouterr().out
    kept = torch.load(tmp_path / "out" / "celebdf_train.partial.pt", weights_only=True)
    assert len(kept["video_ids"]) == 7 and not (tmp_path / "out" / "celebdf_train.pt").exists()
    assert extract.main([*args, "--weights", str(tmp_path / "absent.pth")]) == 1


# ---------------------------------------------------------------------- data module and metrics
def test_datamodule_reshapes_standardises_and_reports_balance(data: dict[str, Path]) -> None:
    dm = DeepfakeFeaturesDataModule(str(data["features"]), "celebdf", val_fraction=0.25, batch_size=4)
    dm.setup()
    x, y = dm.sets["train"].images, dm.sets["train"].targets
    assert x.shape == (6, 3, 28, 28) and dm.sets["val"].images.shape[0] == 2
    flat = x.flatten(1)
    assert torch.all(flat[:, FEATURE_DIM:] == 0)
    assert torch.allclose(flat[:, :FEATURE_DIM].mean(0), torch.zeros(FEATURE_DIM), atol=1e-5)
    raw = load_features(feature_file(data["features"], "celebdf", "train"))
    assert sorted(dm.video_ids["train"] + dm.video_ids["val"]) == sorted(raw["video_ids"])
    assert dm.class_balance()["test"] == {"real": 2, "fake": 2, "fake_share": 0.5}
    ffpp = DeepfakeFeaturesDataModule(str(data["features"]), "ffpp", input_shape=(1, 47, 47), batch_size=4)
    ffpp.setup()
    assert ffpp.sets["val"].images.shape == (6, 1, 47, 47)
    assert ffpp.class_balance()["train"] == {"real": 4, "fake": 8, "fake_share": 0.6667}
    batches = list(ffpp.train_dataloader())
    assert [len(b[1]) for b in batches] == [4, 4, 4]


def test_datamodule_bad_input(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=str(tmp_path / "ffpp_c40_train.pt")):
        DeepfakeFeaturesDataModule(str(tmp_path), "ffpp", compression="c40").prepare_data()
    with pytest.raises(ValueError, match="fewer than the 2176"):
        DeepfakeFeaturesDataModule(str(tmp_path), input_shape=(1, 28, 28))
    with pytest.raises(ValueError, match="val_fraction"):
        DeepfakeFeaturesDataModule(str(tmp_path), "celebdf", val_fraction=0.0)


def test_auroc_and_f1_match_their_definitions() -> None:
    gen = torch.Generator().manual_seed(0)
    logits, y = torch.randn(200, 2, generator=gen), torch.randint(0, 2, (200,), generator=gen)
    p = logits.softmax(1)[:, 1]
    pos, neg = p[y == 1], p[y == 0]
    mann_whitney = ((pos[:, None] > neg[None]).double() + 0.5 * (pos[:, None] == neg[None]).double()).mean()
    pred = logits.argmax(1)
    tp, fp, fn = ((pred == 1) & (y == 1)).sum(), ((pred == 1) & (y == 0)).sum(), ((pred == 0) & (y == 1)).sum()
    auroc, f1 = FakeAUROC(), FakeF1()
    for chunk in range(0, 200, 64):  # metrics accumulate over batches
        auroc.update(logits[chunk:chunk + 64], y[chunk:chunk + 64])
        f1.update(logits[chunk:chunk + 64], y[chunk:chunk + 64])
    assert torch.isclose(auroc.compute().double(), mann_whitney, atol=1e-6)
    assert torch.isclose(f1.compute(), 2 * tp / (2 * tp + fp + fn))


# ---------------------------------------------------------------------- train.py end to end
def test_every_table5_row_is_a_cell() -> None:
    rows = {"cnn1": (1024, 2048, 1956, 2792), "cnn2": (1024, 2048, 1872, 2688)}
    cells = grid_cells("table5_deepfake")
    expected = {f"{net}_{dataset}" for net in rows for dataset in ("celebdf", "ffpp")} | {
        f"{net}_{strategy}_{dataset}_{d}" for net, dims in rows.items() for dataset in ("celebdf", "ffpp")
        for d, strategy in zip(dims, ("slvt", "slvt", "lwt", "lwt"))}
    assert set(cells) == expected
    for cell in expected - {f"{net}_{dataset}" for net in rows for dataset in ("celebdf", "ffpp")}:
        net, strategy, dataset, d = cell.split("_")
        config = resolved_config(cells[cell])
        assert (mapping_settings(config)["strategy"], mapping_settings(config)["latent_dim"]) == (strategy, int(d))
        assert config["data"]["init_args"]["dataset"] == dataset


def test_baseline_fits_one_epoch_with_detection_metrics(data: dict[str, Path], tmp_path: Path) -> None:
    args = ["--config", "configs/baseline/cnn2_ffpp.yaml", "--data.root", str(data["features"]),
            "--data.batch_size", "4", "--trainer.max_epochs", "1", "--name", "cnn2_ffpp"]
    assert run_train(args, tmp_path) == 0
    results = read_results(run_dir(tmp_path, "cnn2_ffpp"))
    for key in ("test/acc", "test/auroc", "test/f1", "val/auroc", "val/f1"):
        assert 0.0 <= results[key] <= 1.0, key
    assert results["trainable_params"] == 107_874 and results["epochs"] == 1
    assert results["class_balance"]["test"] == {"real": 2, "fake": 4, "fake_share": 0.6667}


def test_mapping_row_runs_a_step(data: dict[str, Path], tmp_path: Path) -> None:
    args = [*grid_cells("table5_deepfake")["cnn2_lwt_celebdf_1872"], "--data.root", str(data["features"]),
            "--data.batch_size", "4", "--data.val_fraction", "0.25", "--trainer.max_steps", "1", "--name", "map"]
    assert run_train(args, tmp_path) == 0
    results = read_results(run_dir(tmp_path, "map"))
    assert results["trainable_params"] == 1872 and results["global_step"] == 1
    assert {"test/acc", "test/auroc", "test/f1", "class_balance"} <= set(results)


def test_resume_mid_epoch_reproduces_the_uninterrupted_run(data: dict[str, Path], tmp_path: Path) -> None:
    args = ["--config", "configs/baseline/cnn2_celebdf.yaml", "--data.root", str(data["features"]),
            "--data.batch_size", "2", "--data.val_fraction", "0.25", "--trainer.max_epochs", "2",
            "--trainer.log_every_n_steps", "1", "--checkpoint_every_n_steps", "1"]
    assert run_train([*args, "--name", "full"], tmp_path) == 0
    assert run_train([*args, "--name", "cut", "--trainer.max_steps", "4"], tmp_path) == 0  # mid epoch 2 (3 steps each)
    assert run_train([*args, "--name", "cut", "--ckpt_path", "last"], tmp_path) == 0
    assert read_metrics(run_dir(tmp_path, "cut")) == read_metrics(run_dir(tmp_path, "full"))
    full, cut = read_results(run_dir(tmp_path, "full")), read_results(run_dir(tmp_path, "cut"))
    for key in ("test/acc", "test/auroc", "test/f1", "global_step"):
        assert cut[key] == full[key], key


def test_detection_modules_need_two_classes(data: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    args = ["--config", "configs/baseline/cnn2_ffpp.yaml", "--data.root", str(data["features"]),
            "--model.init_args.num_classes", "10", "--trainer.max_steps", "1"]
    assert run_train(args, tmp_path) == 1
    assert "num_classes: 2" in capsys.readouterr().err
