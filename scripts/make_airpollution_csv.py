#!/usr/bin/env python
"""Write SYNTHETIC hourly air-pollution data in the layout of a Beijing data set (not real data).

    python scripts/make_airpollution_csv.py --layout multisite --out data/PRSA_synthetic [--hours 8760] [--seed 0]
                                            [--missing 0.0]
    python scripts/make_airpollution_csv.py --layout single --out data/pollution_synthetic.csv [...]

multisite: a folder of 12 files PRSA_Data_<Station>_20130301-20170228.csv in the exact column format of the UCI
Beijing Multi-Site Air-Quality data (No, year, month, day, hour, PM2.5, PM10, SO2, NO2, CO, O3, TEMP, PRES, DEWP,
RAIN, wd, WSPM, station; hourly from 2013-03-01 00:00; ``--missing`` of the pollutant and wd values are NA). A
regional weather and wind regime (16 compass directions, persistent, northerly wind fast and clearing) is shared
by the stations with small local offsets; each station's PM2.5 is the regional log-AR(1) level times a station
factor plus local noise, and the other pollutants follow it (PM10, CO, SO2, NO2) or, for O3, sunlight and NO2.

single: one CSV like the Kaggle 'pollution.csv'. Columns: date, pollution, dew, temp, press, wnd_dir, wnd_spd, snow, rain (hourly from 2010-01-02 00:00).
Not real data: seasonal and daily temperature cycles, dew point and pressure tied to them, a Markov chain of
wind directions (NE, NW, SE, cv), cumulated wind speed / snow / rain hours, and PM2.5 as a log-AR(1) process that
builds up under calm or south-easterly air, is cleared by north-westerly wind and washed out by rain. Both are used by
the tests and the smoke runs of docs/results/mapping_lstm_resnet18.md; no real-data numbers come from them.
"""
import argparse
import csv
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

COLUMNS = ("date", "pollution", "dew", "temp", "press", "wnd_dir", "wnd_spd", "snow", "rain")
DIRECTIONS = ("NE", "NW", "SE", "cv")
# hourly transition probabilities between wind directions (rows: from, columns: to), persistent regimes
TRANSITIONS = np.array([[0.90, 0.04, 0.03, 0.03], [0.02, 0.93, 0.02, 0.03], [0.02, 0.02, 0.92, 0.04],
                        [0.04, 0.05, 0.05, 0.86]])
DRIFT = {"NE": -0.015, "NW": -0.06, "SE": 0.03, "cv": 0.04}  # hourly change of log PM2.5 per wind regime
WIND_SPEED = {"NE": 3.0, "NW": 6.0, "SE": 2.5, "cv": 0.9}


def synthetic_rows(hours: int, seed: int = 0, missing: float = 0.0) -> list[list[str]]:
    """``hours`` rows of the CSV (strings); a share ``missing`` of the pollution values is 'NA'."""
    rng = np.random.default_rng(seed)
    start = datetime(2010, 1, 2)
    t = np.arange(hours)
    season = np.cos(2 * np.pi * (t / 24 - 196) / 365.25)  # 1 in mid July, -1 in mid January
    day = np.cos(2 * np.pi * (t % 24 - 15) / 24)  # warmest at 15:00
    temp = 12 + 15 * season + 5 * day + np.cumsum(rng.normal(0, 0.3, hours)) * 0.2 + rng.normal(0, 1, hours)
    dew = temp - 8 - 6 * (1 - season) / 2 + rng.normal(0, 2, hours)
    press = 1016 - 12 * season + rng.normal(0, 2, hours)
    state, directions, speed, speeds = 3, [], 0.0, []
    for _ in range(hours):
        new = int(rng.choice(4, p=TRANSITIONS[state]))
        speed = speed + WIND_SPEED[DIRECTIONS[new]] * rng.uniform(0.5, 1.5) if new == state else 0.45
        state = new
        directions.append(DIRECTIONS[state])
        speeds.append(speed)
    precipitating = rng.random(hours) < np.where(season > 0.3, 0.06, 0.02)
    rain_hours, snow_hours = np.zeros(hours), np.zeros(hours)
    for i in np.flatnonzero(precipitating):
        target = snow_hours if temp[i] < 0 else rain_hours
        target[i] = (target[i - 1] if i and target[i - 1] else 0) + 1
    log_pm, pm = np.log(70.0), np.empty(hours)
    for i in range(hours):  # humid air (dew point close to temperature) holds particles
        drift = DRIFT[directions[i]] + 0.004 * (dew[i] - temp[i] + 8) - 0.15 * (rain_hours[i] > 0)
        log_pm = log_pm + drift + 0.04 * (np.log(70.0) - log_pm) + rng.normal(0, 0.1)
        log_pm = float(np.clip(log_pm, np.log(3.0), np.log(900.0)))
        pm[i] = np.exp(log_pm)
    rows = []
    for i in range(hours):
        value = "NA" if rng.random() < missing else f"{pm[i]:.1f}"
        rows.append([(start + timedelta(hours=i)).strftime("%Y-%m-%d %H:%M:%S"), value, f"{dew[i]:.0f}",
                     f"{temp[i]:.1f}", f"{press[i]:.1f}", directions[i], f"{speeds[i]:.2f}", f"{snow_hours[i]:.0f}",
                     f"{rain_hours[i]:.0f}"])
    return rows


STATIONS = ("Aotizhongxin", "Changping", "Dingling", "Dongsi", "Guanyuan", "Gucheng", "Huairou", "Nongzhanguan",
            "Shunyi", "Tiantan", "Wanliu", "Wanshouxigong")
PRSA_COLUMNS = ("No", "year", "month", "day", "hour", "PM2.5", "PM10", "SO2", "NO2", "CO", "O3", "TEMP", "PRES",
                "DEWP", "RAIN", "wd", "WSPM", "station")
COMPASS = ("N", "NNE", "NE", "ENE", "E", "ESE", "SE", "SSE", "S", "SSW", "SW", "WSW", "W", "WNW", "NW", "NNW")


def regional_weather(hours: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Shared hourly weather from 2013-03-01: temp, pres, dewp, rain (mm), wind index (0 = N .. 15 = NNW), speed."""
    t = np.arange(hours)
    season = np.cos(2 * np.pi * (t / 24 + 59 - 196) / 365.25)  # 2013-03-01 is day 59; 1 in mid July
    day = np.cos(2 * np.pi * (t % 24 - 15) / 24)
    temp = 13 + 15 * season + 5 * day + rng.normal(0, 1.5, hours)
    dewp = temp - 10 - 6 * (1 - season) / 2 + rng.normal(0, 2.5, hours)
    pres = 1012 - 11 * season + rng.normal(0, 2, hours)
    raining = rng.random(hours) < np.where(season > 0.3, 0.07, 0.015)
    rain = np.where(raining, rng.exponential(1.5, hours), 0.0)
    wind, state = np.empty(hours, dtype=int), 15
    for i in range(hours):  # persistent regimes, mostly slow veering, sometimes a new air mass
        u = rng.random()
        state = (state + rng.choice((-1, 1))) % 16 if u < 0.12 else int(rng.integers(16)) if u < 0.16 else state
        wind[i] = state
    northerly = np.cos(wind * np.pi / 8)  # 1 from the north, -1 from the south
    speed = np.clip(1.2 + 1.3 * np.maximum(northerly, 0) + rng.gamma(2, 0.5, hours), 0, 12)
    return {"temp": temp, "dewp": dewp, "pres": pres, "rain": rain, "wind": wind, "speed": speed,
            "northerly": northerly, "season": season, "day": day}


def regional_log_pm(w: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """log PM2.5: builds up under weak southerly humid air, cleared by northerly wind and rain."""
    out, level, mean = np.empty(len(w["temp"])), np.log(60.0), np.log(60.0)
    drift = (-0.07 * w["northerly"] * w["speed"] / 3 + 0.004 * (w["dewp"] - w["temp"] + 10) - 0.1 * (w["rain"] > 0)
             + 0.02)
    for i, d in enumerate(drift):
        level = float(np.clip(level + d + 0.03 * (mean - level) + rng.normal(0, 0.08), np.log(3.0), np.log(900.0)))
        out[i] = level
    return out


def station_rows(station: int, w: dict[str, np.ndarray], log_pm: np.ndarray, rng: np.random.Generator,
                 missing: float) -> list[list[str]]:
    hours = len(log_pm)
    local = lambda scale: rng.normal(0, scale, hours)  # noqa: E731
    factor = rng.normal(0, 0.15)  # urban stations dirtier, suburban cleaner
    pm25 = np.exp(log_pm + factor + np.cumsum(local(0.02)) * 0.1 + local(0.1))
    pm10 = pm25 * rng.uniform(1.1, 1.6) + np.abs(local(15)) + 5 * w["speed"]
    so2 = np.maximum(2, 4 + 20 * (1 - w["season"]) / 2 * pm25 / 60 + local(2))
    no2 = np.maximum(2, 25 + 0.35 * pm25 + 10 * np.cos(2 * np.pi * (np.arange(hours) % 24 - 20) / 24) + local(6))
    co = np.maximum(100, 250 + 12 * pm25 + local(80))
    o3 = np.maximum(1, 30 + 45 * (1 + w["season"]) / 2 * np.maximum(w["day"], 0) * 2 - 0.4 * no2 + local(8))
    temp, pres = w["temp"] + rng.normal(0, 0.8) + local(0.4), w["pres"] + rng.normal(0, 1.5) + local(0.3)
    dewp, rain = w["dewp"] + local(0.5), np.round(w["rain"] * rng.uniform(0.6, 1.4, hours), 1)
    wind = (w["wind"] + np.where(rng.random(hours) < 0.2, rng.choice((-1, 1), hours), 0)) % 16
    speed = np.clip(w["speed"] * rng.uniform(0.7, 1.2) + local(0.3), 0, None)
    start, rows = datetime(2013, 3, 1), []
    na = lambda text: "NA" if rng.random() < missing else text  # noqa: E731
    for i in range(hours):
        time = start + timedelta(hours=i)
        rows.append([str(i + 1), str(time.year), str(time.month), str(time.day), str(time.hour),
                     *(na(f"{v:.1f}") for v in (round(pm25[i]), round(pm10[i]), round(so2[i]), round(no2[i]),
                                                round(co[i], -2), round(o3[i]))),
                     f"{temp[i]:.1f}", f"{pres[i]:.1f}", f"{dewp[i]:.1f}", f"{rain[i]:.1f}", na(COMPASS[wind[i]]),
                     f"{speed[i]:.1f}", STATIONS[station]])
    return rows


def write_multisite_folder(folder: Path, hours: int = 8760, seed: int = 0, missing: float = 0.0) -> Path:
    """The 12 PRSA station files (same hours in each) in ``folder``."""
    rng = np.random.default_rng(seed)
    weather = regional_weather(hours, rng)
    log_pm = regional_log_pm(weather, rng)
    folder.mkdir(parents=True, exist_ok=True)
    for i, station in enumerate(STATIONS):
        with open(folder / f"PRSA_Data_{station}_20130301-20170228.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(PRSA_COLUMNS)
            writer.writerows(station_rows(i, weather, log_pm, rng, missing))
    return folder


def write_airpollution_csv(path: Path, hours: int = 8760, seed: int = 0, missing: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(COLUMNS)
        writer.writerows(synthetic_rows(hours, seed, missing))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layout", choices=("multisite", "single"), default="multisite")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder (multisite; default data/PRSA_synthetic) or CSV file (single; default "
                             "data/pollution_synthetic.csv)")
    parser.add_argument("--hours", type=int, default=8760)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--missing", type=float, default=0.0, help="share of pollution (and wd) values written as NA")
    opts = parser.parse_args()
    if opts.hours < 2 or not 0 <= opts.missing < 1:
        raise SystemExit("--hours must be >= 2 and --missing in [0, 1)")
    if opts.layout == "multisite":
        print(write_multisite_folder(opts.out or Path("data/PRSA_synthetic"), opts.hours, opts.seed, opts.missing))
    else:
        print(write_airpollution_csv(opts.out or Path("data/pollution_synthetic.csv"), opts.hours, opts.seed,
                                     opts.missing))


if __name__ == "__main__":
    main()
