"""The Fashion-MNIST transfer stand-in for Table 10: pretrain on classes 0-4, export, fine-tune on classes 5-9."""
import shutil
from pathlib import Path

import torch

import sweep
import train
from nets import TransferCNN
from tests.conftest import FMNIST_SLICE, QUIET, ROOT, run_dir

DATA = ["--data.root", str(FMNIST_SLICE), "--trainer.max_steps", "3", *QUIET]


def test_pretrain_export_and_both_kinds_of_fine_tuning(tmp_path: Path) -> None:
    root = ["--trainer.default_root_dir", str(tmp_path)]
    pretrained = train.run(["--config", "configs/baseline/transfercnn_fmnist_pretrain.yaml", *root, *DATA])
    assert pretrained["trainable_params"] == 56_229
    exported = train.run(["export", "--name", "transfercnn_fmnist_pretrain", "--ckpt_path", "last", *root, *QUIET])
    weights = tmp_path / "weights.pt"
    shutil.copy(exported["file"], weights)
    body = {k: v for k, v in torch.load(weights, weights_only=True).items() if not k.startswith("fc.")}
    ft = ["--model.init_args.net.init_args.weights_path", str(weights), *root, *DATA]
    mapped = train.run(["--config", "configs/mapping/transfercnn_fmnist_finetune.yaml", "--model.mapping.layers",
                        "layer4+fc", "--model.mapping.latent_dim", "64", "--model.mapping.tie", "250", *ft])
    assert mapped["trainable_params"] == 64 and mapped["finetuned_params"] == 55_877
    assert mapped["modulation_elements"] == -(-55_877 // 250)
    plain = train.run(["--config", "configs/baseline/transfercnn_fmnist_finetune.yaml", *ft])
    assert plain["trainable_params"] == 56_229
    # the frozen-norm fine-tuning started from the exported body: BatchNorm statistics stay the pretrained ones
    state = torch.load(run_dir(tmp_path, "transfercnn_fmnist_finetune") / "checkpoints" / "last.ckpt",
                       weights_only=False, map_location="cpu")["state_dict"]  # a GPU run saves CUDA tensors
    for name in ("bn1.running_mean", "layer4.1.running_var"):
        assert torch.equal(state[f"net.{name}"], body[name])
    assert TransferCNN(5, weights_path=str(weights)).conv1.weight.shape == (32, 1, 3, 3)


def test_selection_grids_cover_every_table_10_case() -> None:
    alpha = sweep.load_grid(ROOT / "configs/mapping/grids/transfer_fmnist_alpha.yaml").cells
    lr = sweep.load_grid(ROOT / "configs/baseline/grids/transfer_fmnist_lr.yaml").cells
    assert len(alpha) == 6 * 6 and len(lr) == 2 * 3
    assert {c.split(",")[0] for c in alpha} == {f"{layers}_L{tie}" for layers in ("all", "layer4fc")
                                                for tie in (1, 250, 25000)}
