"""Every shipped config parses and resolves (a typo in any YAML fails here, not in a user's run)."""
import dataclasses
from pathlib import Path

import pytest

import sweep

from tests.conftest import ROOT, run_train

# grid files (configs/*/grids/) are not configs: test_grid_cell_resolves checks every cell of them
CONFIGS = sorted(p.relative_to(ROOT) for p in (ROOT / "configs").rglob("*.yaml") if "grids" not in p.parts)


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_config_resolves(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_train(["--config", str(config), "--print_config"], tmp_path)
    assert exit_info.value.code == 0, capsys.readouterr().err[-500:]
    assert "class_path" in capsys.readouterr().out


def test_names_follow_the_convention() -> None:
    for config in CONFIGS:
        assert config.parts[0] == "configs" and (len(config.parts) == 3 or config.name == "default.yaml"), config


# every cell of every grid file parses as train.py parses it (the per-cell configs these grids replaced were
# each checked by test_config_resolves)
GRID_CELLS = [(path, cell) for path in sorted((ROOT / "configs").glob("*/grids/*.yaml"))
              for cell in sweep.load_grid(path).cells]


@pytest.mark.parametrize("grid,cell", GRID_CELLS, ids=[f"{p.parent.parent.name}/{p.stem}:{c}" for p, c in GRID_CELLS])
def test_grid_cell_resolves(grid: Path, cell: str) -> None:
    whole = sweep.load_grid(grid)
    sweep.check_cells(dataclasses.replace(whole, cells={cell: whole.cells[cell]}), [])
