"""Every shipped config parses and resolves (a typo in any YAML fails here, not in a user's run)."""
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_train

# grid files (configs/*/grids/) are not configs: tests/test_sweep.py checks every cell of them
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
