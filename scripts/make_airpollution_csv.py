#!/usr/bin/env python
"""Write a SYNTHETIC hourly air-pollution CSV in the layout of the Beijing PM2.5 'pollution.csv'.

    python scripts/make_airpollution_csv.py --out data/pollution_synthetic.csv [--hours 8760] [--seed 0]
                                            [--missing 0.0]

Columns: date, pollution, dew, temp, press, wnd_dir, wnd_spd, snow, rain (hourly from 2010-01-02 00:00).
Not real data: seasonal and daily temperature cycles, dew point and pressure tied to them, a Markov chain of
wind directions (NE, NW, SE, cv), cumulated wind speed / snow / rain hours, and PM2.5 as a log-AR(1) process that
builds up under calm or south-easterly air, is cleared by north-westerly wind and washed out by rain. Used by the
tests and the smoke runs of docs/results/mapping_lstm_resnet18.md; no real-data numbers come from it.
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


def write_airpollution_csv(path: Path, hours: int = 8760, seed: int = 0, missing: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(COLUMNS)
        writer.writerows(synthetic_rows(hours, seed, missing))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/pollution_synthetic.csv"))
    parser.add_argument("--hours", type=int, default=8760)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--missing", type=float, default=0.0, help="share of pollution values written as NA")
    opts = parser.parse_args()
    if opts.hours < 2 or not 0 <= opts.missing < 1:
        raise SystemExit("--hours must be >= 2 and --missing in [0, 1)")
    print(write_airpollution_csv(opts.out, opts.hours, opts.seed, opts.missing))


if __name__ == "__main__":
    main()
