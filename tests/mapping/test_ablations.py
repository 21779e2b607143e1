"""Mapping Networks ablations (Tables 8-9): exact counts of every row of the grids, the math of each variant against
independent computations, training and resuming end to end, and clear errors."""
import copy
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev
from torch.nn.utils import prune

from lit_modules import MappingNetModule
from nets import CNN2
from nets.cnn import LowRankLinear
from nets.mapping import HadamardProjector, LatentMapping, MagnitudeMask, MagnitudePruned, TrainableProjector
from tests.conftest import FMNIST_SLICE, read_metrics, read_results, run_dir, run_train
from tests.mapping.grid_cells import build_model, cell_args, resolved_config

P = 108_618
# cell of configs/mapping/grids/table{8,9}_*.yaml -> (trainable_params, total generated params, inference_params
# once the pruning mask exists)
ROWS = {
    "cnn2_fulldnn_{}_307": (307 * 61 + 61 + 61 * P + P, P, P),  # = 6,753,104
    "cnn2_wm_{}_1024": (1024, P, P), "cnn2_wm_{}_2048": (2048, P, P),
    "cnn2_wmap_{}_2048": (2048, P, P), "cnn2_wmap_{}_4096": (4096, P, P),
    "cnn2_lvfulldnn_{}_5": (543_095, P, P), "cnn2_lvfulldnn_{}_15": (1_629_285, P, P),
    "cnn2_lrd_{}_1456": (1456, 35_914, 35_914), "cnn2_lrd_lwt_{}_2688": (2688, 35_914, 35_914),
    "cnn2_prune_{}_2048": (2048, P, 10_862), "cnn2_prune_lwt_{}_2688": (2688, P, 10_862),
}


@pytest.mark.parametrize("row", sorted(ROWS))
def test_every_row_has_its_exact_count(row: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # counts do not depend on W's values: skip the row-cut correction (an eigendecomposition, seconds per group;
    # tested in test_mapping.py)
    monkeypatch.setattr(HadamardProjector, "_correction", lambda self: (1.0, torch.empty(0), torch.empty(0)))
    trainable, total, inference = ROWS[row]
    torch.manual_seed(0)
    module = build_model(resolved_config(cell_args(row.format("fmnist"))))
    counts = module.parameter_counts()
    assert (counts["trainable_params"], counts["total_params"]) == (trainable, total)
    assert counts["trainable_params"] == sum(p.numel() for n, p in module.named_parameters()
                                             if p.requires_grad and n.startswith("mapping."))
    if module.mapping.mask is not None:
        module.mapping(dict(module.net.named_parameters()), refresh_mask=True)
    assert module.parameter_counts()["inference_params"] == inference
    mnist, fmnist = (resolved_config(cell_args(row.format(ds))) for ds in ("mnist", "fmnist"))
    assert mnist["model"] == fmnist["model"] and mnist["data"]["class_path"] == "datamodules.MNISTDataModule"


def test_baseline_rows_count_35914_and_10862() -> None:
    assert sum(p.numel() for p in CNN2(fc1_rank=32).parameters()) == 35_914
    assert sum(p.numel() for p in CNN2(fc1_rank=16).parameters()) == 21_066  # the text's rank 16 (docs/mapping_networks.md, LRD)
    pruned = MagnitudePruned(CNN2(), amount=0.9)
    pruned.train()(torch.randn(2, 1, 28, 28))
    assert pruned.nonzero_params() == 10_862
    for ds in ("mnist", "fmnist"):
        cfg = resolved_config(cell_args(f"cnn2_prune_{ds}"))
        assert cfg["model"]["init_args"]["net"]["init_args"]["amount"] == 0.9
        lrd = build_model(resolved_config(cell_args(f"cnn2_lrd_{ds}")))
        assert sum(p.numel() for p in lrd.parameters() if p.requires_grad) == 35_914


def test_mask_is_torch_global_magnitude_pruning_at_exactly_90_percent() -> None:
    torch.manual_seed(1)
    net = CNN2()
    mask = MagnitudeMask({n: tuple(p.shape) for n, p in net.named_parameters()}, 0.9)
    mask.refresh(dict(net.named_parameters()))
    assert P - mask.kept() == round(0.9 * P) and mask.kept() == 10_862  # torch's rounding of 90 %
    reference = copy.deepcopy(net)
    prune.global_unstructured([(m, k) for m in reference.modules() for k in ("weight", "bias")
                               if isinstance(m, (nn.Conv2d, nn.Linear))], prune.L1Unstructured, amount=0.9)
    theirs = {f"{n}.{k}": getattr(m, f"{k}_mask").bool() for n, m in reference.named_modules()
              if isinstance(m, (nn.Conv2d, nn.Linear)) for k in ("weight", "bias")}
    assert all(torch.equal(mask.keep(n), theirs[n]) for n in mask.names)


@pytest.mark.parametrize("schedule", ["fixed", "every_step"])
def test_mask_schedule(schedule: str) -> None:
    mask = MagnitudeMask({"w": (10,)}, 0.5, start_step=2, schedule=schedule)
    assert [mask.due(s) for s in (0, 1, 2)] == [False, False, True]
    w = torch.arange(10.0) - 4.25
    assert torch.equal(mask({"w": w})["w"], w)  # nothing masked before the start
    mask.refresh({"w": w})
    assert torch.equal(mask({"w": w})["w"], w * (w.abs() > 2.5))
    assert mask.due(3) == (schedule == "every_step")


def test_pruned_baseline_masks_weights_and_their_gradients() -> None:
    torch.manual_seed(0)
    pruned, x = MagnitudePruned(CNN2(), amount=0.9, start_step=1), torch.randn(4, 1, 28, 28)
    plain = pruned.train()(x)
    assert torch.allclose(plain, pruned.net(x)) and not bool(pruned.mask.ready)  # step 0: dense
    pruned(x).sum().backward()  # step 1 computes the mask
    params = dict(pruned.net.named_parameters())
    masked = {n: p.detach() * pruned.mask.keep(n) for n, p in params.items()}
    assert torch.allclose(pruned.eval()(x), functional_call(pruned.net, masked, (x,)), atol=1e-6)
    assert all((p.grad[~pruned.mask.keep(n)] == 0).all() for n, p in params.items())
    assert int(pruned.steps) == 2


def test_low_rank_factors_and_their_generation() -> None:
    torch.manual_seed(0)
    layer = LowRankLinear(800, 128, 32)
    assert layer.u.shape == (128, 32) and layer.v.shape == (32, 800)
    x = torch.randn(3, 800)
    assert torch.allclose(layer(x), nn.functional.linear(x, layer.u @ layer.v, layer.bias), atol=1e-5)
    net = CNN2(fc1_rank=32)
    mapping = LatentMapping(net, "lwt", latent_dim=40)
    assert [len(g) for g in mapping.groups] == [2, 2, 1, 2, 2]  # conv1, conv2, V, U + fc1 bias, fc2
    out, _ = mapping(dict(net.named_parameters()))
    assert out["classifier.1.v"].shape == (32, 800) and out["classifier.1.u"].shape == (128, 32)


def test_separate_modulation_shifts_by_alpha_m_dot_z() -> None:
    net = CNN2()
    mapping = LatentMapping(net, "slvt", latent_dim=64, alpha=0.01, projector="dense", gain="none",
                            modulation="separate")
    z, m = torch.randn(64), torch.randn(64)
    with torch.no_grad():
        mapping.modulators[0].copy_(m)
    base = {k: v.detach() for k, v in net.named_parameters()}
    out, _ = mapping(base, [z])
    theta0 = torch.cat([v.reshape(-1) for v in base.values()])
    expected = theta0 + mapping.projectors[0].weight @ z + 0.01 * (m @ z)
    assert torch.allclose(torch.cat([v.reshape(-1) for v in out.values()]), expected, atol=1e-5)
    w_mod = mapping.projectors[0].weight + 0.01 * m  # w_ij + alpha m_i
    cos = nn.functional.cosine_similarity(z, w_mod.mean(0), dim=0)
    assert torch.allclose(mapping.alignment([z]), 1 - cos, atol=1e-5)


def tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 4))


@pytest.mark.parametrize("kwargs", [{"modulation": "separate", "projector": "dense"},
                                    {"projector": "trainable"},
                                    {"projector": "dense", "prune_amount": 0.7, "activation": "tanh"}])
def test_smoothness_closed_form_matches_jacrev_for_ablations(kwargs: dict) -> None:
    torch.manual_seed(0)
    net = tiny_net()
    mapping = LatentMapping(net, "lwt", latent_dim=10, alpha=0.05, latent_init_std=0.3, **kwargs)
    if mapping.modulators is not None:
        with torch.no_grad():
            for m in mapping.modulators:
                m.normal_()
    if kwargs["projector"] == "trainable":
        with torch.no_grad():
            for p in mapping.projectors.parameters():
                p.add_(0.1 * torch.randn_like(p))  # rows no longer unit-norm
    base = {k: v.detach() for k, v in net.named_parameters()}
    latents = [z.detach() for z in mapping.latents]
    aux = mapping(base, latents, refresh_mask=mapping.mask is not None)[1]

    def flat(*zs):
        return torch.cat([v.reshape(-1) for v in mapping(base, list(zs))[0].values()])

    expected = sum(j.square().sum() for j in jacrev(flat, argnums=tuple(range(len(latents))))(*latents))
    assert torch.allclose(mapping.smoothness(aux), expected, rtol=1e-4)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)` but the `self.trainer` reference is not registered")  # a step called without a Trainer
def test_full_dnn_trains_only_the_mapper_from_the_initial_net() -> None:
    torch.manual_seed(0)
    net = tiny_net()
    mapping = partial(LatentMapping, latent_dim=7, projector="trainable", mapper_hidden=5, mapper_bias=True,
                      train_latent=False, latent_init_std=1.0, alpha=0.0)
    module = MappingNetModule(net, mapping, lambda_smooth=0.0, lambda_align=0.0, num_classes=4, stab_samples=2)
    assert module.parameter_counts()["trainable_params"] == 7 * 5 + 5 + 5 * 466 + 466  # tiny_net has 466 params
    generated = module.generated()[0]
    assert all(torch.equal(generated[k], v) for k, v in net.named_parameters())  # zero output layer
    module.training_step((torch.randn(4, 1, 8, 8), torch.randint(0, 4, (4,))), 0).backward()
    with_grad = {k for k, p in module.named_parameters() if p.grad is not None}
    assert with_grad == {k for k, _ in module.named_parameters() if k.startswith("mapping.projectors")}


@pytest.mark.parametrize("make,message", [
    (lambda: CNN2(fc1_rank=129), "rank must be in"), (lambda: LowRankLinear(10, 5, 0), "rank must be in"),
    (lambda: MagnitudeMask({"w": (4,)}, 1.0), "prune_amount"),
    (lambda: LatentMapping(CNN2(), latent_dim=8, prune_amount=0.9, prune_schedule="often"), "prune_schedule"),
    (lambda: LatentMapping(CNN2(), latent_dim=8, train_latent=False, latent_init_std=1.0), "fixed latent"),
    (lambda: LatentMapping(CNN2(), latent_dim=8, modulation="quadratic"), "modulation"),
    (lambda: LatentMapping(CNN2(), latent_dim=8, mapper_hidden=4), "need projector trainable"),
    (lambda: TrainableProjector(10, 20, 0), "exceeds"),
    (lambda: MappingNetModule(CNN2(), partial(LatentMapping, latent_dim=8, projector="trainable", mapper_hidden=4)),
     "closed form"),
])
def test_bad_ablation_inputs_raise_value_error(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def slice_args(cell: str) -> list[str]:
    return [*cell_args(cell), "--data.root", str(FMNIST_SLICE), "--data.max_train_samples", "134",
            "--data.batch_size", "40", "--data.val_fraction", "0.1", "--trainer.limit_val_batches", "1",
            "--trainer.limit_test_batches", "1", "--trainer.log_every_n_steps", "1"]


SMALL = ["--model.mapping.latent_dim", "64"]  # shipped latent sizes are counted above; small ones train fast
VARIANTS = [("cnn2_fulldnn_fmnist_307", []), ("cnn2_wm_fmnist_1024", SMALL), ("cnn2_wmap_fmnist_2048", SMALL),
            ("cnn2_lvfulldnn_fmnist_5", []), ("cnn2_lrd_fmnist_1456", SMALL), ("cnn2_lrd_lwt_fmnist_2688", SMALL),
            ("cnn2_prune_fmnist_2048", [*SMALL, "--model.mapping.prune_start_step", "2"]),
            ("cnn2_prune_lwt_fmnist_2688", [*SMALL, "--model.mapping.prune_start_step", "2"]),
            ("cnn2_lrd_fmnist", []), ("cnn2_prune_fmnist", ["--model.net.init_args.start_step", "2"])]


def train_a_few_steps(tmp_path: Path, cell: str, extra: list[str]) -> dict:
    assert run_train([*slice_args(cell), "--trainer.max_steps", "4", "--name", "r", *extra], tmp_path) == 0
    losses = [float(r["train/loss"]) for r in read_metrics(run_dir(tmp_path, "r")) if r.get("train/loss")]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    return read_results(run_dir(tmp_path, "r"))


@pytest.mark.parametrize("cell,extra", VARIANTS)
def test_every_variant_trains_end_to_end(tmp_path: Path, cell: str, extra: list[str]) -> None:
    results = train_a_few_steps(tmp_path, cell, extra)
    if "prune" in cell:
        assert results["inference_params"] == 10_862 < results["total_params"]


@pytest.mark.slow
@pytest.mark.parametrize("row", sorted(ROWS))
def test_every_shipped_row_trains_end_to_end(tmp_path: Path, row: str) -> None:
    extra = ["--model.mapping.prune_start_step", "2"] if "prune" in row else []
    results = train_a_few_steps(tmp_path, row.format("fmnist"), extra)
    assert (results["trainable_params"], results["inference_params"]) == (ROWS[row][0], ROWS[row][2])


def test_trainable_mapper_with_pruning_resumes_to_the_same_trajectory(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    base = [*slice_args("cnn2_lvfulldnn_fmnist_5"), "--model.mapping.prune_amount", "0.9",
            "--model.mapping.prune_start_step", "2", "--trainer.max_epochs", "2"]
    assert run_train([*base, "--name", "full"], tmp_path) == 0
    assert run_train([*base, "--name", "cut", "--trainer.max_steps", "6"], tmp_path) == 0  # mid epoch 2
    state = torch.load(run_dir(tmp_path, "cut") / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert state["mapping.projectors.0.layers.0.weight"].shape == (P, 5) and bool(state["mapping.mask.ready"])
    assert run_train([*base, "--name", "cut", "--ckpt_path", "last"], tmp_path) == 0
    assert read_metrics(run_dir(tmp_path, "cut")) == read_metrics(run_dir(tmp_path, "full"))
    full = read_results(run_dir(tmp_path, "full"))
    assert full["test/acc"] == read_results(run_dir(tmp_path, "cut"))["test/acc"]
    assert (full["trainable_params"], full["inference_params"]) == (543_095, 10_862)
    capsys.readouterr()
    assert run_train([*base, "--name", "cut", "--ckpt_path", "last", "--model.mapping.latent_dim", "6"], tmp_path) == 1
    assert "latent length" in capsys.readouterr().err
