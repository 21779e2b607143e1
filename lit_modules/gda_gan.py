"""LightningModules of Balaji et al. (ICLR 2021): the GDA theory model and the WGAN-GP image GANs.

SyntheticGDAModule. The GDA theory model of Balaji et al. (ICLR 2021): G(z) = V relu(W z), D(x) = d^T x, R(d) = -|d|^2/2.

Full-batch training on fixed latent codes in float64, either simultaneous GDA (eq. 3, Theorem 2.1) or gradient
descent with the discriminator solved exactly (eq. 5, Theorem 2.2). Step sizes follow mu / eta >= 8 beta^2 with
beta measured (2 |J(W_0)|, the factor from the proof), the theoretical beta of A.6, or a given value.

WGANGPModule. WGAN-GP with manual optimisation, as used for the image GANs of Balaji et al. (ICLR 2021, App. D).

n_critic critic steps per generator step, gradient penalty weight 10, Adam(1e-4, (0.5, 0.999)), one real batch per
critic step. Lightning counts every optimiser step as a global step (#17958); here only generator steps count, so
``--trainer.max_steps`` is the number of generator steps (the paper's "iterations"). The module also keeps its own
``critic_iters`` / ``gen_iters`` counters (saved in checkpoints). Images arrive in [0, 1] (datamodule with
``normalize: false``) and are mapped to [-1, 1].
"""
import math
import time
from contextlib import contextmanager
from collections.abc import Iterator
from typing import Any, Literal, Optional

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from lit_modules.step_logging import WrittenStepLogging
from nets.gda_gan import theory

CONVERGED = 1e-12  # residual ratio treated as converged (float64 floor ~1e-15)


class SyntheticGDAModule(pl.LightningModule):
    """One-hidden-layer generator vs. linear discriminator, trained by full-batch GDA or optimal-D GD.

    Args:
        data_dim: m, must equal the datamodule's ``dim``.
        latent_dim: d, the latent dimension.
        k: hidden width (the overparameterisation knob).
        n_latent: number of fixed latent codes z_i.
        sigma_v, sigma_w, sigma_z: init scales of V, W_0 and z_i.
        solver: ``gda`` (simultaneous GDA, eq. 3) or ``optimal_d`` (GD on eq. 5).
        mu: discriminator step (GDA), 0 < mu <= 1.
        eta_bar: eta = eta_bar * mu / (8 beta^2) for GDA, eta_bar / (3 beta^2) for optimal_d.
        eta: a fixed generator step instead of the rule (the Fig. 2 confound of a k-independent step).
        beta: a given beta-hat; otherwise ``beta_rule`` decides.
        beta_rule: ``measured`` (2 |J(W_0)|) or ``theory`` (3 s_v s_z (sqrt k + 2 sqrt m) sqrt((d+(n-1)/pi)/2n)).
        update: ``autograd`` (one backward at (W_t, d_t)) or ``explicit`` (closed-form gradients).
        diag_every: log the Jacobian spectrum and drift (one m x k SVD) every this many steps.

    V, Z and W_0 are drawn from the global torch RNG (``--seed``); d_0 = 0.
    """

    def __init__(self, data_dim: int = 5, latent_dim: int = 4, k: int = 64, n_latent: int = 100,
                 sigma_v: float = 1.0, sigma_w: float = 1.0, sigma_z: float = 1.0,
                 solver: Literal["gda", "optimal_d"] = "gda", mu: float = 0.5, eta_bar: float = 1.0,
                 eta: Optional[float] = None, beta: Optional[float] = None,
                 beta_rule: Literal["measured", "theory"] = "measured",
                 update: Literal["autograd", "explicit"] = "autograd", diag_every: int = 100) -> None:
        super().__init__()
        for name, value in (("data_dim", data_dim), ("latent_dim", latent_dim), ("k", k), ("n_latent", n_latent),
                            ("diag_every", diag_every)):
            if value < 1:
                raise ValueError(f"model.{name} must be >= 1, got {value}")
        if min(sigma_v, sigma_w, sigma_z) <= 0:
            raise ValueError("model.sigma_v, sigma_w and sigma_z must be positive")
        if not 0 < mu <= 1:
            raise ValueError(f"model.mu must be in (0, 1], got {mu}")
        if eta_bar <= 0 or (eta is not None and eta <= 0) or (beta is not None and beta <= 0):
            raise ValueError("model.eta_bar, eta and beta must be positive")
        if solver not in ("gda", "optimal_d") or update not in ("autograd", "explicit") or \
                beta_rule not in ("measured", "theory"):
            raise ValueError(f"unknown solver/update/beta_rule: {solver}/{update}/{beta_rule}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        f64 = torch.float64
        self.register_buffer("V", sigma_v * torch.randn(data_dim, k, dtype=f64))
        self.register_buffer("Z", sigma_z * torch.randn(n_latent, latent_dim, dtype=f64))
        W0 = sigma_w * torch.randn(k, latent_dim, dtype=f64)
        self.register_buffer("W0", W0)
        self.W = nn.Parameter(W0.clone())
        self.d = nn.Parameter(torch.zeros(data_dim, dtype=f64))
        self.register_buffer("initial_residual", torch.tensor(math.nan, dtype=f64))
        # (step, residual ratio) when the ratio first fell below CONVERGED: the rate is measured up to there,
        # since at the float64 floor the residual stops shrinking
        self.register_buffer("converged", torch.tensor([-1.0, math.nan], dtype=f64))
        sigma_min0, sigma_max0 = theory.jacobian_extremes(W0, self.V, self.Z)
        # alpha as each theorem assumes it: sigma_min(J_0) >= alpha (A.4, GDA), >= 2 alpha (A.11, optimal D)
        self.alpha_hat = sigma_min0 if solver == "gda" else sigma_min0 / 2
        if beta is not None:
            self.beta_hat = beta
        elif beta_rule == "measured":
            self.beta_hat = 2 * sigma_max0
        else:
            self.beta_hat = theory.theory_beta(k, data_dim, latent_dim, n_latent, sigma_v, sigma_z)
        if eta is not None:
            self.eta = eta
        elif solver == "gda":
            self.eta = theory.eta_gda(mu, self.beta_hat, eta_bar)
        else:
            self.eta = theory.eta_optimal_d(self.beta_hat, eta_bar)
        # predicted geometric rate of the residual: (25) for GDA, (38) for optimal-D GD
        shrink = self.eta * self.alpha_hat ** 2
        self.rate_predicted = 1 - shrink / 2 if solver == "gda" else 1 - shrink
        self.monitor, self.final = None, {}

    # ------------------------------------------------------------------ model
    def generator_mean(self) -> Tensor:
        return theory.generator_mean(self.W, self.V, self.Z)

    def objective(self, x_bar: Tensor) -> Tensor:
        """L(W, d) (eq. 2) for GDA; |f(W) - x_bar|^2 / 2 (eq. 5) for optimal-D GD."""
        residual = x_bar - self.generator_mean()
        if self.hparams.solver == "gda":
            return self.d @ residual - 0.5 * self.d @ self.d
        return 0.5 * residual @ residual

    def explicit_grads(self, x_bar: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        residual = x_bar - self.generator_mean()
        if self.hparams.solver == "gda":
            return theory.grad_W(self.W, self.V, self.Z, self.d), residual - self.d
        return theory.grad_W(self.W, self.V, self.Z, residual), None

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # one optimiser, two groups: a single step() per iteration keeps global_step = iteration count
        groups = [{"params": [self.W], "lr": self.eta}]
        if self.hparams.solver == "gda":
            groups.append({"params": [self.d], "lr": self.hparams.mu, "maximize": True})
        return torch.optim.SGD(groups, lr=self.eta)

    # ------------------------------------------------------------------ training
    def on_fit_start(self) -> None:
        dim = getattr(self.trainer.datamodule, "dim", self.hparams.data_dim)
        if dim != self.hparams.data_dim:
            raise ValueError(f"model.data_dim ({self.hparams.data_dim}) differs from the data's dimension ({dim})")

    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        x_bar = batch.to(torch.float64).mean(0)
        if math.isnan(float(self.initial_residual)):
            with torch.no_grad():
                self.initial_residual.fill_(float(torch.linalg.vector_norm(x_bar - self.generator_mean())))
        opt = self.optimizers()
        opt.zero_grad()
        loss = self.objective(x_bar)
        if self.hparams.update == "autograd":
            self.manual_backward(loss)
        else:
            grad_w, grad_d = self.explicit_grads(x_bar)
            self.W.grad = grad_w
            if grad_d is not None:
                self.d.grad = grad_d  # ascent: SGD(maximize=True) adds lr * grad
        opt.step()
        # on fixed step multiples only, so an interrupted run logs the same rows; results() adds the final state
        step = self.global_step
        if step % self.trainer.log_every_n_steps == 0:  # state logging costs more than the step itself
            self.log_state(x_bar, loss.detach())
        if step % self.hparams.diag_every == 0:
            self.log_dict({f"train/{k}": v for k, v in self.diagnostics(x_bar).items()})

    @torch.no_grad()
    def state(self, x_bar: Tensor) -> dict[str, Tensor]:
        """Residual, discriminator and lazy-training quantities of the current (W, d)."""
        residual = self.generator_mean() - x_bar
        r_norm = torch.linalg.vector_norm(residual)
        d = self.d if self.hparams.solver == "gda" else -residual
        move = self.W - self.W0
        return {"residual": r_norm, "residual_ratio": r_norm / self.initial_residual,
                "mse": r_norm ** 2 / residual.numel(), "d_norm": torch.linalg.vector_norm(d),
                "state_norm": torch.sqrt(r_norm ** 2 + d @ d),
                "d_gap": torch.linalg.vector_norm(d + residual),
                "w_move_rel": torch.linalg.matrix_norm(move) / torch.linalg.matrix_norm(self.W0)}

    def log_state(self, x_bar: Tensor, loss: Tensor) -> None:
        values = {f"train/{k}": v for k, v in self.state(x_bar).items()}
        if self.converged[0] < 0 and values["train/residual_ratio"] < CONVERGED:
            self.converged.copy_(torch.tensor([self.global_step, float(values["train/residual_ratio"])]))
        values["train/objective"] = loss
        self.log_dict(values)

    @torch.no_grad()
    def diagnostics(self, x_bar: Tensor) -> dict[str, float]:
        """Jacobian spectrum and drift via V diag(D)/n, the movement in operator norm, the mean rate per step
        (up to the first logged step with residual ratio < CONVERGED, if any)."""
        sigma_min, sigma_max = theory.jacobian_extremes(self.W, self.V, self.Z)
        if self.converged[0] > 0:
            steps, ratio = float(self.converged[0]), float(self.converged[1])
        else:
            steps, ratio = max(self.global_step, 1), float(self.state(x_bar)["residual_ratio"])
        return {"sigma_min_J": sigma_min, "sigma_max_J": sigma_max,
                "jacobian_drift": theory.jacobian_drift(self.W, self.W0, self.V, self.Z),
                "w_move_op": float(torch.linalg.matrix_norm(self.W - self.W0, ord=2)),
                "rate_empirical": ratio ** (1 / steps)}

    def test_step(self, batch: Tensor, batch_idx: int) -> None:
        state = self.state(batch.to(torch.float64).mean(0))
        self.log_dict({"test/residual": state["residual"], "test/mse": state["mse"]})

    # ------------------------------------------------------------------ reporting
    def on_train_end(self) -> None:
        # captured here: the test stage may load an older checkpoint into the module
        x_bar = self.trainer.datamodule.data.to(self.W).mean(0)
        self.final = {**{f"train/{k}": float(v) for k, v in self.state(x_bar).items()},
                      **{f"train/{k}": v for k, v in self.diagnostics(x_bar).items()}, "iterations": self.global_step}

    def results(self) -> dict[str, Any]:
        """The state at the end of training (overriding the last logged train/* values), step sizes, constants."""
        h = self.hparams
        return {**self.final, "k": h.k, "m": h.data_dim, "latent_dim": h.latent_dim, "n_latent": h.n_latent,
                "solver": h.solver,
                "mu": h.mu if h.solver == "gda" else None, "eta": self.eta, "beta_hat": self.beta_hat,
                "alpha_hat": self.alpha_hat, "rate_predicted": self.rate_predicted,
                "alpha_theory": theory.theory_alpha(h.k, h.data_dim, h.latent_dim, h.n_latent, h.sigma_v, h.sigma_z),
                "beta_theory": theory.theory_beta(h.k, h.data_dim, h.latent_dim, h.n_latent, h.sigma_v, h.sigma_z)}



def flat_params(module: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()]).cpu()


def grad_norm(module: nn.Module) -> Tensor:
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.parameters() if p.grad is not None]))


@contextmanager
def uncounted(optimizer: Any) -> Iterator[None]:
    """Steps of a LightningOptimizer inside this block go through the strategy (precision plugin, as usual) but are
    not counted as global steps: Lightning's manual loop counts through these two hooks, which it installs for
    every training step."""
    before, after = optimizer._on_before_step, optimizer._on_after_step
    optimizer._on_before_step = optimizer._on_after_step = lambda: None
    try:
        yield
    finally:
        optimizer._on_before_step, optimizer._on_after_step = before, after


def critic_loss(critic: nn.Module, real: Tensor, fake: Tensor, gp_weight: float) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, Wasserstein estimate, gradient penalty) from one critic pass over [real; fake; interpolates]."""
    n = len(real)
    eps = torch.rand(n, *([1] * (real.ndim - 1)), device=real.device, dtype=real.dtype)
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
    # one forward over the concatenation: the critic has no batch-coupled layers, so this equals three passes
    out = critic(torch.cat([real, fake, mixed]))
    (grad,) = torch.autograd.grad(out[2 * n:].sum(), mixed, create_graph=True)
    penalty = (grad.flatten(1).norm(dim=1) - 1).square().mean()
    w_estimate = out[:n].mean() - out[n:2 * n].mean()
    return -w_estimate + gp_weight * penalty, w_estimate.detach(), penalty.detach()


class WGANGPModule(WrittenStepLogging, pl.LightningModule):
    """Generator vs. critic with the WGAN-GP loss; width lives in the nets (``k`` of each, App. C: k_g != k_d).

    Args:
        generator: maps (N, generator.latent_dim) noise to images in [-1, 1].
        critic: maps images to (N,) scores; must have no batch-coupled layers (BatchNorm) for the penalty.
        n_critic: critic steps per generator step.
        gp_weight: gradient-penalty weight lambda.
        lr, betas: Adam for both nets (the paper's DCGAN values).
        diag_every: every this many generator steps log gradient norms and |theta - theta_0| / |theta_0|.
        sample_every: every this many generator steps log a sample grid (fixed noise) to W&B.
        lr_decay: decay both learning rates linearly to 0 over ``--trainer.max_steps`` generator steps (WGAN-GP's
            ResNet recipe; the paper mentions none, so off by default).
        gen_batch_multiplier: generator batch = this times the real batch (WGAN-GP's ResNet recipe uses 2).
        pad: zero-pad real images by this many pixels per side to the nets' size (2: 28x28 Fashion-MNIST under
            the 32x32 DCGAN nets); generated images are cropped back for every evaluation (``sample``).

    The training length is ``--trainer.max_steps`` generator steps.
    """

    def __init__(self, generator: nn.Module, critic: nn.Module, n_critic: int = 5, gp_weight: float = 10.0,
                 lr: float = 1e-4, betas: tuple[float, float] = (0.5, 0.999), diag_every: int = 100,
                 sample_every: int = 1000, lr_decay: bool = False, gen_batch_multiplier: int = 1, pad: int = 0) -> None:
        super().__init__()
        if min(n_critic, diag_every, sample_every, gen_batch_multiplier) < 1:
            raise ValueError("model.n_critic, diag_every, sample_every and gen_batch_multiplier must be >= 1")
        if gp_weight < 0 or lr <= 0 or pad < 0:
            raise ValueError(f"model.gp_weight and pad must be >= 0 and lr > 0, got {gp_weight}, {pad}, {lr}")
        if not hasattr(generator, "latent_dim"):
            raise ValueError("model.generator needs a latent_dim attribute")
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in critic.modules()):
            raise ValueError("model.critic has BatchNorm, which breaks the per-sample gradient penalty")
        self.save_hyperparameters(ignore=["generator", "critic"])
        self.generator, self.critic = generator, critic
        self.automatic_optimization = False
        self.critic_iters = self.gen_iters = 0
        self.theta0: dict[str, Tensor] = {}
        self.register_buffer("fixed_noise", torch.randn(64, generator.latent_dim))
        self.monitor, self._last_gen_time, self.final = None, None, {}
        # per-step values since the last written log step (handed to self.log only on written steps)
        self.step_values: dict[str, Any] = {}
        # wall clock between consecutive generator steps (evaluations excluded) and how many were timed
        self.train_seconds, self.timed_steps = 0.0, 0

    # ------------------------------------------------------------------ setup
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        h = self.hparams
        return [torch.optim.Adam(self.critic.parameters(), lr=h.lr, betas=tuple(h.betas)),
                torch.optim.Adam(self.generator.parameters(), lr=h.lr, betas=tuple(h.betas))]

    def on_fit_start(self) -> None:
        data_hparams = getattr(self.trainer.datamodule, "hparams", {})
        if data_hparams.get("normalize", False):
            raise ValueError("WGANGPModule expects images in [0, 1]: set --data.init_args.normalize false")
        if self.hparams.lr_decay and self.trainer.max_steps < 1:
            raise ValueError("model.lr_decay needs --trainer.max_steps (the number of generator steps)")
        if not self.theta0:
            self.theta0 = {"generator": flat_params(self.generator), "critic": flat_params(self.critic)}

    def parameter_counts(self) -> dict[str, int]:
        g = sum(p.numel() for p in self.generator.parameters())
        d = sum(p.numel() for p in self.critic.parameters())
        return {"trainable_params": g + d, "total_params": g + d, "generator_params": g, "critic_params": d}

    # ------------------------------------------------------------------ training
    def noise(self, n: int) -> Tensor:
        return torch.randn(n, self.generator.latent_dim, device=self.device)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        real = batch[0] * 2 - 1
        if self.hparams.pad:
            real = nn.functional.pad(real, [self.hparams.pad] * 4, value=-1.0)  # -1 = black, the background
        opt_d, opt_g = self.optimizers()
        with torch.no_grad():
            fake = self.generator(self.noise(len(real)))
        loss_d, w_estimate, penalty = critic_loss(self.critic, real, fake, self.hparams.gp_weight)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        diag = (self.gen_iters + 1) % self.hparams.diag_every == 0
        if diag:
            self.step_values["train/grad_norm_critic"] = grad_norm(self.critic)
        with uncounted(opt_d):  # global_step (and so --trainer.max_steps) counts generator steps only
            opt_d.step()
        self.critic_iters += 1
        if self.critic_iters % self.hparams.n_critic == 0:
            # critic metrics of the step before each generator step
            self.step_values.update({"train/critic_loss": loss_d.detach(), "train/wasserstein": w_estimate,
                                     "train/gp": penalty})
            self.generator_step(opt_g, len(real) * self.hparams.gen_batch_multiplier, diag)
            if self.hparams.lr_decay:  # a function of the counters only, so resumed runs get the same rates
                for opt in (opt_d, opt_g):
                    for group in opt.param_groups:
                        group["lr"] = self.hparams.lr * max(0.0, 1 - self.gen_iters / self.trainer.max_steps)
        if self.logs_this_step():
            self.log_dict(self.step_values)
            self.step_values = {}
        return loss_d.detach()  # what NaNGuard checks (a non-finite generator shows up in the next critic loss)

    def generator_step(self, opt_g: Any, n: int, diag: bool) -> None:
        self.toggle_optimizer(opt_g)  # freezes the critic's parameters: no gradients are kept for them
        loss_g = -self.critic(self.generator(self.noise(n))).mean()
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        if diag:
            self.step_values["train/grad_norm_generator"] = grad_norm(self.generator)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        self.gen_iters += 1
        now = time.perf_counter()
        if self._last_gen_time is not None:
            self.train_seconds += now - self._last_gen_time
            self.timed_steps += 1
            self.step_values["train/sec_per_gen_iter"] = now - self._last_gen_time
        self._last_gen_time = now
        self.step_values.update({"train/gen_loss": loss_g.detach(), "train/gen_iters": float(self.gen_iters),
                                 "train/critic_iters": float(self.critic_iters)})
        if diag:
            self.step_values.update({f"train/rel_move_{n}": self.relative_move(n) for n in ("generator", "critic")})
        if self.gen_iters % self.hparams.sample_every == 0:
            self.log_samples()

    def reset_iteration_clock(self) -> None:
        """Start timing the next generator iteration afresh (after work that is not training, e.g. FID)."""
        self._last_gen_time = None

    def relative_move(self, name: str) -> float:
        """|theta_t - theta_0| / |theta_0|, the lazy-training diagnostic."""
        theta = flat_params(getattr(self, name))
        return float(torch.linalg.vector_norm(theta - self.theta0[name]) / torch.linalg.vector_norm(self.theta0[name]))

    @torch.no_grad()
    def sample(self, z: Tensor) -> Tensor:
        """Images in [0, 1] from noise, with BatchNorm in eval mode (running statistics; no state changes)."""
        was_training = self.generator.training
        self.generator.eval()
        images = (self.generator(z) + 1) / 2
        self.generator.train(was_training)
        if self.hparams.pad:
            p = self.hparams.pad
            images = images[..., p:-p, p:-p]
        return images.clamp(0, 1)

    def log_samples(self) -> None:
        from torchvision.utils import make_grid

        for logger in self.loggers:
            if isinstance(logger, pl.loggers.WandbLogger):
                grid = make_grid(self.sample(self.fixed_noise), nrow=8)
                logger.log_image("samples", [grid], step=self.global_step, caption=[f"gen_iter {self.gen_iters}"])

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Nothing per batch: the FID callback evaluates the final generator at the end of the test stage."""

    # ------------------------------------------------------------------ state
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["wgan_gp"] = {"critic_iters": self.critic_iters, "gen_iters": self.gen_iters,
                                 "theta0": self.theta0, "timing": (self.train_seconds, self.timed_steps)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["wgan_gp"]
        self.critic_iters, self.gen_iters, self.theta0 = state["critic_iters"], state["gen_iters"], state["theta0"]
        self.train_seconds, self.timed_steps = state.get("timing", (0.0, 0))

    def on_train_end(self) -> None:
        # captured here: the test stage may load an older checkpoint (weights and counters) into the module
        self.final = {"generator_steps": self.gen_iters, "critic_steps": self.critic_iters,
                      "sec_per_generator_step": self.train_seconds / max(self.timed_steps, 1),
                      **{f"final_rel_move_{n}": self.relative_move(n) for n in ("generator", "critic")}}

    def results(self) -> dict[str, Any]:
        return {**self.final, "k_generator": getattr(self.generator, "k", None),
                "k_critic": getattr(self.critic, "k", None)}
