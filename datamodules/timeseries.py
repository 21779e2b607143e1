"""Windows of a CSV time series for sequence regression (the air-pollution LSTM of Mapping Networks Table 7).

Rows are time steps in file order. A sample is the window of ``window`` rows ending at row t (inputs, shape
(window, features)) and the target column at row t + ``horizon`` (shape (1,)). The rows are cut chronologically
into train | val | test blocks and a window belongs to a split only if every row it touches (inputs and target)
lies in that block, so no window straddles a boundary.

Two on-disk layouts (``layout``): ``single``, one CSV whose columns are the features (Beijing PM2.5
``pollution.csv``), and ``multisite``, the folder of the UCI Beijing Multi-Site Air-Quality data (12
``PRSA_Data_<Station>_20130301-20170228.csv`` files) merged on (year, month, day, hour) into one wide series:
per-station pollutants, weather, and the wind direction as sin/cos of its compass angle (12 x 5 + 5 + 2 = 67).
"""
import csv
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.base import DataError, ShardedDataModule

MISSING = {"", "na", "nan", "null", "none"}
PRSA_STATIONS = ("Aotizhongxin", "Changping", "Dingling", "Dongsi", "Guanyuan", "Gucheng", "Huairou",
                 "Nongzhanguan", "Shunyi", "Tiantan", "Wanliu", "Wanshouxigong")
PRSA_POLLUTANTS = ("PM2.5", "PM10", "SO2", "NO2", "CO", "O3")
# O3 is left out by default: 12 x 5 + 5 + 2 = 67 (the paper's LSTM(67, 32)) needs five of the six pollutants, and
# O3 is the one not emitted but formed photochemically (sunlight, anti-correlated with NO2), the least direct
# predictor of PM2.5; the paper does not say which five
DEFAULT_POLLUTANTS = ("PM2.5", "PM10", "SO2", "NO2", "CO")
PRSA_WEATHER = ("TEMP", "PRES", "DEWP", "RAIN", "WSPM")
COMPASS = ("N", "NNE", "NE", "ENE", "E", "ESE", "SE", "SSE", "S", "SSW", "SW", "WSW", "W", "WNW", "NW", "NNW")
TIME_KEY = ("year", "month", "day", "hour")


class Windows(Dataset):
    """Windows of ``series`` ending at ``ends``; the target is ``target[end + horizon]`` (built per batch)."""

    def __init__(self, series: Tensor, target: Tensor, ends: Tensor, window: int, horizon: int) -> None:
        self.series, self.target, self.ends = series, target, ends
        self.offsets = torch.arange(1 - window, 1)
        self.horizon = horizon

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x, y = self.__getitems__([i])
        return x[0], y[0]

    def __getitems__(self, idx: list[int]) -> tuple[Tensor, Tensor]:
        ends = self.ends[torch.as_tensor(idx)]
        return self.series[ends[:, None] + self.offsets], self.target[ends + self.horizon, None]


def read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV file (stripped strings); problems raise :class:`DataError` naming the file."""
    if not path.is_file():
        raise DataError(f"no CSV file {path}: set --data.path to the time-series CSV (e.g. the Beijing PM2.5 "
                        f"'pollution.csv' with columns date, pollution, dew, temp, press, wnd_dir, wnd_spd, snow, "
                        f"rain), or write a synthetic one with scripts/make_airpollution_csv.py")
    try:
        with open(path, newline="") as file:
            rows = [[cell.strip() for cell in row] for row in csv.reader(file) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"cannot read {path}: {type(err).__name__}: {err}") from err
    if len(rows) < 2:
        raise DataError(f"{path} has no data rows")
    header, body = rows[0], rows[1:]
    bad = next((i for i, row in enumerate(body) if len(row) != len(header)), None)
    if bad is not None:
        raise DataError(f"{path}: data row {bad + 1} has {len(body[bad])} fields, the header has {len(header)}")
    return header, body


def parse_numeric(values: list[str]) -> Optional[np.ndarray]:
    """float64 column with NaN for missing markers, or None when some value is not a number (categorical)."""
    out = np.empty(len(values))
    for i, v in enumerate(values):
        if v.lower() in MISSING:
            out[i] = np.nan
            continue
        try:
            out[i] = float(v)
        except ValueError:
            return None
    return out


def forward_fill(x: np.ndarray) -> np.ndarray:
    """Each NaN takes the last finite value above it in its column (leading NaNs stay NaN)."""
    rows = np.arange(len(x))[:, None]
    last = np.maximum.accumulate(np.where(np.isnan(x), -1, rows), axis=0)
    return np.where(last >= 0, x[np.maximum(last, 0), np.arange(x.shape[1])], np.nan)


def station_file(folder: Path, station: str) -> Path:
    """The one ``PRSA_Data_<station>_*.csv`` in ``folder`` (any date range)."""
    matches = sorted(folder.glob(f"PRSA_Data_{station}_*.csv"))
    if len(matches) != 1:
        found = "no file" if not matches else f"{len(matches)} files"
        raise DataError(f"{folder} has {found} PRSA_Data_{station}_*.csv for station {station!r} (expected one, e.g. "
                        f"PRSA_Data_{station}_20130301-20170228.csv); set --data.stations to the stations present")
    return matches[0]


def read_station(path: Path, columns: list[str]) -> tuple[np.ndarray, dict[str, list[str]]]:
    """Hour keys (yyyymmddhh, unique) and the named raw columns of one PRSA station file."""
    header, body = read_table(path)
    absent = [c for c in (*TIME_KEY, *columns) if c not in header]
    if absent:
        raise DataError(f"{path} has no column {', '.join(map(repr, absent))} (its columns: {', '.join(header)})")
    cols = {c: [row[header.index(c)] for row in body] for c in (*TIME_KEY, *columns)}
    try:
        year, month, day, hour = (np.array([float(v) for v in cols[c]]).astype(np.int64) for c in TIME_KEY)
    except ValueError as err:
        raise DataError(f"{path}: year/month/day/hour must be numbers ({err})") from err
    keys = ((year * 100 + month) * 100 + day) * 100 + hour
    if len(np.unique(keys)) != len(keys):
        raise DataError(f"{path} repeats an hour (year, month, day, hour): cannot merge it with the other stations")
    return keys, cols


def wind_angle(labels: list[str], path: Path) -> np.ndarray:
    """Compass labels (N, NNE, ..., NNW) as angles in radians clockwise from north; NaN where missing."""
    index = {c: i for i, c in enumerate(COMPASS)}
    bad = next((v for v in labels if v not in index and v.lower() not in MISSING), None)
    if bad is not None:
        raise DataError(f"{path}: wind direction {bad!r} is not one of the 16 compass labels {', '.join(COMPASS)}")
    return np.array([index[v] * np.pi / 8 if v in index else np.nan for v in labels])


def mean_present(stack: np.ndarray) -> np.ndarray:
    """Mean over axis 0 of the non-NaN values (NaN where all are missing)."""
    count = (~np.isnan(stack)).sum(0)
    return np.where(count > 0, np.nansum(stack, 0) / np.maximum(count, 1), np.nan)


class TimeSeriesCSVDataModule(ShardedDataModule):
    """Sliding windows over a CSV time series, split by time, scaled with statistics of the train block only.

    Features: numeric columns are scaled (``scaling``: ``minmax`` to [0, 1] or ``standard``, fitted on the train
    rows); categorical columns (any non-numeric value, or listed in ``categorical``) are one-hot encoded with the
    categories seen in the train rows (sorted; unseen later values give all zeros) and left unscaled. With
    ``target_as_feature`` the target's own past values (up to t) are an input column too. The target is scaled with
    its own train statistics, so losses and MSE are in scaled units; ``unscale_target`` maps predictions back.

    Multi-site layout (``layout: multisite``; ``features``, ``categorical``, ``time_column`` and
    ``target_as_feature`` are single-layout flags): ``path`` is the folder of PRSA station files, merged on their
    hours (the sorted union; an hour absent from one file is missing there). Inputs: ``pollutants`` per station
    (named ``<pollutant>@<station>``, station-major), the ``PRSA_WEATHER`` columns and ``wd_sin``, ``wd_cos`` (the
    compass angle clockwise from north; unscaled). Weather and wind come from ``weather_station`` or, when null,
    are the mean over the stations present at that hour (wind: the mean of the sin and cos). The target is
    ``target`` (a pollutant) at ``target_station``; its past is an input already when it is among ``pollutants``.

    Args:
        path: the CSV file (header row; rows in chronological order), or the PRSA folder (multisite).
        layout: ``single`` (one CSV) or ``multisite`` (the PRSA folder).
        target: the column to predict.
        features: input columns (default: every column except ``time_column`` and the target).
        categorical: columns to one-hot encode even if numeric (non-numeric columns always are).
        time_column: a timestamp column to leave out of the features (``null`` if the CSV has none).
        target_as_feature: include the target's past values as an input column.
        window: rows per input window (the window ends at t).
        horizon: predict the target at t + horizon (>= 1).
        train_fraction, val_fraction: shares of the rows in the train and val blocks; test gets the rest.
        scaling: ``minmax`` or ``standard`` (train statistics; constant columns are only shifted).
        missing: ``ffill`` (inputs carry the last value forward; windows touching a leading gap are dropped) or
            ``drop`` (drop every window whose inputs touch a missing value). Either way a window whose target is
            missing is dropped: labels are never filled in.
        stations, pollutants, weather_station, target_station: the multi-site flags above (defaults: the 12
            stations; PM2.5, PM10, SO2, NO2, CO; mean weather; Aotizhongxin).
        batch_size, eval_batch_size, split_seed, drop_last: as in every datamodule (split_seed seeds the per-epoch
            shuffling of the train windows).
    """

    def __init__(self, path: str = "data/pollution.csv", target: str = "pollution",
                 features: Optional[list[str]] = None, categorical: Optional[list[str]] = None,
                 time_column: Optional[str] = "date", target_as_feature: bool = True, window: int = 24,
                 horizon: int = 1, train_fraction: float = 0.7, val_fraction: float = 0.1,
                 scaling: Literal["minmax", "standard"] = "minmax", missing: Literal["ffill", "drop"] = "ffill",
                 batch_size: int = 64, eval_batch_size: Optional[int] = None, split_seed: int = 0,
                 drop_last: bool = False, layout: Literal["single", "multisite"] = "single",
                 stations: Optional[list[str]] = None,
                 pollutants: Optional[list[str]] = None,
                 weather_station: Optional[str] = None, target_station: str = "Aotizhongxin") -> None:
        super().__init__()
        if layout not in ("single", "multisite"):
            raise ValueError(f"data.layout must be single|multisite, got {layout!r}")
        if layout == "multisite":
            self.check_multisite(target, features, categorical, list(stations or PRSA_STATIONS),
                                 list(pollutants or DEFAULT_POLLUTANTS),
                                 weather_station, target_station)
        if window < 1 or horizon < 1:
            raise ValueError(f"data.window and data.horizon must be >= 1, got {window}, {horizon}")
        if not (0 < train_fraction < 1 and 0 < val_fraction < 1 and train_fraction + val_fraction < 1):
            raise ValueError(f"data.train_fraction and data.val_fraction must be positive with a sum below 1 (test "
                             f"gets the rest), got {train_fraction}, {val_fraction}")
        if scaling not in ("minmax", "standard") or missing not in ("ffill", "drop"):
            raise ValueError(f"data.scaling must be minmax|standard and data.missing ffill|drop, got {scaling!r}, "
                             f"{missing!r}")
        if batch_size <= 0 or (eval_batch_size is not None and eval_batch_size <= 0):
            raise ValueError(f"data.batch_size and eval_batch_size must be positive, got {batch_size}, "
                             f"{eval_batch_size}")
        self.save_hyperparameters()
        self.path = Path(path).expanduser()
        self.feature_names: list[str] = []
        self.numeric = np.zeros(0, dtype=bool)  # per feature: scaled numeric column (not one-hot)
        self.boundaries: tuple[int, int] = (0, 0)  # first val row, first test row
        self.stats: dict[str, np.ndarray] = {}  # shift/scale of the numeric inputs and of the target

    @staticmethod
    def check_multisite(target: str, features: Optional[list[str]], categorical: Optional[list[str]],
                        stations: list[str], pollutants: list[str], weather_station: Optional[str],
                        target_station: str) -> None:
        if features is not None or categorical is not None:
            raise ValueError("data.features / data.categorical are for layout single; with layout multisite choose "
                             "the inputs with data.pollutants, data.stations, data.weather_station")
        wrong = [p for p in [target, *pollutants] if p not in PRSA_POLLUTANTS]
        if wrong or not pollutants or not stations or len(set(stations)) != len(stations):
            raise ValueError(f"with layout multisite, data.target and data.pollutants must be among "
                             f"{', '.join(PRSA_POLLUTANTS)} (got {wrong or pollutants}) and data.stations non-empty "
                             f"and distinct (got {stations})")
        outside = [s for s in (weather_station, target_station) if s is not None and s not in stations]
        if outside:
            raise ValueError(f"data.weather_station / data.target_station {outside} not in data.stations {stations}")

    @property
    def num_features(self) -> int:
        self.setup()
        return len(self.feature_names)

    def prepare_data(self) -> None:
        if self.hparams.layout == "multisite":
            self.multisite_folder()
        else:
            read_table(self.path)

    # ----------------------------------------------------------------- columns
    def columns(self, header: list[str]) -> list[str]:
        h = self.hparams
        named = [h.target, *(h.features or []), *(h.categorical or [])]
        if h.features is None and h.time_column:  # only then does the time column decide what the inputs are
            named.append(h.time_column)
        absent = [c for c in dict.fromkeys(named) if c not in header]
        if absent:
            raise DataError(f"{self.path} has no column {', '.join(map(repr, absent))} (its columns: "
                            f"{', '.join(header)}); set --data.target / --data.features / --data.time_column")
        inputs = h.features if h.features is not None else [c for c in header if c not in (h.target, h.time_column)]
        inputs = [c for c in inputs if c != h.target]
        return inputs + [h.target] if h.target_as_feature else inputs

    def encode(self, header: list[str], body: list[list[str]], n_train: int) -> tuple[np.ndarray, np.ndarray]:
        """Input matrix (rows, features) with NaN for missing values, and the raw target (rows,)."""
        h = self.hparams
        blocks, names, numeric = [], [], []
        for name in self.columns(header):
            raw = [row[header.index(name)] for row in body]
            values = None if name in (h.categorical or []) else parse_numeric(raw)
            if values is not None:
                blocks.append(values[:, None])
                names.append(name)
                numeric.append(True)
                continue
            categories = sorted({v for v in raw[:n_train] if v.lower() not in MISSING})
            if not categories:
                raise DataError(f"{self.path}: column {name!r} has no values in the train rows")
            onehot = np.array([[float(v == c) for c in categories] for v in raw])
            onehot[[v.lower() in MISSING for v in raw]] = np.nan
            blocks.append(onehot)
            names += [f"{name}={c}" for c in categories]
            numeric += [False] * len(categories)
        target = parse_numeric([row[header.index(h.target)] for row in body])
        if target is None:
            raise DataError(f"{self.path}: target column {h.target!r} is not numeric")
        self.feature_names, self.numeric = names, np.array(numeric)
        return np.concatenate(blocks, axis=1), target

    def multisite_folder(self) -> list[Path]:
        """The station files, one per station (a missing folder or file raises :class:`DataError`)."""
        if not self.path.is_dir():
            raise DataError(f"no folder {self.path}: set --data.path to the folder of the UCI Beijing Multi-Site "
                            f"Air-Quality files (PRSA_Data_<Station>_20130301-20170228.csv, 12 stations), or write "
                            f"a synthetic one with scripts/make_airpollution_csv.py --layout multisite")
        return [station_file(self.path, s) for s in self.hparams.stations or PRSA_STATIONS]

    def encode_multisite(self) -> tuple[np.ndarray, np.ndarray]:
        """The merged wide input matrix (hours, features) with NaN for missing values, and the raw target."""
        h = self.hparams
        stations = list(h.stations or PRSA_STATIONS)
        pollutants = list(h.pollutants or DEFAULT_POLLUTANTS)
        needed = list(dict.fromkeys([*pollutants, h.target, *PRSA_WEATHER, "wd"]))
        tables = {s: (path, *read_station(path, needed)) for s, path in zip(stations, self.multisite_folder())}
        hours = np.unique(np.concatenate([keys for _, keys, _ in tables.values()]))

        def column(station: str, name: str) -> np.ndarray:
            path, keys, cols = tables[station]
            values = wind_angle(cols[name], path) if name == "wd" else parse_numeric(cols[name])
            if values is None:
                raise DataError(f"{path}: column {name!r} is not numeric")
            out = np.full(len(hours), np.nan)
            out[np.searchsorted(hours, keys)] = values
            return out

        # weather and wind: one station's, or the mean over the stations present at that hour
        weather_from = [h.weather_station] if h.weather_station is not None else stations
        shared = lambda name: np.stack([column(s, name) for s in weather_from])  # noqa: E731
        angles = shared("wd")
        blocks = ([column(s, p) for s in stations for p in pollutants] + [mean_present(shared(w)) for w in
                  PRSA_WEATHER] + [mean_present(np.sin(angles)), mean_present(np.cos(angles))])
        self.feature_names = [f"{p}@{s}" for s in stations for p in pollutants] + [*PRSA_WEATHER, "wd_sin", "wd_cos"]
        self.numeric = np.arange(len(blocks)) < len(blocks) - 2  # sin/cos are already in [-1, 1]: not scaled
        return np.stack(blocks, axis=1), column(h.target_station, h.target)

    # ----------------------------------------------------------------- splits
    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is not None:
            return
        h = self.hparams
        if h.layout == "multisite":
            x, y = self.encode_multisite()
            n = len(y)
        else:
            header, body = read_table(self.path)
            n = len(body)
        n_train, n_val = int(n * h.train_fraction), int(n * h.val_fraction)
        self.boundaries = (n_train, n_train + n_val)
        if h.layout == "single":
            x, y = self.encode(header, body, n_train)
        if h.missing == "ffill":  # inputs only: a window is never trained towards a filled-in target
            x = forward_fill(x)
        x, y = self.fit_scaling(x, y, n_train)
        inputs_ok, target_ok = ~np.isnan(x).any(1), ~np.isnan(y)
        series = torch.as_tensor(np.nan_to_num(x), dtype=torch.float32)
        target = torch.as_tensor(np.nan_to_num(y), dtype=torch.float32)
        splits = {}
        for split, (lo, hi) in zip(("train", "val", "test"), ((0, n_train), self.boundaries, (self.boundaries[1], n))):
            ends = self.window_ends(inputs_ok, target_ok, lo, hi)
            if len(ends) == 0:
                raise DataError(f"{self.path}: the {split} block (rows {lo}..{hi - 1}) holds no complete window of "
                                f"{h.window} rows + horizon {h.horizon} without missing values; use more rows or "
                                f"other fractions")
            splits[split] = Windows(series, target, torch.as_tensor(ends), h.window, h.horizon)
        self.train_set, self.val_set, self.test_set = splits["train"], splits["val"], splits["test"]
        self.check_model_input()

    def fit_scaling(self, x: np.ndarray, y: np.ndarray, n_train: int) -> tuple[np.ndarray, np.ndarray]:
        """Scale numeric inputs and the target with statistics of the train rows (NaNs ignored)."""
        def shift_scale(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            if self.hparams.scaling == "minmax":
                lo, hi = np.nanmin(a, axis=0), np.nanmax(a, axis=0)
                scale = hi - lo
            else:
                lo, scale = np.nanmean(a, axis=0), np.nanstd(a, axis=0)
            return lo, np.where(scale > 0, scale, 1.0)  # constant columns are only shifted

        train = x[:n_train]
        if np.isnan(train).all(axis=0).any():
            empty = [self.feature_names[i] for i in np.flatnonzero(np.isnan(train).all(axis=0))]
            raise DataError(f"{self.path}: columns {empty} have no values in the train rows")
        shift, scale = np.zeros(x.shape[1]), np.ones(x.shape[1])
        shift[self.numeric], scale[self.numeric] = shift_scale(train[:, self.numeric])
        t_shift, t_scale = shift_scale(y[:n_train, None])
        self.stats = {"shift": shift, "scale": scale, "target_shift": t_shift, "target_scale": t_scale}
        return (x - shift) / scale, (y - t_shift[0]) / t_scale[0]

    def window_ends(self, inputs_ok: np.ndarray, target_ok: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """Ends t whose rows t - window + 1 .. t + horizon all lie in [lo, hi), with complete inputs in rows
        t - window + 1 .. t and a present target at t + horizon."""
        w, k = self.hparams.window, self.hparams.horizon
        ends = np.arange(lo + w - 1, hi - k)
        if len(ends) == 0:
            return ends
        bad = np.concatenate([[0], np.cumsum(~inputs_ok[lo:hi])])  # bad[i]: incomplete rows in [lo, lo + i)
        complete = bad[ends - lo + 1] - bad[ends - lo + 1 - w] == 0
        return ends[complete & target_ok[ends + k]]

    def unscale_target(self, y: Tensor) -> Tensor:
        """Scaled targets or predictions back in the CSV's units."""
        return y * float(self.stats["target_scale"][0]) + float(self.stats["target_shift"][0])

    def check_model_input(self) -> None:
        """Name the fix when the model's LSTM expects another number of input features than the CSV gives."""
        module = self.trainer.lightning_module if self.trainer is not None else None
        lstm = next((m for m in module.modules() if isinstance(m, torch.nn.LSTM)), None) if module else None
        if lstm is not None and lstm.input_size != len(self.feature_names):
            raise ValueError(f"the model's LSTM takes {lstm.input_size} input features but {self.path.name} gives "
                             f"{len(self.feature_names)} ({', '.join(self.feature_names)}); set "
                             f"--model.net.init_args.input_size {len(self.feature_names)}")

