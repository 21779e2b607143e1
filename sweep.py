#!/usr/bin/env python
"""Runs a grid of train.py experiments x seeds into one table.

    python sweep.py GRID.yaml [--seeds 0 1 2] [--cells PATTERN ...] [--jobs N] [--out DIR] [--report] [--wandb-sweep]
                    [-- train.py args]

GRID.yaml (see configs/*/grids/):

    name: cnn2_fmnist_lr                 # also the W&B group
    description: ...                     # optional
    cells:                               # cell name -> train.py arguments
      adam: [--config, configs/baseline/cnn2_fmnist.yaml]
    axes:                                # optional: every cell runs once per combination, named cell,key=value
      model.init_args.optimizer.init_args.lr: [0.001, 0.003]
    metrics: [test/acc, val/acc]         # results.json keys to tabulate
    paper: {adam: {test/acc: 0.904}}     # optional: the paper's number per cell (expanded or not) and metric
    reference: paper                     # optional: whose numbers `paper` holds (column label; e.g. "third party")

``{seed}`` inside an argument is replaced by the run's seed (``--data.init_args.seed, "{seed}"``), for settings
that should follow the seed besides ``seed_everything``.

Each cell x seed is an ordinary run in ``DIR/<cell>/seed_<s>/version_<k>/`` (its console in ``seed_<s>/console.log``). Rerunning the same command skips
finished runs (results.json), continues unfinished ones from their last.ckpt and starts the rest; ``DIR/table.csv``
and ``DIR/table.md`` hold mean ± std (n) per cell beside the paper's numbers.
"""
import argparse
import contextlib
import csv
import ctypes
import dataclasses
import fcntl
import fnmatch
import io
import itertools
import json
import math
import os
import shlex
import signal
import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Optional

import yaml

GRID_KEYS = {"name", "description", "cells", "axes", "metrics", "paper", "reference"}
# children's progress bars would interleave on one console; a cell may turn them back on
RUN_DEFAULTS = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


class SweepError(Exception):
    """Bad grid file or sweep flag; reported as one line."""


@dataclass
class Grid:
    name: str
    cells: dict[str, list[str]]  # expanded: axes already applied
    metrics: list[str]
    paper: dict[str, dict[str, float]] = field(default_factory=dict)
    reference: str = "paper"  # whose numbers ``paper`` holds, as the table labels them


# ---------------------------------------------------------------------- the grid file
class UniqueKeyLoader(yaml.SafeLoader):
    """YAML loader that refuses a key given twice in one mapping (PyYAML silently keeps the last)."""


def _unique_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode) -> dict:
    keys = [loader.construct_object(k, deep=True) for k, _ in node.value]
    duplicates = sorted({str(k) for k in keys if keys.count(k) > 1})
    if duplicates:
        raise SweepError(f"duplicate key {duplicates[0]!r} (line {node.start_mark.line + 1})")
    return loader.construct_mapping(node, deep=True)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_grid(path: Path) -> Grid:
    """The grid file, checked as a whole and with its axes expanded into cells."""
    if not path.is_file():
        raise SweepError(f"grid file not found: {path}")
    try:
        spec = yaml.load(path.read_text(), Loader=UniqueKeyLoader)
    except SweepError as err:
        raise SweepError(f"{path}: {err}") from err
    except yaml.YAMLError as err:
        raise SweepError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from err
    if not isinstance(spec, dict):
        raise SweepError(f"{path}: a grid file is a mapping with keys {sorted(GRID_KEYS)}")
    unknown = sorted(set(spec) - GRID_KEYS)
    if unknown:
        raise SweepError(f"{path}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(GRID_KEYS))})")
    missing = [k for k in ("name", "cells", "metrics") if not spec.get(k)]
    if missing:
        raise SweepError(f"{path}: '{missing[0]}' is missing or empty")
    name, cells, metrics = str(spec["name"]), spec["cells"], spec["metrics"]
    if not isinstance(cells, dict) or not all(isinstance(a, list) for a in cells.values()):
        raise SweepError(f"{path}: 'cells' maps each cell name to a list of train.py arguments")
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise SweepError(f"{path}: 'metrics' is a list of results.json keys")
    for cell in cells:
        if not str(cell) or any(c in str(cell) for c in "/\\") or str(cell).startswith("."):
            raise SweepError(f"{path}: cell name {cell!r} cannot be a folder name")
    axes = spec.get("axes") or {}
    if not isinstance(axes, dict):
        raise SweepError(f"{path}: 'axes' maps a train.py key (without --) to a list of values")
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{path}: axis {key!r} has no values")
    expanded = expand(cells, axes)
    paper = spec.get("paper") or {}
    if not isinstance(paper, dict) or not all(isinstance(v, dict) for v in paper.values()):
        raise SweepError(f"{path}: 'paper' maps a cell to {{metric: number}}")
    for cell, numbers in paper.items():
        if cell not in cells and cell not in expanded:
            raise SweepError(f"{path}: 'paper' names cell {cell!r}, which the grid does not have")
        for metric in numbers:
            if metric not in metrics:
                raise SweepError(f"{path}: 'paper' gives {metric!r} for {cell!r}, which is not in 'metrics'")
    reference = spec.get("reference", "paper")
    if not isinstance(reference, str) or not reference.strip():
        raise SweepError(f"{path}: 'reference' is a label such as 'paper' or 'third party'")
    return Grid(name, expanded, list(metrics), {str(k): v for k, v in paper.items()}, reference.strip())


def expand(cells: dict[str, list], axes: dict[str, list]) -> dict[str, list[str]]:
    """Every cell once per combination of axis values: ``cell,key=value,...`` with ``--key value`` appended."""
    out: dict[str, list[str]] = {}
    for cell, args in cells.items():
        for combo in itertools.product(*axes.values()):
            name = ",".join([str(cell), *(f"{k.split('.')[-1]}={v}" for k, v in zip(axes, combo))])
            if name in out:
                raise SweepError(f"two axis keys end in the same name: cell {name!r} would run twice")
            out[name] = [str(a) for a in args] + [s for k, v in zip(axes, combo) for s in (f"--{k}", str(v))]
    return out


def check_cell(cell: str, args: list[str]) -> Optional[str]:
    """Why train.py rejects a cell's arguments (parsed as train.py would; nothing is built or run), or None."""
    import train

    with contextlib.redirect_stdout(io.StringIO()):
        try:
            train.run([*RUN_DEFAULTS, *with_seed(args, 0), "--wandb", "false", "--print_config"])
        except SystemExit:
            return None  # --print_config ends the parse successfully
        except train.UsageError as err:
            return f"cell {cell!r}: train.py rejects its arguments: {err}"
    return f"cell {cell!r}: train.py did not stop at --print_config"


def check_cells(grid: Grid, extra: list[str], pool: Optional[Executor] = None) -> None:
    """Parses every cell's arguments as train.py would: in ``pool``'s workers when given, so the sweep process
    itself never imports torch and the workers' start overlaps the checks."""
    cells = list(grid.cells)
    problems = (pool.map if pool else map)(check_cell, cells, [[*grid.cells[c], *extra] for c in cells])
    problem = next((p for p in problems if p), None)
    if problem:
        raise SweepError(problem)


# ---------------------------------------------------------------------- runs
def seed_dir(out: Path, cell: str, seed: int) -> Path:
    return out / cell / f"seed_{seed}"


def finished_results(out: Path, cell: str, seed: int) -> Optional[dict[str, Any]]:
    done = sorted(seed_dir(out, cell, seed).glob("version_*/results.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(done[-1].read_text()) if done else None


def with_seed(args: list[str], seed: int) -> list[str]:
    """``{seed}`` in an argument becomes the run's seed (e.g. a data draw or an init seed that follows it)."""
    return [a.replace("{seed}", str(seed)) for a in args]


def run_args(grid: Grid, cell: str, seed: int, out: Path, extra: list[str], wandb: bool) -> list[str]:
    args = [*RUN_DEFAULTS, *with_seed([*grid.cells[cell], *extra], seed), "--seed", str(seed),
            "--trainer.default_root_dir", str(out / cell), "--name", f"seed_{seed}"]
    if wandb:
        args += ["--wandb_group", grid.name, "--wandb_tags", json.dumps([cell, f"seed_{seed}"])]
    if any(seed_dir(out, cell, seed).glob("version_*/checkpoints/last.ckpt")):
        args += ["--ckpt_path", "last"]
    return args


def _start_worker(threads: int) -> None:
    """Each worker: its share of the cores, and death with the sweep (no orphan keeps writing a run folder)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    import train  # imported once per worker, not once per run

    train.quiet_console()


@contextlib.contextmanager
def output_to(log: Path) -> Any:
    """The process's stdout and stderr (Python's and the libraries' own handles) appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush(), sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log, "a") as file:
        os.dup2(file.fileno(), 1), os.dup2(file.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])


def _run_one(args: list[str], log: Path) -> tuple[bool, Any, float]:
    import train

    start = time.perf_counter()
    with output_to(log):
        try:
            return True, train.run(args), time.perf_counter() - start
        except Exception as err:  # one failing cell must not stop the others
            return False, train.one_line(err), time.perf_counter() - start


def worker_pool(jobs: int, threads: Optional[int] = None) -> ProcessPoolExecutor:
    """``jobs`` fresh processes (spawned, never forked after torch started its thread pools), each with
    ``threads`` torch/OpenMP threads (default: its share of the cores)."""
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    return ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_start_worker, initargs=(threads,))


def run_grid(grid: Grid, seeds: list[int], pool: Executor, jobs: int, out: Path, extra: list[str],
             cells: Optional[list[str]] = None) -> dict[tuple[str, int], str]:
    """Runs every unfinished cell x seed (of ``cells``, default all) in ``pool``'s ``jobs`` workers; returns the
    failures' error lines."""
    cells = list(grid.cells) if cells is None else cells
    todo = [(c, s) for c in cells for s in seeds if finished_results(out, c, s) is None]
    print(f"{grid.name}: {len(cells) * len(seeds) - len(todo)} of {len(cells) * len(seeds)} runs "
          f"finished, {len(todo)} to run, {jobs} at a time", flush=True)
    failures: dict[tuple[str, int], str] = {}
    wandb = "--wandb" not in extra or extra[extra.index("--wandb") + 1].lower() not in ("false", "0", "no")
    pending = {pool.submit(_run_one, run_args(grid, c, s, out, extra, wandb), seed_dir(out, c, s) / "console.log"):
               (c, s) for c, s in todo}
    done_count = 0
    while pending:
        finished, _ = wait(pending, return_when=FIRST_COMPLETED)
        for future in finished:
            cell, seed = pending.pop(future)
            ok, value, seconds = future.result()
            done_count += 1
            if ok:
                shown = ", ".join(f"{m}={value[m]:.4g}" for m in grid.metrics if is_number(value.get(m)))
                print(f"[{done_count}/{len(todo)}] {cell} seed {seed}: {shown} ({seconds:.1f} s)", flush=True)
            else:
                failures[(cell, seed)] = value
                print(f"[{done_count}/{len(todo)}] {cell} seed {seed}: FAILED: {value}", flush=True)
    return failures


# ---------------------------------------------------------------------- tables
def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def table_rows(grid: Grid, out: Path) -> list[dict[str, Any]]:
    """One row per cell over every finished seed found in DIR."""
    rows = []
    for cell in grid.cells:
        results = [json.loads(p.read_text()) for p in sorted((out / cell).glob("seed_*/version_*/results.json"))]
        row: dict[str, Any] = {"cell": cell, "n": len(results)}
        for metric in grid.metrics:
            values = [r[metric] for r in results if is_number(r.get(metric))]
            row[f"{metric}_mean"] = statistics.fmean(values) if values else ""
            row[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else ""
        paper = grid.paper.get(cell) or grid.paper.get(cell.split(",")[0]) or {}
        for metric in grid.metrics:
            row[f"paper_{metric}"] = paper.get(metric, "")
        rows.append(row)
    return rows


def write_tables(grid: Grid, out: Path, command: str, failures: dict[tuple[str, int], str]) -> None:
    rows = table_rows(grid, out)
    with open(out / "table.csv.tmp", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(out / "table.csv.tmp", out / "table.csv")
    paper = [m for m in grid.metrics if any(m in values for values in grid.paper.values())]  # metrics the paper gives
    header = ["cell", "n", *grid.metrics, *(f"{grid.reference} {m}" for m in paper)]
    lines = [f"Grid `{grid.name}`, generated by:", "", *(f"    {c}" for c in command.splitlines()), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"`{row['cell']}`", str(row["n"])]
        for metric in grid.metrics:
            mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
            cells.append("" if mean == "" else f"{mean:.4g} ± {std:.2g}" if std != "" else f"{mean:.4g}")
        cells += [str(row[f"paper_{m}"]) for m in paper]
        lines.append("| " + " | ".join(cells) + " |")
    if failures:
        lines += ["", "Failed runs:", *(f"- `{c}` seed {s}: {e}" for (c, s), e in sorted(failures.items()))]
    (out / "table.md").write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------- W&B sweeps
def wandb_sweep_yaml(grid: Grid, seeds: list[int], extra: list[str]) -> str:
    """One W&B grid sweep per cell (a cell is a fixed argument list; the seed is the swept parameter)."""
    docs = [{"name": f"{grid.name}/{cell}", "program": "train.py", "method": "grid",
             "metric": {"name": grid.metrics[0], "goal": "maximize" if "acc" in grid.metrics[0] else "minimize"},
             "parameters": {"seed": {"values": seeds}},
             "command": ["${env}", "${interpreter}", "${program}", *args, *extra, "--wandb_group", grid.name,
                         "${args}"]}
            for cell, args in grid.cells.items()]
    return yaml.safe_dump_all(docs, sort_keys=False)


# ---------------------------------------------------------------------- entry
def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="sweep.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid", type=Path, help="grid file (configs/<method>/grids/*.yaml)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--cells", nargs="+", metavar="PATTERN",
                        help="run only the cells matching these shell patterns (the tables still show every cell); "
                             "the extra train.py args need to suit only these")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (each gets cores / jobs threads)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch/OpenMP threads of each run (default cores / jobs; 1 leaves cores to other work)")
    parser.add_argument("--out", type=Path, default=None, help="sweep folder (default runs/sweeps/<grid name>)")
    parser.add_argument("--report", action="store_true", help="only rebuild table.csv / table.md from DIR")
    parser.add_argument("--wandb-sweep", action="store_true", help="print the equivalent W&B sweep YAML and exit")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        raise SweepError(f"--jobs must be at least 1 (got {args.jobs})")
    if args.threads is not None and args.threads < 1:
        raise SweepError(f"--threads must be at least 1 (got {args.threads})")
    if len(set(args.seeds)) != len(args.seeds):
        raise SweepError("--seeds lists a seed twice")
    return args, extra


def claim(out: Path, grid: Grid) -> Any:
    """Locks DIR for this sweep and checks it holds no other grid's runs; returns the held lock file."""
    out.mkdir(parents=True, exist_ok=True)
    marker = out / "grid.json"
    if marker.is_file() and json.loads(marker.read_text()).get("name") != grid.name:
        raise SweepError(f"{out} holds the runs of grid '{json.loads(marker.read_text())['name']}', not "
                         f"'{grid.name}': choose another --out")
    lock = open(out / ".sweep.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise SweepError(f"another sweep is running on {out} (lock {out / '.sweep.lock'})") from None
    marker.write_text(json.dumps({"name": grid.name}) + "\n")
    return lock


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args, extra = parse(argv)
        grid = load_grid(args.grid)
        if args.wandb_sweep:
            print(wandb_sweep_yaml(grid, args.seeds, extra), end="")
            return 0
        out = args.out or Path("runs/sweeps") / grid.name
        if args.report:
            if not out.is_dir():
                raise SweepError(f"--report: no sweep folder {out}")
            write_tables(grid, out, saved_command(out), {})
            print(f"tables: {out / 'table.md'}, {out / 'table.csv'}")
            return 0
        if out.is_dir() and (out / "grid.json").is_file():
            claim(out, grid).close()  # refuse a foreign DIR or a running sweep before the slow checks
        cells = selected_cells(grid, args.cells)
        with worker_pool(args.jobs, args.threads) as pool:
            check_cells(dataclasses.replace(grid, cells={c: grid.cells[c] for c in cells}), extra, pool)
            lock = claim(out, grid)
            command = remember_command(out, "python sweep.py " + shlex.join(argv))
            failures = run_grid(grid, args.seeds, pool, args.jobs, out, extra, cells)
        write_tables(grid, out, command, failures)
        lock.close()
        print(f"tables: {out / 'table.md'}, {out / 'table.csv'}" + (f"; {len(failures)} runs failed" if failures
                                                                      else ""))
        return 1 if failures else 0
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to continue", file=sys.stderr)
        return 130
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def selected_cells(grid: Grid, patterns: Optional[list[str]]) -> list[str]:
    if not patterns:
        return list(grid.cells)
    for pattern in patterns:
        if not fnmatch.filter(grid.cells, pattern):
            raise SweepError(f"--cells {pattern!r} matches no cell of {grid.name} ({', '.join(grid.cells)})")
    return [c for c in grid.cells if any(fnmatch.fnmatchcase(c, p) for p in patterns)]


def remember_command(out: Path, command: str) -> str:
    """Adds ``command`` to DIR/command.txt (one line per distinct command, e.g. a seed or cell subset run later);
    returns them all, as the tables' header lists them."""
    path = out / "command.txt"
    commands = [c for c in (path.read_text().splitlines() if path.is_file() else []) if c and c != command]
    path.write_text("\n".join([*commands, command]) + "\n")
    return "\n".join([*commands, command])


def saved_command(out: Path) -> str:
    path = out / "command.txt"
    return path.read_text().strip() if path.is_file() else f"python sweep.py GRID --out {out}"


if __name__ == "__main__":
    sys.exit(main())
