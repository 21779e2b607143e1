"""Table 11: CIFAR ResNet-18 with layer-wise training: exact latent budgets per grid cell, and a CPU smoke run."""
from functools import partial
from pathlib import Path

import pytest

import nets
from lit_modules import MappingNetModule
from nets.mapping import LatentMapping, allocate, layer_groups
from tests.conftest import read_results, run_dir, run_train
from tests.data_fixtures import write_cifar
from tests.mapping.grid_cells import grid_cells, mapping_settings, resolved_config

CELLS = sorted(cell for cell in grid_cells("table11_resnet18") if "_lwt_" in cell)


def test_every_table11_row_is_a_cell() -> None:
    assert CELLS == sorted(f"resnet18_lwt_cifar{k}_{d}k" for k in (10, 100) for d in (10, 15, 20))


@pytest.mark.parametrize("cell", CELLS)
def test_group_latents_sum_to_the_budget(cell: str) -> None:
    config = resolved_config(grid_cells("table11_resnet18")[cell])
    args = mapping_settings(config)
    budget = int(cell.split("_")[-1][:-1]) * 1000
    net = nets.CifarResNet18(**config["model"]["init_args"]["net"]["init_args"])
    groups = layer_groups(net)
    params = dict(net.named_parameters())
    sizes = [sum(params[n].numel() for n in g) for g in groups]
    dims = allocate(args["latent_dim"], sizes, args["allocation"])
    assert args["strategy"] == "lwt" and len(groups) == 21 and sum(sizes) == sum(p.numel() for p in params.values())
    assert sum(dims) == budget and all(1 <= d <= p for d, p in zip(dims, sizes))


def test_trainable_count_is_the_budget() -> None:
    """The latents are the only trainable tensors (one module: building the projectors of 11M targets takes ~5 s)."""
    lit = MappingNetModule(nets.CifarResNet18(num_classes=100), partial(LatentMapping, strategy="lwt", latent_dim=20_000),
                           num_classes=100)
    assert sum(p.numel() for p in lit.parameters() if p.requires_grad) == 20_000 == sum(lit.mapping.dims)
    counts = lit.parameter_counts()
    assert counts["trainable_params"] == 20_000 and counts["total_params"] == 11_220_132
    assert counts["mapper_bytes"] < 250 * 2**20  # structured projectors: ~17 bytes per generated parameter


def test_cpu_smoke_run_on_a_cifar_fixture(tmp_path: Path) -> None:
    write_cifar(tmp_path / "data", classes=10, n_per_file=8)
    args = [*grid_cells("table11_resnet18")["resnet18_lwt_cifar10_10k"], "--data.root", str(tmp_path / "data"),
            "--data.download", "false", "--data.batch_size", "8", "--data.val_fraction", "0.2",
            "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1",
            "--name", "smoke"]
    assert run_train(args, tmp_path) == 0
    results = read_results(run_dir(tmp_path, "smoke"))
    assert results["trainable_params"] == 10_000 and results["global_step"] == 2 and len(results["latent_dims"]) == 21
    assert 0 <= results["test/acc"] <= 1
