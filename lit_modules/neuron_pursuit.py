"""Full-batch gradient descent on a growable homogeneous network: the GD stages of Neuron Pursuit
(``NeuronPursuitModule``) and GD started near a sparse saddle (``SaddleDynamicsModule``, paper Sec. 3-4, Figs. 1-4)."""
import inspect
from typing import Any, Callable, Optional, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor

from nets.neuron_pursuit.growable import GrowableNet
from nets.neuron_pursuit.ncf import first_iteration_objective, pga, single_neuron_dim, split_single_neuron


class HalvingSchedule:
    """PVR's GD schedule: every ``every`` steps, if the loss rose since the last check, restore that check's
    weights and halve lr (at most ``max_halvings`` times per stage); otherwise the check becomes the new reference.
    """

    def __init__(self, lr: float, every: Optional[int], max_halvings: int) -> None:
        self.base_lr, self.every, self.max_halvings = lr, every, max_halvings
        self.events: list[dict[str, Any]] = []  # every halving of the run
        self.restart()

    def restart(self) -> None:
        self.lr, self.halvings, self.steps = self.base_lr, 0, 0
        self.ref_loss: Optional[float] = None
        self.ref_weights: Optional[list[Tensor]] = None

    @torch.no_grad()
    def begin(self, params: list[Tensor], loss: Callable[[], Tensor]) -> None:
        """Take the stage's starting point as the first reference (restarts if the widths changed unannounced)."""
        shapes = [p.shape for p in params]
        if self.ref_weights is not None and [w.shape for w in self.ref_weights] != shapes:
            self.restart()
        if self.ref_loss is None:
            self.ref_loss, self.ref_weights = float(loss()), [p.detach().clone() for p in params]

    @torch.no_grad()
    def tick(self, params: list[Tensor], loss: Callable[[], Tensor]) -> bool:
        """Count one GD step (``params`` already updated); True when lr was halved and the weights restored."""
        self.steps += 1
        if self.steps % self.every:
            return False
        current = float(loss())
        if current > self.ref_loss and self.halvings < self.max_halvings:
            for p, saved in zip(params, self.ref_weights):
                p.copy_(saved)
            self.lr, self.halvings = self.lr / 2, self.halvings + 1
            self.events.append({"stage_step": self.steps, "loss": current, "ref_loss": self.ref_loss, "lr": self.lr})
            return True
        self.ref_loss, self.ref_weights = current, [p.detach().clone() for p in params]
        return False

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("lr", "halvings", "steps", "ref_loss", "ref_weights", "events")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)


class NeuronPursuitModule(pl.LightningModule):
    """Runs ``gd_steps_per_batch`` plain full-batch GD steps per Lightning step on ``GrowableNet``.

    The loss is the mean over all entries of (H(X) - Y)^2 (torch's MSELoss). With one full batch per
    epoch, one epoch is ``gd_steps_per_batch`` GD steps; the ``NeuronPursuit`` callback grows the net at
    stage boundaries. Without that callback this is the small-initialisation GD baseline
    (``init_radius`` > 0 draws the whole parameter vector uniformly on a sphere of that radius).

    Args:
        in_features, out_features, depth, alpha, power, widths: the network (see ``nets.GrowableNet``).
        lr: GD step size.
        gd_steps_per_batch: GD steps per Lightning step.
        init_radius: 0 leaves the weights at zero (NP initialises them); else the baseline's init radius.
        classification: also report the argmax classification error (one-hot targets).
        stop_rel_err: if set, stop when the relative training error falls below it (the GD baseline's rule;
            under Neuron Pursuit the callback decides instead).
        lr_check_every: if set, every this many GD steps of a stage compare the training loss with the previous
            check (or the stage start); if it rose, halve lr and restore the weights of that check (PVR, App. C).
        lr_max_halvings: at most this many halvings per stage; ``start_stage`` (called by ``NeuronPursuit`` after
            every growth) restores ``lr`` and the count.
    """

    growing = True  # widths change during training: train.py export writes state dicts only
    figure_curves = {"width per layer (growth)": ("np/width_",)}

    def __init__(self, in_features: int, out_features: int = 1, depth: int = 3, alpha: float = 0.0, power: int = 1,
                 widths: Optional[Sequence[int]] = None, lr: float = 0.005, gd_steps_per_batch: int = 1000,
                 init_radius: float = 0.0, classification: bool = False,
                 stop_rel_err: Optional[float] = None, lr_check_every: Optional[int] = None,
                 lr_max_halvings: int = 4) -> None:
        super().__init__()
        if lr <= 0:
            raise ValueError(f"model.lr must be positive, got {lr}")
        if gd_steps_per_batch < 1:
            raise ValueError(f"model.gd_steps_per_batch must be >= 1, got {gd_steps_per_batch}")
        if init_radius < 0:
            raise ValueError(f"model.init_radius must be >= 0, got {init_radius}")
        if lr_check_every is not None and lr_check_every < 1:
            raise ValueError(f"model.lr_check_every must be >= 1, got {lr_check_every}")
        if lr_max_halvings < 0:
            raise ValueError(f"model.lr_max_halvings must be >= 0, got {lr_max_halvings}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.net = GrowableNet(in_features, out_features, depth, alpha, power, widths)
        self.monitor, self.monitor_mode = None, "min"  # NP tests the last weights
        self._test_sums: dict[str, float] = {}
        self.lr_schedule = HalvingSchedule(lr, lr_check_every, lr_max_halvings)
        if init_radius > 0:
            self._sphere_init(init_radius)

    @torch.no_grad()
    def _sphere_init(self, radius: float) -> None:
        flat = torch.cat([w.flatten() for w in self.net.weights])
        flat = torch.randn_like(flat)
        flat *= radius / flat.norm()
        for w, chunk in zip(self.net.weights, flat.split([w.numel() for w in self.net.weights])):
            w.copy_(chunk.view_as(w))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    # ------------------------------------------------------------------ metrics
    def prepare(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        dtype = self.net.weights[0].dtype
        if x.shape[1] != self.net.in_features or y.shape[1] != self.net.out_features:
            raise ValueError(f"data has {x.shape[1]} inputs and {y.shape[1]} outputs but the model was configured "
                             f"with in_features={self.net.in_features}, out_features={self.net.out_features}")
        return x.to(self.device, dtype), y.to(self.device, dtype)

    @staticmethod
    def loss_fn(out: Tensor, y: Tensor) -> Tensor:
        return (out - y).square().mean()

    @torch.no_grad()
    def errors(self, x: Tensor, y: Tensor) -> dict[str, float]:
        """Loss, relative error ||f - H|| / ||f|| and (classification) argmax error on (x, y)."""
        out = self.net(x)
        err = {"loss": float(self.loss_fn(out, y)), "rel_err": float((out - y).norm() / y.norm())}
        if self.hparams.classification:
            err["class_err"] = float((out.argmax(1) != y.argmax(1)).double().mean())
        return err

    # ------------------------------------------------------------------ training
    @property
    def world_size(self) -> int:
        return self._trainer.world_size if self._trainer is not None else 1

    def _global_grads(self, grads: list[Tensor], share: float) -> list[Tensor]:
        """Sum over ranks of share * local mean gradient = the full-batch mean gradient (one all-reduce)."""
        flat = torch.cat([g.flatten() for g in grads]).mul_(share)
        torch.distributed.all_reduce(flat)
        return [f.view_as(g) for f, g in zip(flat.split([g.numel() for g in grads]), grads)]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = self.prepare(*batch)
        # under DDP every rank holds the full batch and the same net (NeuronPursuit broadcasts rank 0's growth);
        # each takes the gradient of its contiguous shard and one all-reduce per step gives the full-batch one
        world = self.world_size
        xs, ys = (x, y) if world == 1 else (x.tensor_split(world)[self.global_rank],
                                            y.tensor_split(world)[self.global_rank])
        share = len(xs) / len(x)
        opt = self.optimizers()
        params = list(self.net.weights)
        schedule = self.lr_schedule
        loss_now = lambda: self.loss_fn(self.net(x), y)  # noqa: E731
        if schedule.every is not None:
            schedule.begin(params, loss_now)
        for k in range(self.hparams.gd_steps_per_batch):
            loss, grads = self.net.mse_and_grads(xs, ys)
            if world > 1:
                grads = self._global_grads(grads, share)
            for p, g in zip(params, grads):
                p.grad = g
            # the raw optimizer skips Lightning's per-step wrapping; the last step goes through it once so
            # that global_step counts Lightning steps
            (opt if k == self.hparams.gd_steps_per_batch - 1 else opt.optimizer).step()
            if schedule.every is not None and schedule.tick(params, loss_now):
                for group in opt.optimizer.param_groups:
                    group["lr"] = schedule.lr
                event = schedule.events[-1]
                rank_zero_info(f"GD step {event['stage_step']} of the stage: loss {event['loss']:.6g} > "
                               f"{event['ref_loss']:.6g} at the previous check; weights reset, lr halved to "
                               f"{event['lr']:.6g} ({schedule.halvings}/{schedule.max_halvings})")
        err = self.errors(x, y)
        if schedule.every is not None:
            err.update(lr=schedule.lr, lr_halvings=float(schedule.halvings))
        self.log_dict({f"train/{k}": v for k, v in err.items()}, on_step=False, on_epoch=True, prog_bar=True)
        if self.hparams.stop_rel_err is not None and err["rel_err"] < self.hparams.stop_rel_err:
            self.trainer.should_stop = True
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # plain GD is stateless, so rebuilding it after every growth loses nothing
        return torch.optim.SGD(self.net.parameters(), lr=self.lr_schedule.lr, foreach=True)

    def start_stage(self) -> None:
        """A new GD stage (after growth): lr back to its start value, halving count and reference cleared."""
        self.lr_schedule.restart()

    # ------------------------------------------------------------------ test (relative error over the whole set)
    def on_test_epoch_start(self) -> None:
        self._test_sums = {"sq_err": 0.0, "sq_y": 0.0, "wrong": 0.0, "n": 0.0}

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        if self.world_size == 1:
            self._accumulate_test(*batch)

    def _accumulate_test(self, x: Tensor, y: Tensor) -> None:
        x, y = self.prepare(x, y)
        out = self.net(x)
        sums = self._test_sums
        sums["sq_err"] += float((out - y).square().sum())
        sums["sq_y"] += float(y.square().sum())
        sums["n"] += len(y)
        if self.hparams.classification:
            sums["wrong"] += float((out.argmax(1) != y.argmax(1)).sum())

    def on_test_epoch_end(self) -> None:
        if self.world_size > 1:  # a DistributedSampler pads with duplicates: every rank evaluates the whole set
            for batch in self.trainer.datamodule.test_dataloader():
                self._accumulate_test(*batch)
        s = self._test_sums
        metrics = {"test/rel_err": (s["sq_err"] / s["sq_y"]) ** 0.5,
                   "test/loss": s["sq_err"] / (s["n"] * self.net.out_features)}
        if self.hparams.classification:
            metrics["test/class_err"] = s["wrong"] / s["n"]
        self.log_dict(metrics)

    # ------------------------------------------------------------------ grown widths in checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["np_widths"] = self.net.widths
        checkpoint["np_lr_schedule"] = self.lr_schedule.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.prepare_for_checkpoint(checkpoint)
        if "np_lr_schedule" in checkpoint:
            self.lr_schedule.load_state_dict(checkpoint["np_lr_schedule"])

    def prepare_for_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resize the net to the checkpoint's widths so its state dict loads (called before loading)."""
        widths = checkpoint.get("np_widths")
        if widths is not None and list(widths) != self.net.widths:
            self.net.resize(widths)

    def results(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"widths": self.net.widths}
        if self.lr_schedule.every is not None:
            extra["lr_halving_events"] = self.lr_schedule.events
        data = self.trainer.datamodule
        if hasattr(data, "train_tensors"):  # also when NP stopped before any GD step logged it
            extra.update({f"train/{k}": v for k, v in self.errors(*self.prepare(*data.train_tensors())).items()})
        return extra


class SaddleDynamicsModule(NeuronPursuitModule):
    """Full-batch GD on a width-``width`` net started at (w_bar_n + delta n, delta z) near a sparse saddle.

    At fit start (once; a resumed run restores it from the checkpoint) the saddle is built as spec 10.8 says:
    a one-neuron-per-layer net is started at ``pre_delta`` times the dominant KKT point of its constrained NCF
    (NP iteration 1), trained by ``pre_steps`` GD steps and polished by Newton steps to a near-zero gradient; it is
    embedded as neuron 1 of every hidden layer of the wide net (all other rows/columns zero), then w_n is moved
    by delta n and the zero block set to delta z (n, z random unit vectors from ``saddle_seed``).
    The GD stage itself is ``NeuronPursuitModule``'s (``gd_steps_per_batch`` steps per Lightning step).

    Args:
        width: hidden width of every hidden layer (10 in Figs. 1-4).
        delta: perturbation size of w_n and w_z.
        pre_delta, pre_lr, pre_steps: iteration-1 scale, GD step and GD steps of the one-neuron net.
        pre_restarts, pre_pga_lr, pre_pga_steps: PGA for its constrained NCF.
        pre_newton_steps: Newton polishing steps (0 = none).
        saddle_seed: seed of the PGA starts and of n, z.
        Other arguments as in ``NeuronPursuitModule``.
    """

    def __init__(self, in_features: int = 20, out_features: int = 1, depth: int = 3, alpha: float = 1.0,
                 power: int = 2, width: int = 10, lr: float = 0.01, gd_steps_per_batch: int = 100,
                 delta: float = 0.01, pre_delta: float = 0.5, pre_lr: Optional[float] = None, pre_steps: int = 20000,
                 pre_restarts: int = 10, pre_pga_lr: float = 0.2, pre_pga_steps: int = 2500,
                 pre_newton_steps: int = 20, saddle_seed: int = 0) -> None:
        if width < 2:
            raise ValueError(f"model.width must be >= 2 (one saddle neuron plus at least one zero neuron), got {width}")
        if delta <= 0 or pre_delta <= 0:
            raise ValueError(f"model.delta and model.pre_delta must be positive, got {delta}, {pre_delta}")
        if pre_steps < 0 or pre_newton_steps < 0:
            raise ValueError("model.pre_steps and model.pre_newton_steps must be >= 0")
        super().__init__(in_features=in_features, out_features=out_features, depth=depth, alpha=alpha, power=power,
                         widths=[width] * (depth - 1), lr=lr, gd_steps_per_batch=gd_steps_per_batch)
        # LightningCLI hands save_hyperparameters() this class's config only; the parent reads its own hparams
        parent = inspect.signature(NeuronPursuitModule.__init__).parameters.values()
        for p in parent:
            if p.default is not inspect.Parameter.empty:
                self.hparams.setdefault(p.name, p.default)
        self.hparams["widths"] = [width] * (depth - 1)
        numel = sum(w.numel() for w in self.net.weights)
        # the saddle is part of the state dict, so a resumed run does not rebuild it
        self.register_buffer("w_bar", torch.zeros(numel, dtype=torch.float64))
        self.register_buffer("n_mask", self._n_mask())
        self.register_buffer("built", torch.zeros((), dtype=torch.bool))
        self.saddle_info: dict[str, Any] = {}

    def _n_mask(self) -> Tensor:
        """True on w_n: neuron 1 of every hidden layer (row 0 of W_1, entry [0, 0] of W_2..W_{L-1}, column 0 of W_L)."""
        masks = [torch.zeros(w.shape, dtype=torch.bool) for w in self.net.weights]
        masks[0][0, :] = True
        for m in masks[1:-1]:
            m[0, 0] = True
        masks[-1][:, 0] = True
        return torch.cat([m.flatten() for m in masks])

    # ------------------------------------------------------------------ flat views
    def flat_weights(self) -> Tensor:
        return torch.cat([w.detach().flatten() for w in self.net.weights])

    @torch.no_grad()
    def set_flat(self, flat: Tensor) -> None:
        for w, chunk in zip(self.net.weights, flat.split([w.numel() for w in self.net.weights])):
            w.copy_(chunk.view_as(w))

    def restricted_net(self) -> GrowableNet:
        """The one-neuron-per-layer net with the saddle's w_bar_n (the saddle NCF is its growth NCF)."""
        h = self.hparams
        small = GrowableNet(h.in_features, h.out_features, h.depth, h.alpha, h.power, dtype=self.w_bar.dtype)
        self.set_small(small, self.w_bar[self.n_mask])
        return small.to(self.device)

    @staticmethod
    @torch.no_grad()
    def set_small(small: GrowableNet, flat_n: Tensor) -> None:
        for w, chunk in zip(small.weights, flat_n.split([w.numel() for w in small.weights])):
            w.copy_(chunk.view_as(w))

    # ------------------------------------------------------------------ saddle construction
    def on_fit_start(self) -> None:
        if not bool(self.built):
            self.build_saddle(*self.prepare(*self.trainer.datamodule.train_tensors()))

    @torch.no_grad()
    def build_saddle(self, x: Tensor, y: Tensor) -> None:
        """Train the one-neuron net to a stationary point, embed it, and perturb (see the class docstring)."""
        h = self.hparams
        gen = torch.Generator().manual_seed(h.saddle_seed)
        small = GrowableNet(h.in_features, h.out_features, h.depth, h.alpha, h.power).to(x.device)
        res = pga(first_iteration_objective(small, x, y), single_neuron_dim(small), h.pre_restarts, h.pre_pga_lr,
                  h.pre_pga_steps, gen, x.dtype, x.device)
        best = int(res.values.argmax())
        if float(res.values[best]) <= 0:
            raise ValueError("the constrained NCF of y is <= 0 for the one-neuron net: no saddle to build")
        for w, b in zip(small.weights, split_single_neuron(small, res.points[best:best + 1])):
            w.copy_(h.pre_delta * b[0])
        lr = h.pre_lr or h.lr
        for _ in range(h.pre_steps):
            _, grads = small.mse_and_grads(x, y)
            torch._foreach_add_(list(small.weights), grads, alpha=-lr)
        self._polish(small, x, y)
        loss, grads = small.mse_and_grads(x, y)
        flat_n = torch.cat([w.flatten() for w in small.weights])
        w_bar = torch.zeros_like(self.w_bar)
        w_bar[self.n_mask] = flat_n
        self.w_bar.copy_(w_bar)
        n = torch.randn(int(self.n_mask.sum()), generator=gen, dtype=w_bar.dtype).to(w_bar.device)
        z = torch.randn(int((~self.n_mask).sum()), generator=gen, dtype=w_bar.dtype).to(w_bar.device)
        start = w_bar.clone()
        start[self.n_mask] += h.delta * n / n.norm()
        start[~self.n_mask] = h.delta * z / z.norm()
        self.set_flat(start)
        self.built.fill_(True)
        self.saddle_info = {"saddle_loss": float(loss), "saddle_ncf_y": float(res.values[best]),
                            "saddle_grad_norm": float(torch.cat([g.flatten() for g in grads]).norm()),
                            "saddle_norm": float(flat_n.norm())}

    def _polish(self, small: GrowableNet, x: Tensor, y: Tensor) -> None:
        """Newton steps with a backtracking line search on the few weights of the one-neuron net, so that w_bar_n
        is stationary to ~1e-13 (pseudo-inverse: the rescaling symmetry makes the Hessian singular)."""
        sizes, shapes = [w.numel() for w in small.weights], [w.shape for w in small.weights]

        def loss_of(flat: Tensor) -> Tensor:
            out = x
            ws = [c.view(s) for c, s in zip(flat.split(sizes), shapes)]
            for w in ws[:-1]:
                out = small.sigma(out @ w.T)
            return (out @ ws[-1].T - y).square().mean()

        flat = torch.cat([w.detach().flatten() for w in small.weights])
        with torch.enable_grad():
            for _ in range(self.hparams.pre_newton_steps):
                grad = torch.func.grad(loss_of)(flat)
                if float(grad.norm()) < 1e-14:
                    break
                evals, evecs = torch.linalg.eigh(torch.func.hessian(loss_of)(flat))
                # |eigenvalues| keep the step a descent direction away from the minimum's basin
                inv = torch.where(evals.abs() > 1e-12 * evals.abs().max(), 1 / evals.abs(), torch.zeros_like(evals))
                step, now = evecs @ (inv * (evecs.T @ grad)), float(loss_of(flat))
                t = 1.0
                while float(loss_of(flat - t * step)) > now and t > 1e-6:
                    t /= 2
                if t <= 1e-6:
                    break
                flat = flat - t * step
        self.set_small(small, flat)

    # ------------------------------------------------------------------ results
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["saddle_info"] = self.saddle_info

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.saddle_info = checkpoint.get("saddle_info", {})

    def results(self) -> dict[str, Any]:
        return {**super().results(), **self.saddle_info}
