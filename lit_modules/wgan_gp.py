"""WGAN-GP with manual optimisation, as used for the image GANs of Balaji et al. (ICLR 2021, App. D).

n_critic critic steps per generator step, gradient penalty weight 10, Adam(1e-4, (0.5, 0.999)), one real batch per
critic step. Lightning's global_step counts every optimiser step (critic and generator), so the module keeps its
own ``critic_iters`` / ``gen_iters`` counters (saved in checkpoints) and stops after ``iterations`` of the chosen
kind. Images arrive in [0, 1] (datamodule with ``normalize: false``) and are mapped to [-1, 1].
"""
import time
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch import Tensor, nn


def flat_params(module: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()]).cpu()


def grad_norm(module: nn.Module) -> Tensor:
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.parameters() if p.grad is not None]))


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


class WGANGPModule(pl.LightningModule):
    """Generator vs. critic with the WGAN-GP loss; width lives in the nets (``k`` of each, App. C: k_g != k_d).

    Args:
        generator: maps (N, generator.latent_dim) noise to images in [-1, 1].
        critic: maps images to (N,) scores; must have no batch-coupled layers (BatchNorm) for the penalty.
        n_critic: critic steps per generator step.
        gp_weight: gradient-penalty weight lambda.
        lr, betas: Adam for both nets (the paper's DCGAN values).
        iterations: training length, counted in ``count`` iterations (the paper's "300,000 iterations").
        count: ``generator`` or ``critic`` iterations.
        diag_every: every this many generator iterations log gradient norms and |theta - theta_0| / |theta_0|.
        sample_every: every this many generator iterations log a sample grid (fixed noise) to W&B.
        lr_decay: decay both learning rates linearly to 0 over ``iterations`` (WGAN-GP's ResNet recipe; the
            paper mentions none, so off by default).
        gen_batch_multiplier: generator batch = this times the real batch (WGAN-GP's ResNet recipe uses 2).
    """

    def __init__(self, generator: nn.Module, critic: nn.Module, n_critic: int = 5, gp_weight: float = 10.0,
                 lr: float = 1e-4, betas: tuple[float, float] = (0.5, 0.999), iterations: int = 300_000,
                 count: Literal["generator", "critic"] = "generator", diag_every: int = 100,
                 sample_every: int = 1000, lr_decay: bool = False, gen_batch_multiplier: int = 1) -> None:
        super().__init__()
        if min(n_critic, iterations, diag_every, sample_every, gen_batch_multiplier) < 1:
            raise ValueError("model.n_critic, iterations, diag_every, sample_every and gen_batch_multiplier "
                             "must be >= 1")
        if gp_weight < 0 or lr <= 0:
            raise ValueError(f"model.gp_weight must be >= 0 and lr > 0, got {gp_weight}, {lr}")
        if count not in ("generator", "critic"):
            raise ValueError(f"model.count must be 'generator' or 'critic', got {count!r}")
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

    # ------------------------------------------------------------------ setup
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        h = self.hparams
        return [torch.optim.Adam(self.critic.parameters(), lr=h.lr, betas=tuple(h.betas)),
                torch.optim.Adam(self.generator.parameters(), lr=h.lr, betas=tuple(h.betas))]

    def on_fit_start(self) -> None:
        data_hparams = getattr(self.trainer.datamodule, "hparams", {})
        if data_hparams.get("normalize", False):
            raise ValueError("WGANGPModule expects images in [0, 1]: set --data.init_args.normalize false")
        if not self.theta0:
            self.theta0 = {"generator": flat_params(self.generator), "critic": flat_params(self.critic)}

    def parameter_counts(self) -> dict[str, int]:
        g = sum(p.numel() for p in self.generator.parameters())
        d = sum(p.numel() for p in self.critic.parameters())
        return {"trainable_params": g + d, "total_params": g + d, "generator_params": g, "critic_params": d}

    # ------------------------------------------------------------------ training
    def noise(self, n: int) -> Tensor:
        return torch.randn(n, self.generator.latent_dim, device=self.device)

    def progress(self) -> float:
        """Fraction of the training length done, in the counted unit."""
        done_iters = self.gen_iters if self.hparams.count == "generator" else self.critic_iters
        return done_iters / self.hparams.iterations

    def done(self) -> bool:
        return self.progress() >= 1

    def training_step(self, batch: Any, batch_idx: int) -> None:
        if self.done():  # a resumed run that had already finished
            self.trainer.should_stop = True
            return
        real = batch[0] * 2 - 1
        opt_d, opt_g = self.optimizers()
        with torch.no_grad():
            fake = self.generator(self.noise(len(real)))
        loss_d, w_estimate, penalty = critic_loss(self.critic, real, fake, self.hparams.gp_weight)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        diag = (self.gen_iters + 1) % self.hparams.diag_every == 0
        if diag:
            self.log("train/grad_norm_critic", grad_norm(self.critic))
        opt_d.step()
        self.critic_iters += 1
        if self.critic_iters % self.hparams.n_critic == 0:
            # critic metrics of the step before each generator step: logging every critic step costs ~10% on CPU
            self.log_dict({"train/critic_loss": loss_d.detach(), "train/wasserstein": w_estimate, "train/gp": penalty})
            self.generator_step(opt_g, len(real) * self.hparams.gen_batch_multiplier, diag)
            if self.hparams.lr_decay:  # a function of the counters only, so resumed runs get the same rates
                for opt in (opt_d, opt_g):
                    for group in opt.param_groups:
                        group["lr"] = self.hparams.lr * max(0.0, 1 - self.progress())
        if self.done():
            self.trainer.should_stop = True

    def generator_step(self, opt_g: Any, n: int, diag: bool) -> None:
        self.toggle_optimizer(opt_g)  # freezes the critic's parameters: no gradients are kept for them
        loss_g = -self.critic(self.generator(self.noise(n))).mean()
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        if diag:
            self.log("train/grad_norm_generator", grad_norm(self.generator))
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        self.gen_iters += 1
        now = time.perf_counter()
        if self._last_gen_time is not None:
            self.log("train/sec_per_gen_iter", now - self._last_gen_time)
        self._last_gen_time = now
        self.log_dict({"train/gen_loss": loss_g.detach(), "train/gen_iters": float(self.gen_iters),
                       "train/critic_iters": float(self.critic_iters)})
        if diag:
            self.log_dict({f"train/rel_move_{name}": self.relative_move(name) for name in ("generator", "critic")})
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
                                 "theta0": self.theta0}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["wgan_gp"]
        self.critic_iters, self.gen_iters, self.theta0 = state["critic_iters"], state["gen_iters"], state["theta0"]

    def on_train_end(self) -> None:
        # captured here: the test stage may load an older checkpoint (weights and counters) into the module
        self.final = {"critic_iters": self.critic_iters, "gen_iters": self.gen_iters,
                      **{f"final_rel_move_{n}": self.relative_move(n) for n in ("generator", "critic")}}

    def results(self) -> dict[str, Any]:
        return {**self.final, "k_generator": getattr(self.generator, "k", None),
                "k_critic": getattr(self.critic, "k", None)}
