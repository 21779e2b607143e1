"""The stability term (Eq. 28) from one generation: the tensors at z + eps built from the pass at z agree with a
second generation at z + eps (the previous implementation), in value and gradient, for every mapping variant."""
import pytest
import torch
from torch import nn
from torch.func import functional_call

from lit_modules import MappingNetModule
from nets import CNN2
from nets.mapping.finetune import ModulationMapping

# float32 rounding of two ways to compute the same tensors; the stability value is a difference of two outputs
# O(sigma) apart, so its relative rounding error is ~1e-7 / sigma: 1e-4 leaves a margin of 10 at sigma 0.01
RTOL = 1e-4


def small_bn_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def two_generations(module: MappingNetModule, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The previous implementation: E||f(z + eps) - f(z)||^2 with a second, full generation at z + eps."""
    k = min(module.hparams.stab_samples, len(x))
    noisy = [z + module.hparams.stab_sigma * torch.randn_like(z) for z in module.mapping.latents]
    params = module.generated(noisy)[0]
    buffers = {name: b.clone() for name, b in module.net.named_buffers()}
    out_noisy = functional_call(module.net, {**params, **buffers}, (x[:k],))
    return (out_noisy - out[:k]).square().reshape(k, -1).sum(1).mean()


def both_ways(module: MappingNetModule, x: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
    """(stability value, gradients of the trained tensors) computed both ways with the same eps draw."""
    results = []
    for one_generation in (True, False):
        module.zero_grad()
        params, aux = module.generated(refresh_mask=module.mapping.mask is not None)
        out = functional_call(module.net, params, (x,))
        torch.manual_seed(123)
        stab = module.stability(x, out, params, aux) if one_generation else two_generations(module, x, out)
        stab.backward()
        results.append((stab.detach(), [p.grad.clone() for p in module.parameters() if p.grad is not None]))
    return results


@pytest.mark.parametrize("kwargs", [
    {"strategy": "lwt", "latent_dim": 20, "projector": "dense"},
    {"strategy": "lwt", "latent_dim": 20, "projector": "hadamard", "activation": "tanh", "bias": "zero"},
    {"strategy": "slvt", "latent_dim": 24, "modulation": "separate"},
    {"strategy": "slvt", "latent_dim": 24, "prune_amount": 0.5},
    {"strategy": "slvt", "latent_dim": 6, "projector": "trainable", "mapper_hidden": 5, "mapper_bias": True,
     "lambda_smooth": 0.0, "lambda_align": 0.0},
])
def test_one_generation_matches_two_on_every_variant(kwargs: dict) -> None:
    torch.manual_seed(0)
    module = MappingNetModule(small_bn_net(), alpha=0.05, latent_init_std=0.5, stab_samples=5, stab_sigma=0.05,
                              num_classes=3, **kwargs)
    if module.mapping.modulators is not None:
        with torch.no_grad():
            for m in module.mapping.modulators:
                m.normal_()
    (new, new_grads), (old, old_grads) = both_ways(module, torch.randn(8, 1, 8, 8))
    assert new > 0 and torch.allclose(new, old, rtol=RTOL)
    assert len(new_grads) == len(old_grads) > 0
    assert all(torch.allclose(a, b, rtol=1e-3, atol=1e-5 * b.abs().max()) for a, b in zip(new_grads, old_grads))


def test_cnn2_slvt_2048_agrees_at_a_trained_latent_norm() -> None:
    """The benchmarked row (Hadamard projector, 32 samples, sigma 0.01) at ||z|| ~ 20, as after a few epochs: the
    value to RTOL in float32; value and gradient to 1e-9 in float64 (the two are the same function of z; in float32
    the latent gradient of this difference of two nearby passes is itself a small difference, and rounding can
    flip a ReLU or max-pool choice in one of the passes)."""
    torch.manual_seed(0)
    module = MappingNetModule(CNN2(), strategy="slvt", latent_dim=2048, latent_init_std=20 / 2048 ** 0.5)
    x = torch.randn(40, 1, 28, 28)
    (new, _), (old, _) = both_ways(module, x)
    assert new > 0 and torch.allclose(new, old, rtol=RTOL)
    (new, (g_new,)), (old, (g_old,)) = both_ways(module.double(), x.double())  # the latent's gradient only
    assert torch.allclose(new, old, rtol=1e-9) and torch.allclose(g_new, g_old, rtol=1e-9, atol=1e-12)


def test_finetune_modulation_perturbed_is_a_second_modulation() -> None:
    torch.manual_seed(0)
    net = small_bn_net()
    mapping = ModulationMapping(net, "all", tie=3, latent_dim=8, alpha=0.1, mapper_alpha=0.01, latent_init_std=1.0)
    base = dict(net.named_parameters())
    params, aux = mapping(base)
    eps = 0.05 * torch.randn(8)
    expected = mapping(base, [mapping.latents[0] + eps])[0]
    got = mapping.perturbed(params, aux, [eps])
    assert got.keys() == expected.keys()
    assert all(torch.allclose(got[k], expected[k], atol=1e-6) for k in got)
