"""sweep.py: grid x seeds into tables, resume after SIGKILL, the lock, and bad grid files."""
import csv
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import sweep
from tests.conftest import FMNIST_SLICE, ROOT

EXTRA = ["--", "--data.root", str(FMNIST_SLICE), "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches",
         "1", "--wandb", "false"]
GRID = {"name": "tiny", "cells": {"short": ["--config", "configs/default.yaml", "--trainer.max_steps", "3"],
                                  "long": ["--config", "configs/default.yaml", "--trainer.max_steps", "5"]},
        "metrics": ["test/acc", "global_step"], "paper": {"short": {"test/acc": 0.5}}}


def write_grid(path: Path, grid: dict) -> Path:
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def sweep_cmd(grid: Path, out: Path, *flags: str) -> list[str]:
    return [sys.executable, str(ROOT / "sweep.py"), str(grid), "--out", str(out), *flags, *EXTRA]


def run_sweep(grid: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(sweep_cmd(grid, out, *flags), cwd=ROOT, capture_output=True, text=True, timeout=600)


def read_table(out: Path) -> list[dict[str, str]]:
    with open(out / "table.csv", newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny grid, 2 cells x 2 seeds, run uninterrupted with --jobs 2."""
    base = tmp_path_factory.mktemp("sweep")
    grid = write_grid(base / "grid.yaml", GRID)
    done = run_sweep(grid, base / "out", "--seeds", "0", "1", "--jobs", "2")
    assert done.returncode == 0, done.stderr
    return grid, base / "out"


def test_table_is_mean_and_std_of_the_runs(finished: tuple[Path, Path]) -> None:
    _, out = finished
    rows = {row["cell"]: row for row in read_table(out)}
    assert set(rows) == {"short", "long"}
    for cell, steps in (("short", 3), ("long", 5)):
        results = [json.loads(p.read_text()) for p in sorted((out / cell).glob("seed_*/version_*/results.json"))]
        assert len(results) == 2 and {r["global_step"] for r in results} == {steps}
        accs = [r["test/acc"] for r in results]
        assert int(rows[cell]["n"]) == 2
        assert float(rows[cell]["test/acc_mean"]) == pytest.approx(statistics.fmean(accs))
        assert float(rows[cell]["test/acc_std"]) == pytest.approx(statistics.stdev(accs))
    assert rows["short"]["paper_test/acc"] == "0.5" and rows["long"]["paper_test/acc"] == ""
    table_md = (out / "table.md").read_text()
    assert "python sweep.py" in table_md and "| `short` | 2 |" in table_md
    header = next(line for line in table_md.splitlines() if line.startswith("| cell"))
    assert "paper test/acc" in header and "paper global_step" not in header  # only what the paper gives


def test_reference_labels_the_columns_of_numbers_that_are_not_the_papers(finished: tuple[Path, Path],
                                                                          tmp_path: Path) -> None:
    _, out = finished
    shutil.copytree(out, tmp_path / "out")
    grid = write_grid(tmp_path / "grid.yaml", {**GRID, "reference": "third party"})
    assert run_sweep(grid, tmp_path / "out", "--report").returncode == 0
    header = next(line for line in (tmp_path / "out" / "table.md").read_text().splitlines() if line.startswith("| cell"))
    assert header.endswith("| third party test/acc |") and "paper" not in header


def test_cells_runs_a_subset_and_the_table_names_every_command(finished: tuple[Path, Path], tmp_path: Path) -> None:
    grid, out = finished
    shutil.copytree(out, tmp_path / "out")
    done = run_sweep(grid, tmp_path / "out", "--seeds", "2", "--cells", "sh*")
    assert done.returncode == 0, done.stderr
    assert "tiny: 0 of 1 runs finished, 1 to run" in done.stdout
    rows = {row["cell"]: row for row in read_table(tmp_path / "out")}
    assert (rows["short"]["n"], rows["long"]["n"]) == ("3", "2")
    commands = (tmp_path / "out" / "command.txt").read_text().splitlines()
    assert len(commands) == 2 and "--cells 'sh*'" in commands[1] and "--cells" not in commands[0]
    table_md = (tmp_path / "out" / "table.md").read_text()
    assert all(f"    {c}" in table_md for c in commands)
    bad = run_sweep(grid, tmp_path / "out", "--cells", "nope*")
    assert bad.returncode == 1 and bad.stderr.startswith("error: --cells 'nope*' matches no cell of tiny")


def test_cells_checks_the_extra_args_against_the_selected_cells_only(tmp_path: Path) -> None:
    mixed = {"name": "mixed", "metrics": ["trainable_params"], "cells": {
        "plain": ["--config", "configs/default.yaml", "--trainer.max_steps", "2"],
        "mapped": ["--config", "configs/mapping/cnn2_fmnist.yaml", "--trainer.max_steps", "2"]}}
    grid = write_grid(tmp_path / "grid.yaml", mixed)
    latent = ["--model.mapping.latent_dim", "64"]  # a mapping flag: the plain CNN2 rejects it
    refused = subprocess.run([*sweep_cmd(grid, tmp_path / "out", "--cells", "plain"), *latent], cwd=ROOT,
                             capture_output=True, text=True, timeout=600)
    assert refused.returncode == 1 and refused.stderr.startswith("error: cell 'plain': train.py rejects")
    assert not list((tmp_path / "out").glob("*/seed_*"))  # nothing ran
    done = subprocess.run([*sweep_cmd(grid, tmp_path / "out", "--cells", "mapped"), *latent], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert {row["cell"]: row["n"] for row in read_table(tmp_path / "out")} == {"plain": "0", "mapped": "1"}
    assert float(read_table(tmp_path / "out")[1]["trainable_params_mean"]) == 64


def test_rerun_skips_finished_runs_and_report_rebuilds(finished: tuple[Path, Path]) -> None:
    grid, out = finished
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/seed_*/version_*/results.json")}
    again = run_sweep(grid, out, "--seeds", "0", "1", "--jobs", "2")
    assert again.returncode == 0 and "4 of 4 runs finished, 0 to run" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed_*/version_*/results.json")} == before
    table = read_table(out)
    (out / "table.csv").unlink()
    report = run_sweep(grid, out, "--report")
    assert report.returncode == 0 and read_table(out) == table


def test_sigkill_then_rerun_gives_the_same_table(finished: tuple[Path, Path], tmp_path: Path) -> None:
    grid, reference = finished
    out = tmp_path / "out"
    proc = subprocess.Popen(sweep_cmd(grid, out, "--seeds", "0", "1", "--jobs", "2"), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not any(out.glob("*/seed_*/version_*/results.json")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {p: p.stat().st_mtime_ns for p in out.glob("*/seed_*/version_*/results.json")}
    assert len(first) >= 1
    time.sleep(1.0)  # the workers die with the sweep (PR_SET_PDEATHSIG)
    rerun = run_sweep(grid, out, "--seeds", "0", "1", "--jobs", "2")
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(first)} of 4 runs finished" in rerun.stdout
    assert all(p.stat().st_mtime_ns == t for p, t in first.items())
    assert read_table(out) == read_table(reference)


def test_axes_expand_into_cells(tmp_path: Path) -> None:
    grid = sweep.load_grid(write_grid(tmp_path / "g.yaml", {
        **GRID, "axes": {"model.init_args.optimizer.init_args.lr": [0.1, 0.01]}}))
    assert list(grid.cells) == ["short,lr=0.1", "short,lr=0.01", "long,lr=0.1", "long,lr=0.01"]
    assert grid.cells["long,lr=0.01"][-2:] == ["--model.init_args.optimizer.init_args.lr", "0.01"]


def test_wandb_sweep_yaml(tmp_path: Path) -> None:
    done = run_sweep(write_grid(tmp_path / "g.yaml", GRID), tmp_path / "out", "--wandb-sweep", "--seeds", "0", "1")
    docs = list(yaml.safe_load_all(done.stdout))
    assert done.returncode == 0 and [d["name"] for d in docs] == ["tiny/short", "tiny/long"]
    assert docs[0]["program"] == "train.py" and docs[0]["method"] == "grid"
    assert docs[0]["parameters"] == {"seed": {"values": [0, 1]}} and "${args}" in docs[0]["command"]
    assert not (tmp_path / "out").exists()


def test_second_sweep_on_the_same_folder_refuses(finished: tuple[Path, Path]) -> None:
    grid, out = finished
    import fcntl

    with open(out / ".sweep.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        refused = run_sweep(grid, out, "--seeds", "0", "1")
    assert refused.returncode == 1 and refused.stderr.startswith("error: another sweep is running")


BAD_GRIDS = {
    "unknown key": ({**GRID, "cels": {}}, "unknown key 'cels'"),
    "empty axis": ({**GRID, "axes": {"model.init_args.optimizer.init_args.lr": []}}, "has no values"),
    "rejected args": ({**GRID, "paper": {}, "cells": {"x": ["--config", "configs/default.yaml", "--model.no_such", "1"]}},
                      "cell 'x': train.py rejects"),
    "paper of a missing cell": ({**GRID, "paper": {"nope": {"test/acc": 1}}}, "'paper' names cell 'nope'"),
    "empty reference label": ({**GRID, "reference": " "}, "'reference' is a label"),
    "no metrics": ({**GRID, "metrics": []}, "'metrics' is missing"),
}


@pytest.mark.parametrize("case", sorted(BAD_GRIDS))
def test_bad_grid_files(case: str, tmp_path: Path) -> None:
    grid, message = BAD_GRIDS[case]
    done = run_sweep(write_grid(tmp_path / "g.yaml", grid), tmp_path / "out")
    assert done.returncode == 1 and done.stderr.startswith("error: ") and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not any((tmp_path / "out").glob("*/seed_*"))


def test_duplicate_cells_jobs_zero_and_foreign_folder(finished: tuple[Path, Path], tmp_path: Path) -> None:
    dup = tmp_path / "dup.yaml"
    dup.write_text("name: d\nmetrics: [test/acc]\ncells:\n  a: [--config, configs/default.yaml]\n"
                   "  a: [--config, configs/default.yaml]\n")
    done = run_sweep(dup, tmp_path / "out")
    assert done.returncode == 1 and "duplicate key 'a'" in done.stderr
    grid, out = finished
    done = run_sweep(grid, tmp_path / "out", "--jobs", "0")
    assert done.returncode == 1 and "--jobs must be at least 1" in done.stderr
    done = run_sweep(grid, tmp_path / "out", "--threads", "0")
    assert done.returncode == 1 and "--threads must be at least 1" in done.stderr
    other = write_grid(tmp_path / "other.yaml", {**GRID, "name": "other"})
    before = sorted(p for p in out.rglob("*") if p.is_file() and p.name != ".sweep.lock")
    done = run_sweep(other, out)
    assert done.returncode == 1 and "holds the runs of grid 'tiny'" in done.stderr
    assert sorted(p for p in out.rglob("*") if p.is_file() and p.name != ".sweep.lock") == before


def test_failing_cell_does_not_stop_the_others(tmp_path: Path) -> None:
    grid = write_grid(tmp_path / "g.yaml", {**GRID, "cells": {
        **GRID["cells"], "broken": ["--config", "configs/default.yaml", "--data.batch_size", "0"]}})
    done = run_sweep(grid, tmp_path / "out", "--jobs", "2")
    assert done.returncode == 1 and "broken seed 0: FAILED" in done.stdout
    rows = {row["cell"]: row for row in read_table(tmp_path / "out")}
    assert rows["short"]["n"] == "1" and rows["long"]["n"] == "1" and rows["broken"]["n"] == "0"
    assert "Failed runs:" in (tmp_path / "out" / "table.md").read_text()


def test_grid_files_shipped_in_configs_parse() -> None:
    for path in sorted(ROOT.glob("configs/*/grids/*.yaml")):
        grid = sweep.load_grid(path)
        assert grid.cells and grid.metrics, path
        sweep.check_cells(grid, [])
    assert os.environ.get("OVERPARAM_RUN_DIR") is None


def test_seed_placeholder_follows_the_run_seed(tmp_path: Path) -> None:
    grid = sweep.load_grid(write_grid(tmp_path / "g.yaml", {
        **GRID, "paper": {}, "cells": {"c": ["--config", "configs/default.yaml", "--data.init_args.split_seed", "{seed}"]}}))
    args = sweep.run_args(grid, "c", 7, tmp_path, [], wandb=False)
    assert args[args.index("--data.init_args.split_seed") + 1] == "7" and args[args.index("--seed") + 1] == "7"
