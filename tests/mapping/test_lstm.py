"""Table 7: the CSV time-series datamodule (checked against independent NumPy arithmetic on the raw CSV; single-site
CSV and the multi-site PRSA folder), the LSTM counts, and the mapping LSTM through train.py (counts, resume
parity)."""
import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import nets
from datamodules import DataError, TimeSeriesCSVDataModule
from scripts.make_airpollution_csv import write_airpollution_csv, write_multisite_folder
from tests.conftest import ROOT, read_metrics, read_results, run_dir, run_train
from tests.mapping.grid_cells import build_model, grid_cells, mapping_settings, resolved_config

CELLS = {cell: args for cell, args in grid_cells("table7_lstm").items() if "_slvt_" in cell}


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_airpollution_csv(tmp_path_factory.mktemp("ts") / "pollution.csv", hours=600, seed=1)


def raw_columns(path: Path) -> dict[str, list[str]]:
    with open(path, newline="") as file:
        rows = list(csv.reader(file))
    return {name: [r[i] for r in rows[1:]] for i, name in enumerate(rows[0])}


def module(path: Path, **kwargs) -> TimeSeriesCSVDataModule:
    dm = TimeSeriesCSVDataModule(path=str(path), **{"window": 6, "horizon": 3, "batch_size": 16, **kwargs})
    dm.setup()
    return dm


def test_splits_are_chronological_blocks_and_windows_never_straddle(csv_path: Path) -> None:
    dm = module(csv_path, train_fraction=0.6, val_fraction=0.2)
    assert dm.boundaries == (360, 480)
    blocks = {"train": (0, 360), "val": (360, 480), "test": (480, 600)}
    for split, (lo, hi) in blocks.items():
        ends = getattr(dm, f"{split}_set").ends
        assert ends.min() - 6 + 1 == lo and ends.max() + 3 == hi - 1  # every complete window, none beyond
        assert len(ends) == (hi - lo) - 6 + 1 - 3


def test_scaling_is_fitted_on_the_train_rows_only(csv_path: Path) -> None:
    dm = module(csv_path, train_fraction=0.5, val_fraction=0.2)
    raw = raw_columns(csv_path)
    temp, pm = np.array(raw["temp"], float), np.array(raw["pollution"], float)
    col = dm.feature_names.index("temp")
    lo, hi = temp[:300].min(), temp[:300].max()
    assert lo > temp.min() or hi < temp.max()  # the later rows would give other statistics
    t = int(dm.test_set.ends[0])  # a test window: scaled with the train statistics
    x, y = dm.test_set[0]
    np.testing.assert_allclose(x[:, col].numpy(), (temp[t - 5:t + 1] - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    pm_lo, pm_hi = pm[:300].min(), pm[:300].max()
    assert y.item() == pytest.approx((pm[t + 3] - pm_lo) / (pm_hi - pm_lo), abs=1e-6)
    assert dm.unscale_target(y).item() == pytest.approx(pm[t + 3], abs=1e-3)
    std = module(csv_path, train_fraction=0.5, val_fraction=0.2, scaling="standard")
    x, _ = std.test_set[0]
    np.testing.assert_allclose(x[:, col].numpy(), (temp[t - 5:t + 1] - temp[:300].mean()) / temp[:300].std(),
                               rtol=1e-5, atol=1e-5)


def test_window_target_alignment_and_categorical_one_hot(csv_path: Path) -> None:
    dm = module(csv_path)
    raw = raw_columns(csv_path)
    pm = np.array(raw["pollution"], float)
    names = dm.feature_names
    assert names == ["dew", "temp", "press", "wnd_dir=NE", "wnd_dir=NW", "wnd_dir=SE", "wnd_dir=cv", "wnd_spd",
                     "snow", "rain", "pollution"] and dm.num_features == 11
    x, y = dm.train_set.__getitems__([0, 7, 40])
    assert x.shape == (3, 6, 11) and y.shape == (3, 1)
    scale = dm.stats["target_scale"][0]
    for row, t in enumerate(dm.train_set.ends[[0, 7, 40]].tolist()):
        # inputs are rows t-5..t (past pollution included as a scaled input), the target is pollution at t+3
        np.testing.assert_allclose(x[row, :, -1].numpy(), (pm[t - 5:t + 1] - dm.stats["shift"][-1]) / scale,
                                   atol=1e-6)
        assert y[row, 0].item() == pytest.approx((pm[t + 3] - dm.stats["target_shift"][0]) / scale, abs=1e-6)
        onehot = x[row, :, 3:7].numpy()
        expected = [[float(v == c) for c in ("NE", "NW", "SE", "cv")] for v in raw["wnd_dir"][t - 5:t + 1]]
        np.testing.assert_array_equal(onehot, expected)  # unscaled 0/1
    explicit = module(csv_path, features=["temp", "wnd_spd"], categorical=["rain"], target_as_feature=False)
    assert explicit.feature_names[:2] == ["temp", "wnd_spd"] and all(n.startswith("rain=") for n in
                                                                      explicit.feature_names[2:])


def test_missing_values_never_reach_inputs_or_targets(tmp_path: Path) -> None:
    path = write_airpollution_csv(tmp_path / "gappy.csv", hours=600, seed=2, missing=0.05)
    gaps = {i for i, v in enumerate(raw_columns(path)["pollution"]) if v == "NA"}
    assert gaps
    for missing in ("ffill", "drop"):
        dm = module(path, missing=missing)
        for split in (dm.train_set, dm.val_set, dm.test_set):
            ends = split.ends.tolist()
            assert not gaps & {t + 3 for t in ends}  # no filled-in labels
            x, y = split.__getitems__(list(range(len(split))))
            assert torch.isfinite(x).all() and torch.isfinite(y).all()
            if missing == "drop":
                assert not any(gaps & set(range(t - 5, t + 1)) for t in ends)
    assert len(module(path, missing="drop").train_set) < len(module(path, missing="ffill").train_set)


def test_raw_uci_layout_without_a_date_column(csv_path: Path, tmp_path: Path) -> None:
    """The raw UCI file: No, year, month, day, hour, pm2.5 (NA gaps), DEWP, TEMP, PRES, cbwd, Iws, Is, Ir."""
    raw = raw_columns(csv_path)
    path = tmp_path / "PRSA.csv"
    with open(path, "w", newline="") as file:
        out = csv.writer(file)
        out.writerow(["No", "year", "month", "day", "hour", "pm2.5", "DEWP", "TEMP", "PRES", "cbwd", "Iws", "Is", "Ir"])
        for i, date in enumerate(raw["date"]):
            y, m, d, h = int(date[:4]), int(date[5:7]), int(date[8:10]), int(date[11:13])
            pm = "NA" if i % 50 == 7 else raw["pollution"][i]
            out.writerow([i + 1, y, m, d, h, pm] + [raw[c][i] for c in ("dew", "temp", "press", "wnd_dir", "wnd_spd",
                                                                         "snow", "rain")])
    dm = module(path, target="pm2.5", time_column=None, features=["DEWP", "TEMP", "PRES", "cbwd", "Iws", "Is", "Ir"])
    assert dm.num_features == 11 and dm.feature_names[-1] == "pm2.5"
    assert not {i for i in range(600) if i % 50 == 7} & {t + 3 for t in dm.train_set.ends.tolist()}


def test_bad_input_gives_one_clear_error(csv_path: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no column 'pm25'"):
        module(csv_path, target="pm25")
    with pytest.raises(DataError, match="no column 'humidity'"):
        module(csv_path, features=["temp", "humidity"])
    with pytest.raises(DataError, match="no CSV file .*--data.path"):
        module(tmp_path / "absent.csv")
    with pytest.raises(ValueError, match="train_fraction"):
        TimeSeriesCSVDataModule(path=str(csv_path), train_fraction=0.8, val_fraction=0.3)


def test_lstm_counts() -> None:
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(nets.LSTMRegressor(67, 32)) == 12_961  # the paper's baseline: 4*32*(67+32) + 2*128 + 33
    config = yaml.safe_load((ROOT / "configs" / "baseline" / "lstm_airpollution.yaml").read_text())
    net = nets.LSTMRegressor(**config["model"]["init_args"]["net"]["init_args"])
    assert count(net) == 12_961 and config["data"]["init_args"]["layout"] == "multisite"
    assert count(nets.LSTMRegressor(11, 32)) == 4 * 32 * (11 + 32) + 2 * 128 + 33 == 5_793  # the single-site CSV


def test_every_table7_row_is_a_cell() -> None:
    assert sorted(int(cell.split("_")[-1]) for cell in CELLS) == [64, 256, 512, 1024, 2048]


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_each_mapping_cell_trains_exactly_d_latents(cell: str) -> None:
    config = resolved_config(CELLS[cell])
    args = config["model"]["init_args"]
    d = mapping_settings(config)["latent_dim"]
    assert cell.endswith(f"_{d}") and args["task"] == "regression"
    lit = build_model(config)
    assert sum(p.numel() for p in lit.parameters() if p.requires_grad) == d
    assert lit.parameter_counts()["trainable_params"] == d and lit.parameter_counts()["total_params"] == 12_961


def base_args(path: Path) -> list[str]:
    """The d = 256 config on the single-site CSV (11 inputs)."""
    return [*CELLS["lstm_slvt_airpollution_256"], "--data.path", str(path),
            "--data.layout", "single", "--data.target", "pollution", "--model.net.init_args.input_size", "11",
            "--data.window", "12", "--data.batch_size", "32", "--trainer.max_epochs", "2",
            "--trainer.log_every_n_steps", "1"]


def test_mapping_lstm_end_to_end_and_resume_parity(csv_path: Path, tmp_path: Path) -> None:
    args = base_args(csv_path)  # 600 rows: 408 train windows = 13 steps per epoch
    assert run_train([*args, "--name", "full"], tmp_path) == 0
    assert run_train([*args, "--name", "cut", "--trainer.max_steps", "17"], tmp_path) == 0  # mid epoch 2
    assert torch.load(run_dir(tmp_path, "cut") / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 17
    assert run_train([*args, "--name", "cut", "--ckpt_path", "last"], tmp_path) == 0
    assert read_metrics(run_dir(tmp_path, "cut")) == read_metrics(run_dir(tmp_path, "full"))
    full = read_results(run_dir(tmp_path, "full"))
    assert full["test/mse"] == read_results(run_dir(tmp_path, "cut"))["test/mse"]
    assert full["trainable_params"] == 256 and full["total_params"] == 5_793 and full["global_step"] == 26
    assert 0 < full["test/mse"] < 1


def test_wrong_input_size_and_missing_csv_fail_in_one_line(csv_path: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    args = base_args(csv_path)
    assert run_train([*args, "--model.net.init_args.input_size", "67"], tmp_path) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--model.net.init_args.input_size 11" in err
    assert run_train([*args, "--data.path", str(tmp_path / "none.csv")], tmp_path) == 1
    assert "no CSV file" in capsys.readouterr().err


# ---------------------------------------------------------------- the multi-site PRSA folder (67 inputs)
HOURS = 240
PRSA = ("Aotizhongxin", "Changping", "Dingling", "Dongsi", "Guanyuan", "Gucheng", "Huairou", "Nongzhanguan",
        "Shunyi", "Tiantan", "Wanliu", "Wanshouxigong")


@pytest.fixture(scope="module")
def prsa_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_multisite_folder(tmp_path_factory.mktemp("prsa") / "PRSA", hours=HOURS, seed=3)


def station_path(folder: Path, station: str) -> Path:
    return folder / f"PRSA_Data_{station}_20130301-20170228.csv"


def copy_folder(src: Path, dst: Path, edit=None) -> Path:
    """A copy of the PRSA folder; ``edit(station, header, rows)`` may change each file's header and rows."""
    dst.mkdir()
    for path in src.iterdir():
        with open(path, newline="") as file:
            header, *rows = list(csv.reader(file))
        if edit is not None:
            header, rows = edit(path.name.split("_")[2], header, rows)
        if header is not None:
            with open(dst / path.name, "w", newline="") as file:
                csv.writer(file).writerows([header, *rows])
    return dst


def multisite(path: Path, **kwargs) -> TimeSeriesCSVDataModule:
    return module(path, **{"layout": "multisite", "target": "PM2.5", "time_column": None, **kwargs})


def test_multisite_merge_gives_67_inputs_aligned_by_hour(prsa_folder: Path, tmp_path: Path) -> None:
    # Dongsi's file in reverse order with one hour deleted: the merge must go by (year, month, day, hour)
    gone = 100

    def shuffle_dongsi(station: str, header: list[str], rows: list[list[str]]):
        return header, (rows[:gone] + rows[gone + 1:])[::-1] if station == "Dongsi" else rows

    folder = copy_folder(prsa_folder, tmp_path / "PRSA", shuffle_dongsi)
    dm = multisite(folder, missing="drop", train_fraction=0.5, val_fraction=0.2)
    assert dm.num_features == 67 == 12 * 5 + 5 + 2 and dm.feature_names[:2] == ["PM2.5@Aotizhongxin",
                                                                                 "PM10@Aotizhongxin"]
    assert dm.feature_names[-7:] == ["TEMP", "PRES", "DEWP", "RAIN", "WSPM", "wd_sin", "wd_cos"]
    assert not any("O3" in n for n in dm.feature_names)
    raw = raw_columns(station_path(prsa_folder, "Dongsi"))  # the untouched file: row i is hour i
    pm10 = np.array(raw["PM10"], float)
    train = np.delete(pm10[:HOURS // 2], gone)  # train statistics never see the deleted hour
    col = dm.feature_names.index("PM10@Dongsi")
    ends = dm.train_set.ends.tolist()
    assert not any(t - 5 <= gone <= t for t in ends)  # missing: drop skips windows over the hole
    x, y = dm.train_set.__getitems__([0, len(ends) - 1])
    for row, t in enumerate((ends[0], ends[-1])):
        expected = (pm10[t - 5:t + 1] - train.min()) / (train.max() - train.min())
        np.testing.assert_allclose(x[row, :, col].numpy(), expected, rtol=1e-5, atol=1e-6)
    target = np.array(raw_columns(station_path(prsa_folder, "Aotizhongxin"))["PM2.5"], float)
    lo, hi = target[:HOURS // 2].min(), target[:HOURS // 2].max()
    assert y[1, 0].item() == pytest.approx((target[ends[-1] + 3] - lo) / (hi - lo), abs=1e-6)
    weather = np.mean([np.array(raw_columns(station_path(prsa_folder, s))["TEMP"], float) for s in PRSA], axis=0)
    t = ends[0]
    lo, hi = weather[:HOURS // 2].min(), weather[:HOURS // 2].max()
    np.testing.assert_allclose(x[0, :, -7].numpy(), (weather[t - 5:t + 1] - lo) / (hi - lo), rtol=1e-5, atol=1e-5)


def test_multisite_wind_direction_is_sin_cos_of_the_compass_angle(prsa_folder: Path, tmp_path: Path) -> None:
    hour = 50  # every station reports SW (225 deg) at this hour; Shunyi reports ESE (112.5 deg) one hour later

    def set_wind(station: str, header: list[str], rows: list[list[str]]):
        wd = header.index("wd")
        rows[hour][wd] = "SW"
        if station == "Shunyi":
            rows[hour + 1][wd] = "ESE"
        return header, rows

    folder = copy_folder(prsa_folder, tmp_path / "PRSA", set_wind)
    dm = multisite(folder, weather_station="Shunyi")
    x, _ = dm.train_set[dm.train_set.ends.tolist().index(hour + 1)]  # the window ending at hour + 1
    np.testing.assert_allclose(x[-2:, -2:].numpy(), [[-np.sqrt(0.5), -np.sqrt(0.5)], [np.sin(np.radians(112.5)),
                               np.cos(np.radians(112.5))]], atol=1e-6)  # unscaled
    mean = multisite(folder)  # averaged over stations: at `hour` all agree
    x, _ = mean.train_set[mean.train_set.ends.tolist().index(hour)]
    np.testing.assert_allclose(x[-1, -2:].numpy(), [-np.sqrt(0.5), -np.sqrt(0.5)], atol=1e-6)


def test_multisite_missing_folder_station_or_column_is_one_data_error(prsa_folder: Path, tmp_path: Path) -> None:
    no_huairou = copy_folder(prsa_folder, tmp_path / "a", lambda s, h, r: (None if s == "Huairou" else h, r))
    with pytest.raises(DataError, match="no file PRSA_Data_Huairou_.*csv"):
        multisite(no_huairou)
    no_wspm = copy_folder(prsa_folder, tmp_path / "b", lambda s, h, r: (
        (h[:-2], [row[:-2] for row in r]) if s == "Tiantan" else (h, r)))  # drops WSPM and station
    with pytest.raises(DataError, match="Tiantan.* has no column 'WSPM'"):
        multisite(no_wspm)
    with pytest.raises(DataError, match="no folder .*--layout multisite"):
        multisite(tmp_path / "absent")
    with pytest.raises(ValueError, match="data.pollutants"):
        multisite(prsa_folder, pollutants=["PM2.5", "NOx"])


def test_mapping_config_trains_on_the_multisite_folder(prsa_folder: Path, tmp_path: Path) -> None:
    args = [*CELLS["lstm_slvt_airpollution_64"], "--data.path", str(prsa_folder),
            "--data.window", "12", "--data.batch_size", "32", "--trainer.max_steps", "4",
            "--trainer.log_every_n_steps", "1", "--name", "prsa"]
    assert run_train(args, tmp_path) == 0
    results = read_results(run_dir(tmp_path, "prsa"))
    assert results["trainable_params"] == 64 and results["total_params"] == 12_961 and results["global_step"] == 4
    assert np.isfinite(results["test/mse"])
