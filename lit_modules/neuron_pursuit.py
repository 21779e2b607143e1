"""Full-batch gradient descent on a growable homogeneous network: the GD stages of Neuron Pursuit
(``NeuronPursuitModule``) and GD started near a sparse saddle (``SaddleDynamicsModule``, paper Sec. 3-4, Figs. 1-4).

Both are composed of the same parts: a ``GrowableNet``, a ``HalvingSchedule`` (the lr) and the GD loop
``gd_steps`` (``nets/neuron_pursuit/``); ``GrowableGDModule`` is the Lightning glue they share, built from those
parts (it has no hyperparameters of its own, each module saves its own constructor's).
"""
from typing import Any, Optional, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor

from callbacks.neuron_pursuit import FullBatchData, require
from nets.neuron_pursuit.gd import HalvingSchedule, gd_steps
from nets.neuron_pursuit.growable import GrowableNet
from nets.neuron_pursuit.saddle import train_single_neuron_net


class GrowableGDModule(pl.LightningModule):
    """``gd_steps_per_batch`` plain full-batch GD steps per Lightning step on ``net``, loss mean((H(X) - Y)^2).

    With one full batch per epoch, one epoch is ``gd_steps_per_batch`` GD steps. Test metrics: ``test/rel_err``
    ||f - H|| / ||f|| over the whole test set, ``test/loss`` and (``classification``) ``test/class_err``.

    Args:
        net: the network.
        schedule: the GD step size (and PVR's halving rule, ``HalvingSchedule``).
        gd_steps_per_batch: GD steps per Lightning step.
        classification: also report the argmax classification error (one-hot targets).
        stop_rel_err: if set, stop when the relative training error falls below it (the GD baseline's rule;
            under Neuron Pursuit the callback decides instead).
    """

    def __init__(self, net: GrowableNet, schedule: HalvingSchedule, gd_steps_per_batch: int,
                 classification: bool = False, stop_rel_err: Optional[float] = None) -> None:
        super().__init__()
        if gd_steps_per_batch < 1:
            raise ValueError(f"model.gd_steps_per_batch must be >= 1, got {gd_steps_per_batch}")
        self.automatic_optimization = False
        self.net, self.lr_schedule = net, schedule
        self.gd_steps_per_batch, self.classification, self.stop_rel_err = gd_steps_per_batch, classification, stop_rel_err
        self.monitor, self.monitor_mode = None, "min"  # the last weights are tested
        self._test_sums: dict[str, float] = {}

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def setup(self, stage: str) -> None:
        require(self.trainer.datamodule, FullBatchData, "datamodule", type(self).__name__,
                "datamodules.SparseFunctionDataModule")

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
        if self.classification:
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
        if world == 1:
            gradients = lambda: self.net.mse_and_grads(x, y)  # noqa: E731
        else:
            xs, ys = x.tensor_split(world)[self.global_rank], y.tensor_split(world)[self.global_rank]

            def gradients() -> tuple[Tensor, list[Tensor]]:
                loss, grads = self.net.mse_and_grads(xs, ys)
                return loss, self._global_grads(grads, len(xs) / len(x))

        schedule, halvings = self.lr_schedule, len(self.lr_schedule.events)
        loss = gd_steps(list(self.net.weights), gradients, self.gd_steps_per_batch, schedule,
                        lambda: self.loss_fn(self.net(x), y))
        for event in schedule.events[halvings:]:
            rank_zero_info(f"GD step {event['stage_step']} of the stage: loss {event['loss']:.6g} > "
                           f"{event['ref_loss']:.6g} at the previous check; weights reset, lr halved to "
                           f"{event['lr']:.6g} ({schedule.halvings}/{schedule.max_halvings})")
        # the weights moved in gd_steps; this step has no gradients (SGD leaves the weights alone) and only makes
        # Lightning count one step, so global_step, checkpoints and resume count Lightning steps
        self.optimizers().step()
        err = self.errors(x, y)
        if schedule.every is not None:
            err.update(lr=schedule.lr, lr_halvings=float(schedule.halvings))
        self.log_dict({f"train/{k}": v for k, v in err.items()}, on_step=False, on_epoch=True, prog_bar=True)
        if self.stop_rel_err is not None and err["rel_err"] < self.stop_rel_err:
            self.trainer.should_stop = True
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # the GD update itself is gd_steps' (see training_step); rebuilt by NeuronPursuit after every growth
        return torch.optim.SGD(self.net.parameters(), lr=self.lr_schedule.lr)

    def start_stage(self) -> None:
        """A new GD stage (after growth): lr back to its start value, halving count and reference cleared."""
        self.lr_schedule.restart()

    def stage_summary(self) -> dict[str, float]:
        """The lr schedule at the end of a stage, for NeuronPursuit's per-iteration record (empty without one)."""
        schedule = self.lr_schedule
        return {} if schedule.every is None else {"lr_halvings": schedule.halvings, "lr_end": schedule.lr}

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
        if self.classification:
            sums["wrong"] += float((out.argmax(1) != y.argmax(1)).sum())

    def on_test_epoch_end(self) -> None:
        if self.world_size > 1:  # a DistributedSampler pads with duplicates: every rank evaluates the whole set
            for batch in self.trainer.datamodule.test_dataloader():
                self._accumulate_test(*batch)
        s = self._test_sums
        metrics = {"test/rel_err": (s["sq_err"] / s["sq_y"]) ** 0.5,
                   "test/loss": s["sq_err"] / (s["n"] * self.net.out_features)}
        if self.classification:
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
        # also when NP stopped before any GD step logged them
        train = self.errors(*self.prepare(*self.trainer.datamodule.train_tensors()))
        return {**extra, **{f"train/{k}": v for k, v in train.items()}}


class NeuronPursuitModule(GrowableGDModule):
    """Full-batch GD on ``GrowableNet``; the ``NeuronPursuit`` callback grows the net at stage boundaries.
    Without that callback this is the small-initialisation GD baseline (``init_radius`` > 0 draws the whole
    parameter vector uniformly on a sphere of that radius).

    Args:
        in_features, out_features, depth, alpha, power, widths: the network (see ``nets.neuron_pursuit.GrowableNet``).
        lr: GD step size.
        gd_steps_per_batch: GD steps per Lightning step.
        init_radius: 0 leaves the weights at zero (NP initialises them); else the baseline's init radius.
        classification, stop_rel_err: see ``GrowableGDModule``.
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
        if lr <= 0:
            raise ValueError(f"model.lr must be positive, got {lr}")
        if init_radius < 0:
            raise ValueError(f"model.init_radius must be >= 0, got {init_radius}")
        if lr_check_every is not None and lr_check_every < 1:
            raise ValueError(f"model.lr_check_every must be >= 1, got {lr_check_every}")
        if lr_max_halvings < 0:
            raise ValueError(f"model.lr_max_halvings must be >= 0, got {lr_max_halvings}")
        super().__init__(GrowableNet(in_features, out_features, depth, alpha, power, widths),
                         HalvingSchedule(lr, lr_check_every, lr_max_halvings), gd_steps_per_batch, classification,
                         stop_rel_err)
        self.save_hyperparameters()
        if init_radius > 0:
            flat = torch.randn_like(self.net.flat())
            self.net.set_flat(flat * (init_radius / flat.norm()))


class SaddleDynamicsModule(GrowableGDModule):
    """Full-batch GD on a width-``width`` net started at (w_bar_n + delta n, delta z) near a sparse saddle.

    At fit start (once; a resumed run restores it from the checkpoint) the saddle is built as
    docs/neuron_pursuit.md ("Saddle construction") says: a one-neuron-per-layer net is started at ``pre_delta``
    times the dominant KKT point of its constrained NCF (NP iteration 1), trained by ``pre_steps`` GD steps and
    polished by Newton steps to a near-zero gradient (``nets.neuron_pursuit.saddle.train_single_neuron_net``); it
    is embedded as neuron 1 of every hidden layer of the wide net (all other rows/columns zero), then w_n is moved
    by delta n and the zero block set to delta z (n, z random unit vectors from ``saddle_seed``).

    Args:
        in_features, out_features, depth, alpha, power: the network (see ``nets.neuron_pursuit.GrowableNet``).
        width: hidden width of every hidden layer (10 in Figs. 1-4).
        lr, gd_steps_per_batch: GD step size and GD steps per Lightning step.
        delta: perturbation size of w_n and w_z.
        pre_delta, pre_lr, pre_steps: iteration-1 scale, GD step (default ``lr``) and GD steps of the one-neuron net.
        pre_restarts, pre_pga_lr, pre_pga_steps: PGA for its constrained NCF.
        pre_newton_steps: Newton polishing steps (0 = none).
        saddle_seed: seed of the PGA starts and of n, z.
    """

    def __init__(self, in_features: int = 20, out_features: int = 1, depth: int = 3, alpha: float = 1.0,
                 power: int = 2, width: int = 10, lr: float = 0.01, gd_steps_per_batch: int = 100,
                 delta: float = 0.01, pre_delta: float = 0.5, pre_lr: Optional[float] = None, pre_steps: int = 20000,
                 pre_restarts: int = 10, pre_pga_lr: float = 0.2, pre_pga_steps: int = 2500,
                 pre_newton_steps: int = 20, saddle_seed: int = 0) -> None:
        if width < 2:
            raise ValueError(f"model.width must be >= 2 (one saddle neuron plus at least one zero neuron), got {width}")
        if lr <= 0 or delta <= 0 or pre_delta <= 0:
            raise ValueError(f"model.lr, model.delta and model.pre_delta must be positive, got {lr}, {delta}, "
                             f"{pre_delta}")
        if pre_steps < 0 or pre_newton_steps < 0:
            raise ValueError("model.pre_steps and model.pre_newton_steps must be >= 0")
        super().__init__(GrowableNet(in_features, out_features, depth, alpha, power, [width] * (depth - 1)),
                         HalvingSchedule(lr, None, 0), gd_steps_per_batch)
        self.save_hyperparameters()
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

    def single_neuron_net(self) -> GrowableNet:
        """A one-neuron-per-layer net of this module's shape (zero weights)."""
        h = self.hparams
        return GrowableNet(h.in_features, h.out_features, h.depth, h.alpha, h.power, dtype=self.w_bar.dtype)

    def restricted_net(self) -> GrowableNet:
        """The one-neuron-per-layer net with the saddle's w_bar_n (the saddle NCF is its growth NCF)."""
        small = self.single_neuron_net()
        small.set_flat(self.w_bar[self.n_mask].cpu())
        return small.to(self.device)

    # ------------------------------------------------------------------ saddle construction
    def on_fit_start(self) -> None:
        if not bool(self.built):
            self.build_saddle(*self.prepare(*self.trainer.datamodule.train_tensors()))

    @torch.no_grad()
    def build_saddle(self, x: Tensor, y: Tensor) -> None:
        """Train the one-neuron net to a stationary point, embed it, and perturb (see the class docstring)."""
        h = self.hparams
        gen = torch.Generator().manual_seed(h.saddle_seed)
        small = self.single_neuron_net().to(x.device)
        info = train_single_neuron_net(small, x, y, gen, h.pre_delta, h.pre_lr or h.lr, h.pre_steps, h.pre_restarts,
                                       h.pre_pga_lr, h.pre_pga_steps, h.pre_newton_steps)
        flat_n = small.flat()
        w_bar = torch.zeros_like(self.w_bar)
        w_bar[self.n_mask] = flat_n
        self.w_bar.copy_(w_bar)
        n = torch.randn(int(self.n_mask.sum()), generator=gen, dtype=w_bar.dtype).to(w_bar.device)
        z = torch.randn(int((~self.n_mask).sum()), generator=gen, dtype=w_bar.dtype).to(w_bar.device)
        start = w_bar.clone()
        start[self.n_mask] += h.delta * n / n.norm()
        start[~self.n_mask] = h.delta * z / z.norm()
        self.net.set_flat(start)
        self.built.fill_(True)
        self.saddle_info = {**info, "saddle_norm": float(flat_n.norm())}

    # ------------------------------------------------------------------ results
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["saddle_info"] = self.saddle_info

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.saddle_info = checkpoint.get("saddle_info", {})

    def results(self) -> dict[str, Any]:
        return {**super().results(), **self.saddle_info}
