"""Mapping Networks: projections, generated parameters, loss terms and counts against independent computations."""
import copy
from functools import partial

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

from lit_modules import MappingNetModule
from nets import CNN1, CNN2
from nets.mapping import DenseProjector, HadamardProjector, LatentMapping, allocate, hadamard_transform, make_projector
from nets.mapping.loss_weights import LossWeights


def materialise(proj) -> torch.Tensor:
    return proj.apply_forward(torch.eye(proj.in_features)).T if isinstance(proj, HadamardProjector) \
        else proj.weight


def sylvester(n: int) -> torch.Tensor:
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.kron(torch.tensor([[1.0, 1.0], [1.0, -1.0]]), h)
    return h


@pytest.mark.parametrize("n", [1, 2, 8, 32, 512])
def test_hadamard_transform_is_the_sylvester_matrix(n: int) -> None:
    x = torch.randn(3, n)
    assert torch.allclose(hadamard_transform(x), x @ sylvester(n).T, atol=1e-4)


@pytest.mark.parametrize("cls,p,d", [(DenseProjector, 300, 20), (HadamardProjector, 512, 64),  # m * n == P
                                     (HadamardProjector, 1000, 50), (HadamardProjector, 3001, 256),  # rows cut
                                     (HadamardProjector, 40, 40), (HadamardProjector, 7, 1)])
def test_projector_columns_are_orthonormal(cls, p: int, d: int) -> None:
    w = materialise(cls(p, d, seed=3))
    assert w.shape == (p, d)
    assert (w.T @ w - torch.eye(d)).abs().max() < 1e-5


def test_hadamard_backward_and_transpose_are_w_transpose() -> None:
    proj = HadamardProjector(1000, 50, seed=1)
    w = materialise(proj)
    z, g = torch.randn(50, requires_grad=True), torch.randn(1000)
    assert torch.allclose(proj(z), w @ z.detach(), atol=1e-5)
    (proj(z) @ g).backward()
    assert torch.allclose(z.grad, w.T @ g, atol=1e-5)
    assert torch.allclose(proj.transpose(g), w.T @ g, atol=1e-5)


def test_projections_regenerate_from_the_seed_and_hold_no_checkpoint_state() -> None:
    for cls in (DenseProjector, HadamardProjector):
        a, b, c = cls(700, 30, seed=5), cls(700, 30, seed=5), cls(700, 30, seed=6)
        assert torch.equal(materialise(a), materialise(b)) and not torch.equal(materialise(a), materialise(c))
        assert a.state_dict() == {}
    assert make_projector("auto", 700, 30, 0).kind == "dense"
    assert make_projector("auto", 40_000, 512, 0, dense_limit_mb=64).kind == "hadamard"


def test_hadamard_memory_is_linear_in_p() -> None:
    small, big = HadamardProjector(2**14, 1024, 0), HadamardProjector(2**16, 1024, 0)
    assert big.memory_bytes() <= 4.1 * small.memory_bytes()
    assert big.memory_bytes() < 0.01 * 4 * 2**16 * 1024  # vs the dense fp32 matrix


def test_bad_sizes_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        HadamardProjector(10, 20, 0)
    with pytest.raises(ValueError, match="layer groups"):
        LatentMapping(CNN2(), "lwt", latent_dim=3)
    with pytest.raises(ValueError, match="latent_dims has"):
        LatentMapping(CNN2(), "lwt", latent_dims=[4, 4])


@pytest.mark.parametrize("total,sizes", [(1872, [160, 4640, 102528, 1290]), (2688, [160, 4640, 102528, 1290]),
                                         (4078, [320, 18496, 73856, 147584, 295168, 2570]), (12, [2, 3, 100])])
def test_allocation_sums_exactly_and_respects_sizes(total: int, sizes: list[int]) -> None:
    for rule in ("sqrt", "proportional"):
        dims = allocate(total, sizes, rule)
        assert sum(dims) == total and all(1 <= d <= p for d, p in zip(dims, sizes))


@pytest.mark.parametrize("net,strategy,dim", [(CNN2(), "lwt", 1872), (CNN1(), "lwt", 4078), (CNN2(), "slvt", 1024)])
def test_trainable_params_is_the_latent_length(net, strategy: str, dim: int) -> None:
    module = MappingNetModule(net, partial(LatentMapping, strategy=strategy, latent_dim=dim), lambda_scheme="trainable")
    counts = module.parameter_counts()
    assert counts["trainable_params"] == dim == sum(z.numel() for z in module.mapping.latents)
    assert sum(p.numel() for p in module.parameters() if p.requires_grad) == dim + 3  # + the 3 lambdas
    assert counts["total_params"] == sum(p.numel() for p in net.parameters()) and counts["lambda_params"] == 3


def small_bn_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_generated_parameters_match_an_explicit_matrix() -> None:
    net = small_bn_net()
    mapping = LatentMapping(net, "slvt", latent_dim=16, alpha=0.01, projector="hadamard", gain="init_std")
    base = {k: v.detach().clone() for k, v in net.named_parameters()}
    z = torch.randn(16)
    out, _ = mapping(base, [z])
    w = materialise(mapping.projectors[0])
    theta0 = torch.cat([v.reshape(-1) for v in base.values()])
    gains = torch.cat([g.expand(v.numel()) for g, v in zip(mapping.gains, base.values())])
    expected = theta0 + gains * (w @ z + 0.01 * z @ z)
    assert torch.allclose(torch.cat([v.reshape(-1) for v in out.values()]), expected, atol=1e-5)
    zero, _ = mapping(base)  # latents start at 0: the generated net is the initial net
    assert all(torch.equal(zero[k], base[k]) for k in base)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)` but the `self.trainer` reference is not registered")  # a step called without a Trainer
def test_only_latents_get_gradients_and_batchnorm_stats_update_once() -> None:
    torch.manual_seed(0)
    net = small_bn_net()
    module = MappingNetModule(net, partial(LatentMapping, strategy="lwt", latent_dim=20, latent_init_std=0.1),
                              lambda_stab=1.0, lambda_smooth=0.1, lambda_align=0.1, lambda_scheme="uncertainty",
                              stab_samples=4, num_classes=3)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    reference = copy.deepcopy(net)
    with torch.no_grad():
        params = module.generated()[0]
    module.training_step((x, y), 0).backward()
    named = dict(module.named_parameters())
    with_grad = {k for k, p in named.items() if p.grad is not None}
    assert with_grad == {k for k in named if k.startswith("mapping.latents") or k.startswith("loss_weights")}
    assert all(not p.requires_grad for p in net.parameters())
    functional_call(reference, params, (x,))  # one train-mode pass with the same generated tensors
    assert torch.allclose(net[1].running_mean, reference[1].running_mean)
    assert net[1].num_batches_tracked == 1


@pytest.mark.parametrize("activation,projector", [("identity", "dense"), ("tanh", "dense"),
                                                  ("identity", "hadamard")])
def test_smoothness_is_the_squared_jacobian_norm(activation: str, projector: str) -> None:
    net = small_bn_net()
    gain = "none" if projector == "hadamard" else "init_std"  # hadamard row norms are exact only in sum
    mapping = LatentMapping(net, "lwt", latent_dim=12, alpha=0.05, activation=activation, projector=projector,
                            gain=gain, latent_init_std=0.3)
    base = {k: v.detach() for k, v in net.named_parameters()}
    latents = [z.detach() for z in mapping.latents]

    def flat(*zs):
        return torch.cat([v.reshape(-1) for v in mapping(base, list(zs))[0].values()])

    jac = jacrev(flat, argnums=tuple(range(len(latents))))(*latents)
    expected = sum(j.square().sum() for j in jac)
    assert torch.allclose(mapping.smoothness(mapping(base, latents)[1]), expected, rtol=1e-4)


def test_alignment_uses_the_row_mean_of_the_modulated_weights() -> None:
    mapping = LatentMapping(small_bn_net(), "slvt", latent_dim=10, alpha=0.002, projector="dense", latent_init_std=1)
    z = mapping.latents[0].detach()
    w_mod = mapping.projectors[0].weight + 0.002 * z  # w_ij + alpha z_i for every row j
    cos = torch.nn.functional.cosine_similarity(z, w_mod.mean(0), dim=0)
    assert torch.allclose(mapping.alignment(), 1 - cos, atol=1e-5) and cos < 0.99
    zero = LatentMapping(small_bn_net(), "slvt", latent_dim=10)
    zero.alignment().backward()
    assert zero.latents[0].grad.abs().max() == 0


def test_paper_lambdas_collapse_and_uncertainty_weights_do_not() -> None:
    terms = {"stab": torch.tensor(0.5), "smooth": torch.tensor(2.0), "align": torch.tensor(0.1)}
    for scheme, lams in (("trainable", None), ("uncertainty", None)):
        weights = LossWeights(scheme, (0.1, 0.1, 0.1))
        opt = torch.optim.SGD(weights.parameters(), lr=0.5)
        for _ in range(2000):
            opt.zero_grad()
            weights(terms).backward()
            opt.step()
        lams = weights.lambdas().detach()
        if scheme == "trainable":
            assert (lams < 0.01).all()
        else:  # stationary point lambda_k = 1 / (2 L_k)
            assert torch.allclose(lams, torch.tensor([1.0, 0.25, 5.0]), rtol=1e-2)
