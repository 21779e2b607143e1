"""The paper's cells as the Mapping Networks grids define them (configs/mapping/grids/): their train.py arguments,
the config train.py resolves from them, and the model that config builds."""
import contextlib
import importlib
import io
from typing import Any

import pytorch_lightning as pl
import yaml
from jsonargparse import ArgumentParser

import sweep
import train
from tests.conftest import ROOT

GRIDS = ROOT / "configs" / "mapping" / "grids"


def grid_cells(grid: str) -> dict[str, list[str]]:
    """Cell name -> train.py arguments of ``configs/mapping/grids/<grid>.yaml``, as the seed-0 run gets them."""
    return {cell: sweep.with_seed(args, 0) for cell, args in sweep.load_grid(GRIDS / f"{grid}.yaml").cells.items()}


def cell_args(cell: str) -> list[str]:
    """The train.py arguments of the one cell of that name in any Mapping Networks grid."""
    found = {tuple(cells[cell]) for path in GRIDS.glob("*.yaml")
             if cell in (cells := sweep.load_grid(path).cells)}
    assert len(found) == 1, f"cell {cell!r} is in {len(found)} grids with different arguments"
    return sweep.with_seed(list(found.pop()), 0)


def resolved_config(args: list[str]) -> dict[str, Any]:
    """The whole config train.py runs with ``args`` (its --print_config)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        train.run([*args, "--wandb", "false", "--print_config"])
    return yaml.safe_load(out.getvalue())


def build_model(config: dict[str, Any]) -> pl.LightningModule:
    """The LightningModule of a resolved config, built as train.py builds it (no data, trainer or run folder)."""
    module, name = config["model"]["class_path"].rsplit(".", 1)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(getattr(importlib.import_module(module), name), "model", fail_untyped=False)
    return parser.instantiate(parser.parse_object({"model": config["model"]["init_args"]})).model


def mapping_settings(config: dict[str, Any]) -> dict[str, Any]:
    return config["model"]["init_args"]["mapping"]["init_args"]
