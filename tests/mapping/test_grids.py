"""The paper's tables as grids: every cell of configs/mapping/grids/ builds its module with the paper's parameter
count, and checkpoints written before the mapping became one argument load or fail with one line."""
import re
from pathlib import Path

import pytest
import torch
import yaml

import sweep
import train
from callbacks import parameter_counts
from lit_modules import MappingNetModule
from tests.conftest import FMNIST_SLICE, QUIET, read_results, run_dir, run_train
from tests.mapping.grid_cells import GRIDS, build_model, resolved_config

# no ImageNet ResNet-50 file in tests: the small torchvision-named ResNet of the fine-tuning tests (same layer sets)
NO_WEIGHTS = ["--model.net", '{"class_path": "tests.mapping.test_finetune.TinyResNet", "init_args": '
                             '{"weights_path": null}}']
NO_TRANSFER_WEIGHTS = ["--model.net.init_args.weights_path", ""]  # the pretrained TransferCNN is made by a run
CELLS = [(path.stem, cell, args, sweep.load_grid(path).paper.get(cell, {}))
         for path in sorted(GRIDS.glob("*.yaml")) for cell, args in sweep.load_grid(path).cells.items()]


def slow_if_resnet18(grid: str, cell: str) -> list:
    # building the projectors of 11M generated parameters takes ~10 s per cell
    return [pytest.mark.slow] if cell.startswith("resnet18_lwt") else []


@pytest.mark.parametrize("grid,cell,args,paper", [pytest.param(*c, id=f"{c[0]}:{c[1]}", marks=slow_if_resnet18(*c[:2]))
                                                  for c in CELLS])
def test_every_cell_builds_with_the_papers_parameter_count(grid: str, cell: str, args: list[str],
                                                           paper: dict) -> None:
    extra = NO_WEIGHTS if cell.startswith("resnet50") else NO_TRANSFER_WEIGHTS if grid.startswith("transfer") else []
    model = build_model(resolved_config(sweep.with_seed([*args, *extra], 0)))
    if "trainable_params" in paper:
        assert parameter_counts(model)["trainable_params"] == paper["trainable_params"]


def test_the_grids_cover_the_papers_tables() -> None:
    counts = {path.stem: len(sweep.load_grid(path).cells) for path in GRIDS.glob("*.yaml")}
    assert counts.items() >= {
        "table4_mnist": 9, "table5_deepfake": 20, "table6_cityscapes": 3, "table7_lstm": 6, "table8_robustness": 20,
        "table9_addons": 18, "table10_finetune": 16, "table11_resnet18": 8, "table12_resnet18_deepfake": 6}.items()


# ---------------------------------------------------------------------- checkpoints of the flat-argument module
ARGS = ["--config", "configs/mapping/cnn2_fmnist.yaml", "--model.mapping.latent_dim", "256", "--data.root",
        str(FMNIST_SLICE), "--data.max_train_samples", "200", "--data.batch_size", "50", "--trainer.max_steps", "3",
        "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "2"]
LATENT_MAPPING_KEYS = {"seed": "mapping_seed"}  # the one key renamed; the others kept their names


def flatten(mapping_config: dict) -> dict:
    return {LATENT_MAPPING_KEYS.get(k, k): v for k, v in mapping_config["init_args"].items()}


def test_a_checkpoint_written_before_the_mapping_argument(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Such a checkpoint holds the mapping's settings as flat hyper-parameters (model.init_args.latent_dim, ...,
    mapping_seed) and its run folder's config.yaml likewise; its weights and mapping metadata are what they are now.
    Made here from a new run by flattening both (docs/mapping_networks.md, 'Configs')."""
    assert run_train([*ARGS, "--name", "old"], tmp_path) == 0
    run = run_dir(tmp_path, "old")
    ckpt_path = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=False)
    hparams = dict(ckpt["hyper_parameters"])
    ckpt["hyper_parameters"] = {**{k: v for k, v in hparams.items() if k != "mapping"},
                                **flatten(hparams["mapping"])}
    torch.save(ckpt, ckpt_path)
    config = yaml.safe_load((run / "config.yaml").read_text())
    init = config["model"]["init_args"]
    config["model"]["init_args"] = {**{k: v for k, v in init.items() if k != "mapping"}, **flatten(init["mapping"])}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    tested = read_results(run)["test/acc"]

    # the weights load into a module built from the current config, to the same test accuracy
    again = train.run(["test", *ARGS, "--name", "old", "--ckpt_path", str(ckpt_path), *QUIET,
                       "--trainer.default_root_dir", str(tmp_path)])
    assert again["test/acc"] == tested
    # the old config.yaml (used when no --config is given) names the key it no longer accepts
    capsys.readouterr()
    assert run_train(["test", "--ckpt_path", str(ckpt_path)], tmp_path) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1
    assert re.search(r"class_path 'lit_modules.MappingNetModule': Option '(\w+)' is not accepted", err).group(1) in {
        *flatten(init["mapping"])}
    # load_from_checkpoint would rebuild a default mapping from the flat hyper-parameters: refused
    with pytest.raises(ValueError, match="checkpoint predates model.init_args.mapping"):
        MappingNetModule.load_from_checkpoint(ckpt_path, map_location="cpu")
