"""Neuron Pursuit (Kumar & Haupt) as Lightning callbacks: ``NeuronPursuit`` (Algorithm 1 with the Appendix C
settings) and ``SaddleMonitor`` (the saddle-dynamics measurements of Sec. 3, Figs. 1-4)."""
import time
from pathlib import Path
from typing import Any, Optional, Protocol

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.strategies import DDPStrategy
from torch import Tensor

from nets.neuron_pursuit.growable import GrowableNet
from nets.neuron_pursuit.ncf import (PGAResult, first_iteration_objective, growth_objective, growth_problems,
                                     pga, single_neuron_dim, split_single_neuron)
from nets.neuron_pursuit.saddle import SaddleNCF, detect_plateaus, kkt_alignment, neuron_stats


# ---------------------------------------------------------------------- what the callbacks need
class FullBatchData(Protocol):
    """The datamodule: the whole training and test sets as tensors (datamodules.FullBatchDataModule)."""

    def train_tensors(self) -> tuple[Tensor, Tensor]: ...

    def test_tensors(self) -> tuple[Tensor, Tensor]: ...


class Growable(Protocol):
    """The LightningModule that NeuronPursuit grows (lit_modules.NeuronPursuitModule)."""

    net: GrowableNet  # add_neuron, resize, balance, widths, weights, ...

    def prepare(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Data moved to the net's device and dtype."""

    def loss_fn(self, out: Tensor, y: Tensor) -> Tensor:
        """The training loss of outputs ``out`` (the one GD minimises)."""

    def errors(self, x: Tensor, y: Tensor) -> dict[str, float]:
        """``loss``, ``rel_err`` (and ``class_err``) of the current net on (x, y)."""

    def start_stage(self) -> None:
        """A new GD stage begins (after a growth, before the optimizer is rebuilt)."""

    def stage_summary(self) -> dict[str, float]:
        """Entries for the iteration's record at the end of a stage (e.g. lr halvings)."""


class NearSaddle(Protocol):
    """The LightningModule that SaddleMonitor measures (lit_modules.SaddleDynamicsModule)."""

    net: GrowableNet
    w_bar: Tensor  # the saddle, flat
    n_mask: Tensor  # True on w_n in the flat layout
    gd_steps_per_batch: int

    def prepare(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Data moved to the net's device and dtype."""

    def loss_fn(self, out: Tensor, y: Tensor) -> Tensor:
        """The training loss of outputs ``out``."""

    def restricted_net(self) -> GrowableNet:
        """The one-neuron-per-layer net at the saddle's w_bar_n."""


def protocol_members(protocol: type) -> list[str]:
    """Attribute and method names a class must have to satisfy ``protocol``."""
    names = set(protocol.__annotations__)
    names |= {k for k, v in vars(protocol).items() if callable(v) and not k.startswith("_")}
    return sorted(names)


def require(obj: Any, protocol: type, role: str, user: str, example: str) -> None:
    """One clear error naming everything ``obj`` lacks of ``protocol``; afterwards ``user`` calls, never probes."""
    missing = [name for name in protocol_members(protocol) if not hasattr(obj, name)]
    if "net" in protocol_members(protocol) and "net" not in missing and not isinstance(obj.net, GrowableNet):
        missing.append(f"net (a nets.neuron_pursuit.GrowableNet, got {type(obj.net).__name__})")
    if missing:
        raise ValueError(f"{user} needs a {role} satisfying {protocol.__name__} (e.g. {example}); "
                         f"{type(obj).__name__} lacks: {', '.join(missing)}")


class NeuronPursuit(Callback):
    """Grows ``pl_module.net`` (a ``nets.GrowableNet``) one neuron per NP iteration.

    Iteration 1 (at fit start) sets the one-neuron-per-layer net to delta times the best maximiser of
    the constrained NCF of Y. Every ``epochs_per_stage`` epochs (one GD stage) the callback measures the
    training error, stops if it is below the threshold or ``max_iterations`` are done, and otherwise adds
    the best neuron over (layer, restart) of the growth NCFs at scale delta = ``delta_rel`` * ||w||, with
    0.8 backtracking, then rebuilds the optimizer. Iteration counts include iteration 1.

    Args:
        epochs_per_stage: Lightning epochs per GD stage (stage GD steps = this * gd_steps_per_batch).
        restarts: PGA restarts H, batched on one tensor.
        pga_lr, pga_steps: PGA step and iterations in growth iterations.
        pga_lr_first, pga_steps_first: the same for iteration 1 (default: as above).
        delta_first: iteration-1 delta, backtracked against the loss at the origin.
        delta_rel: later delta = delta_rel * ||all weights||, backtracked against the pre-insertion loss.
        shrink, backtracks_first, backtracks_later: backtracking factor and maximum counts.
        max_iterations: NP iteration cap (31 in the paper).
        stop_rel_err: stop when the relative training error is below this.
        stop_class_err: if set, stop when the training classification error is at most this instead.
        balance: rebalance the hidden neurons before every growth (PVR; ``GrowableNet.balance``), logging the
            balance ratios ||in||^2 / (p ||out||^2) before and after.
        long_stage_epochs, long_stage_below_loss: if set, once a stage ends with training loss (mean squared
            error) below ``long_stage_below_loss``, every later stage lasts ``long_stage_epochs`` epochs
            (Gaussian tasks: 100k GD steps per iteration, 300k once the loss is < 0.05).
        seed: seed of the PGA starts (own generator, saved in checkpoints).
    """

    def __init__(self, epochs_per_stage: int = 70, restarts: int = 10, pga_lr: float = 0.2, pga_steps: int = 2500,
                 pga_lr_first: Optional[float] = None, pga_steps_first: Optional[int] = None,
                 delta_first: float = 0.25, delta_rel: float = 0.01, shrink: float = 0.8, backtracks_first: int = 4,
                 backtracks_later: int = 10, max_iterations: int = 31, stop_rel_err: float = 1e-3,
                 stop_class_err: Optional[float] = None, balance: bool = False,
                 long_stage_epochs: Optional[int] = None, long_stage_below_loss: float = 0.05, seed: int = 0) -> None:
        for name, value in (("epochs_per_stage", epochs_per_stage), ("restarts", restarts),
                            ("max_iterations", max_iterations)):
            if value < 1:
                raise ValueError(f"NeuronPursuit.{name} must be >= 1, got {value}")
        for name, value in (("pga_lr", pga_lr), ("delta_first", delta_first), ("delta_rel", delta_rel)):
            if value <= 0:
                raise ValueError(f"NeuronPursuit.{name} must be positive, got {value}")
        if pga_steps < 0 or backtracks_first < 0 or backtracks_later < 0:
            raise ValueError("NeuronPursuit.pga_steps and the backtrack counts must be >= 0")
        if long_stage_epochs is not None and long_stage_epochs < 1:
            raise ValueError(f"NeuronPursuit.long_stage_epochs must be >= 1, got {long_stage_epochs}")
        if not 0 < shrink < 1:
            raise ValueError(f"NeuronPursuit.shrink must be in (0, 1), got {shrink}")
        self.epochs_per_stage, self.restarts = epochs_per_stage, restarts
        self.pga_lr, self.pga_steps = pga_lr, pga_steps
        self.pga_lr_first = pga_lr if pga_lr_first is None else pga_lr_first
        self.pga_steps_first = pga_steps if pga_steps_first is None else pga_steps_first
        self.delta_first, self.delta_rel, self.shrink = delta_first, delta_rel, shrink
        self.backtracks_first, self.backtracks_later = backtracks_first, backtracks_later
        self.max_iterations, self.stop_rel_err, self.stop_class_err = max_iterations, stop_rel_err, stop_class_err
        self.balance = balance
        self.long_stage_epochs, self.long_stage_below_loss = long_stage_epochs, long_stage_below_loss
        self.stage_end = epochs_per_stage  # epochs completed when the current stage ends
        self.long_stages = False
        self.generator = torch.Generator().manual_seed(seed)
        self.iteration = 0
        self.history: list[dict[str, Any]] = []
        self.stop_reason: Optional[str] = None

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.world_size > 1 and not isinstance(trainer.strategy, DDPStrategy):
            raise ValueError("NeuronPursuit runs on one device or under DDP (--trainer.strategy ddp): rank 0 grows "
                             f"the net and broadcasts it; {type(trainer.strategy).__name__} is not supported")
        require(pl_module, Growable, "module", "NeuronPursuit", "lit_modules.NeuronPursuitModule")
        require(trainer.datamodule, FullBatchData, "datamodule", "NeuronPursuit", "datamodules.SparseFunctionDataModule")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.iteration == 0:
            self._on_rank_zero(trainer, pl_module, self._first_iteration)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch + 1 == self.stage_end and self.stop_reason is None:
            self._on_rank_zero(trainer, pl_module, self._end_stage)

    def _on_rank_zero(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: Any) -> None:
        """Run an NP step; under DDP only rank 0 runs it and the others copy its net, NP state and stop flag.

        The ranks' nets are identical before (same data, all-reduced gradients), so only the decision travels.
        """
        if trainer.world_size == 1:
            return step(trainer, pl_module)
        net = pl_module.net
        if trainer.is_global_zero:
            step(trainer, pl_module)
        state = trainer.strategy.broadcast({"np": self.state_dict(), "should_stop": trainer.should_stop,
                                            "weights": [w.detach().cpu() for w in net.weights]}, src=0)
        if trainer.is_global_zero:
            return
        widths = [w.shape[0] for w in state["weights"][:-1]]
        grown = widths != net.widths
        if grown:
            net.resize(widths)
        with torch.no_grad():
            for w, saved in zip(net.weights, state["weights"]):
                w.copy_(saved)
        self.load_state_dict(state["np"])
        trainer.should_stop = state["should_stop"]
        if grown:
            pl_module.start_stage()
            trainer.strategy.setup_optimizers(trainer)

    @property
    def stage_epochs(self) -> int:
        """Length of the next stage in epochs."""
        return self.long_stage_epochs if self.long_stages else self.epochs_per_stage

    def state_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "history": self.history, "stop_reason": self.stop_reason,
                "generator": self.generator.get_state(), "stage_end": self.stage_end,
                "long_stages": self.long_stages}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.iteration, self.history = state_dict["iteration"], state_dict["history"]
        self.stop_reason = state_dict["stop_reason"]
        self.generator.set_state(state_dict["generator"])
        # checkpoints from before variable stage lengths: every stage was epochs_per_stage long
        self.long_stages = state_dict.get("long_stages", False)
        self.stage_end = state_dict.get("stage_end", self.epochs_per_stage * max(self.iteration, 1))

    def results(self) -> dict[str, Any]:
        """Entries for results.json (collected by train.py like every callback's ``results()``)."""
        return {"np_iterations": self.iteration, "np_stop_reason": self.stop_reason,
                "np_not_applicable": self.stop_reason == "ncf_nonpositive", "np_history": self.history}

    # ------------------------------------------------------------------ NP steps
    def _data(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str = "train") -> tuple[Tensor, Tensor]:
        data = trainer.datamodule
        return pl_module.prepare(*(data.train_tensors() if split == "train" else data.test_tensors()))

    def _pga(self, objective: Any, dim: int, first: bool, like: Tensor) -> PGAResult:
        lr, steps = (self.pga_lr_first, self.pga_steps_first) if first else (self.pga_lr, self.pga_steps)
        return pga(objective, dim, self.restarts, lr, steps, self.generator, like.dtype, like.device)

    @torch.no_grad()
    def _first_iteration(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        net = pl_module.net
        if net.widths != [1] * (net.depth - 1):
            raise ValueError(f"Neuron Pursuit starts from one neuron per hidden layer, got widths {net.widths}")
        x, y = self._data(trainer, pl_module)
        start = time.perf_counter()
        res = self._pga(first_iteration_objective(net, x, y), single_neuron_dim(net), True, x)
        h = int(res.values.argmax())
        n_max = float(res.values[h])
        record = {"iteration": 1, "ncf": [[v] for v in res.values.tolist()], "layer": 0, "n_max": n_max,
                  "kkt": float(res.kkt[h]), "resampled": res.resampled, "pga_seconds": time.perf_counter() - start}
        self.iteration = 1
        if n_max <= 0:
            return self._not_applicable(trainer, record)
        loss_0 = float(pl_module.loss_fn(torch.zeros_like(y), y))
        best = [w[0] for w in split_single_neuron(net, res.points[h:h + 1])]

        def place(delta: float) -> None:
            for w, b in zip(net.weights, best):
                w.copy_(delta * b)

        self._insert(pl_module, record, place, x, y, self.delta_first, loss_0, self.backtracks_first,
                     degree=net.homogeneity)

    @torch.no_grad()
    def _grow(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        net = pl_module.net
        x, y = self._data(trainer, pl_module)
        start = time.perf_counter()
        balance_log = self._balance(net) if self.balance else {}
        results = [self._pga(growth_objective(g, c, net.alpha, net.power), g.shape[1] + c.shape[1], False, x)
                   for g, c in growth_problems(net, x, y)]
        values = torch.stack([r.values for r in results])  # (layers, restarts)
        l, h = divmod(int(values.argmax()), values.shape[1])
        n_max = float(values[l, h])
        k_in = net.weights[l].shape[1]
        a, b = results[l].points[h, :k_in], results[l].points[h, k_in:]
        self.iteration += 1
        record = {"iteration": self.iteration, "ncf": values.T.tolist(), "layer": l + 1, "n_max": n_max,
                  "kkt": float(results[l].kkt[h]), "balance_ratio": float(a.square().sum() / (net.power * b.square().sum())),
                  "resampled": sum(r.resampled for r in results), "pga_seconds": time.perf_counter() - start,
                  **balance_log}
        if n_max <= 0:
            self.iteration -= 1  # nothing was added
            return self._not_applicable(trainer, record)
        delta = self.delta_rel * float(torch.cat([w.flatten() for w in net.weights]).norm())
        loss_prev = float(pl_module.loss_fn(net(x), y))
        net.add_neuron(l + 1, torch.zeros_like(a), torch.zeros_like(b))

        def place(d: float) -> None:
            net.weights[l][-1].copy_(d * a)
            net.weights[l + 1][:, -1].copy_(d * b)

        self._insert(pl_module, record, place, x, y, delta, loss_prev, self.backtracks_later, degree=net.power + 1)
        pl_module.start_stage()  # lr schedule of the new stage (before the optimizer reads lr)
        trainer.strategy.setup_optimizers(trainer)  # the grown weights are new Parameter objects

    @staticmethod
    def _balance(net: Any) -> dict[str, Any]:
        """Rebalance ``net``; the extreme ratios ||in||^2 / (p ||out||^2) before and after, and the sweeps."""
        def extremes(tag: str) -> dict[str, float]:
            ratios = torch.cat(net.balance_ratios())
            ratios = ratios[ratios.isfinite() & (ratios > 0)]  # dead neurons have no ratio
            if not len(ratios):
                return {}
            return {f"balance_min_{tag}": float(ratios.min()), f"balance_max_{tag}": float(ratios.max())}

        before = extremes("before")
        sweeps = net.balance()
        return {**before, **extremes("after"), "balance_sweeps": sweeps}

    def _insert(self, pl_module: pl.LightningModule, record: dict[str, Any], place: Any, x: Tensor, y: Tensor,
                delta: float, loss_ref: float, backtracks: int, degree: int) -> None:
        """Place the neuron at scale delta, shrinking delta while the loss exceeds ``loss_ref`` (App. C; docs/neuron_pursuit.md "Backtracking")."""
        for t in range(backtracks + 1):
            place(delta)
            loss = float(pl_module.loss_fn(pl_module.net(x), y))
            if loss <= loss_ref or t == backtracks:
                break
            delta *= self.shrink
        # first-order drop of mean((H - Y)^2) for a mean-normalised NCF value n_max (Lemmas 12-13)
        predicted = 2 * delta ** degree * record["n_max"] / y.shape[1]
        record.update(delta=delta, backtracks=t, loss_before=loss_ref, loss_after=loss, predicted_drop=predicted,
                      actual_drop=loss_ref - loss, widths=pl_module.net.widths, stage_epochs=self.stage_epochs)
        self.history.append(record)

    def _not_applicable(self, trainer: pl.Trainer, record: dict[str, Any]) -> None:
        record["not_applicable"] = True
        self.history.append(record)
        self.stop_reason = "ncf_nonpositive"
        trainer.should_stop = True
        pl.utilities.rank_zero_warn(f"NP iteration {record['iteration']}: max NCF {record['n_max']:.3g} <= 0, "
                                    "Neuron Pursuit is not applicable (stopping)")

    @torch.no_grad()
    def _end_stage(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Finish the current NP iteration: record its errors, then stop or grow."""
        train = pl_module.errors(*self._data(trainer, pl_module))
        record = self.history[-1]
        record.update({f"train_{k}": v for k, v in train.items()})
        record.update({f"test_{k}": v for k, v in pl_module.errors(*self._data(trainer, pl_module, "test")).items()})
        net = pl_module.net
        if record["layer"]:  # how far the newest neuron has grown from its O(delta) start
            l = record["layer"]
            record["new_neuron_norm"] = float(torch.cat([net.weights[l - 1][-1], net.weights[l][:, -1]]).norm())
        record.update(pl_module.stage_summary())
        if self.long_stage_epochs is not None and train["loss"] < self.long_stage_below_loss:
            self.long_stages = True
        self._log(pl_module, record)
        if self.stop_class_err is not None:
            done = train["class_err"] <= self.stop_class_err
        else:
            done = train["rel_err"] < self.stop_rel_err
        if done or self.iteration >= self.max_iterations:
            self.stop_reason = "converged" if done else "max_iterations"
            trainer.should_stop = True
            return
        self.stage_end += self.stage_epochs
        self._grow(trainer, pl_module)

    def _log(self, pl_module: pl.LightningModule, record: dict[str, Any]) -> None:
        scalars = {f"np/{k}": float(v) for k, v in record.items() if isinstance(v, (int, float))}
        for l, width in enumerate(record["widths"], 1):
            scalars[f"np/width_{l}"] = float(width)
        if record["layer"]:  # record["ncf"] is (restarts, layers); iteration 1 has one joint problem
            for l, column in enumerate(zip(*record["ncf"]), 1):
                scalars[f"np/ncf_max_layer_{l}"] = max(column)
        pl_module.log_dict(scalars, on_step=False, on_epoch=True)


class SaddleMonitor(Callback):
    """Logs the saddle quantities of Figs. 1-4 every Lightning step (``saddle/*``) and, at the end of training,
    finds the plateaus i_1/i_2, the active G_z sets there, and writes ``saddle_heatmaps.png`` and
    ``saddle_curves.png`` into the run folder (results.json gets the summary).

    Args:
        window: plateau-detection window, in logged points (Lightning steps).
        plateau_tol: relative loss drop over ``window`` below which the loss is on a plateau.
        active_share: a G_z neuron is active when its share of ||w_z||^2 exceeds this.
        escape_drop: the escape step is the first logged step with L(w)/L(w_bar) < 1 - escape_drop.
        plots: write the PNGs at the end of training.
        stop_after_escape: stop training at the escape step (delta sweeps need only the escape time).
    """

    def __init__(self, window: int = 20, plateau_tol: float = 0.01, active_share: float = 0.02,
                 escape_drop: float = 0.1, plots: bool = True, stop_after_escape: bool = False) -> None:
        if window < 1 or plateau_tol <= 0 or not 0 < active_share < 1 or not 0 < escape_drop < 1:
            raise ValueError("SaddleMonitor needs window >= 1, plateau_tol > 0 and active_share, escape_drop in (0, 1)")
        self.window, self.plateau_tol, self.active_share = window, plateau_tol, active_share
        self.escape_drop, self.plots, self.stop_after_escape = escape_drop, plots, stop_after_escape
        self.history: list[dict[str, float]] = []
        self.snapshots: list[Tensor] = []
        self.ncf: Optional[SaddleNCF] = None
        self._data: tuple[Tensor, Tensor] = (torch.empty(0), torch.empty(0))
        self._loss_bar = float("nan")
        self.summary: dict[str, Any] = {}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "snapshots": self.snapshots}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history, self.snapshots = state_dict["history"], state_dict["snapshots"]

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        require(pl_module, NearSaddle, "module", "SaddleMonitor", "lit_modules.SaddleDynamicsModule")
        require(trainer.datamodule, FullBatchData, "datamodule", "SaddleMonitor", "datamodules.SparseFunctionDataModule")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        x, y = pl_module.prepare(*trainer.datamodule.train_tensors())
        saddle = pl_module.restricted_net()
        self.ncf = SaddleNCF(saddle, x, y)
        with torch.no_grad():  # fixed for the run: the data and L(w_bar)
            self._data, self._loss_bar = (x, y), float(pl_module.loss_fn(saddle(x), y))
        if not self.history:  # the initial point (not logged: Lightning logs from training hooks only)
            self._measure(trainer, pl_module, step=0)

    @torch.no_grad()
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        record = self._measure(trainer, pl_module, step=trainer.global_step * pl_module.gd_steps_per_batch)
        pl_module.log_dict({f"saddle/{k}": v for k, v in record.items()}, on_step=False, on_epoch=True)
        if self.stop_after_escape and record["norm_loss"] < 1 - self.escape_drop:
            trainer.should_stop = True

    @torch.no_grad()
    def _measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> dict[str, float]:
        (x, y), loss_bar = self._data, self._loss_bar
        weights = [w.detach() for w in pl_module.net.weights]
        flat, w_bar, n_mask = pl_module.net.flat(), pl_module.w_bar, pl_module.n_mask
        z_mask = [m.view_as(w) for m, w in zip((~n_mask).split([w.numel() for w in weights]), weights)]
        kappa, ncf_value = kkt_alignment(self.ncf.value_and_grad, weights, z_mask)
        w_z_norm = float(flat[~n_mask].norm())
        record = {"gd_step": float(step), "norm_loss": float(pl_module.loss_fn(pl_module.net(x), y)) / loss_bar,
                  "dist": float((flat - w_bar).norm() / w_bar.norm()), "w_z_norm": w_z_norm,
                  "w_n_dist": float((flat - w_bar)[n_mask].norm()), "kappa": kappa, "ncf": ncf_value}
        for l in range(1, len(weights) - 1):  # z-to-z blocks C_l, which Lemma 9 sends to 0 in direction
            record[f"c{l + 1}_rel"] = float(weights[l][1:, 1:].norm()) / w_z_norm
        stats = neuron_stats(weights, pl_module.net.power)
        for key, table in stats.items():
            for l, row in enumerate(table, 1):
                for j, v in enumerate(row.tolist(), 2):  # neuron 1 of every layer is w_n
                    record[f"l{l}n{j}_{key}"] = v
        self.history.append(record)
        self.snapshots.append(flat.cpu())
        return record

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.summary = self.summarize()
        if self.plots and trainer.is_global_zero and trainer.log_dir:
            self.plot(Path(trainer.log_dir), pl_module)

    # ------------------------------------------------------------------ summary
    def active_set(self, k: int) -> list[str]:
        """'l<layer>n<neuron>' of the G_z neurons whose share of ||w_z||^2 exceeds ``active_share`` at point k."""
        rec = self.history[k]
        return sorted(key[:-len("_share")] for key, v in rec.items()
                      if key.endswith("_share") and v > self.active_share)

    def summarize(self) -> dict[str, Any]:
        loss = [r["norm_loss"] for r in self.history]
        i_1, i_2 = detect_plateaus(loss, self.window, self.plateau_tol, level=1.0)
        escape = next((r["gd_step"] for r in self.history if r["norm_loss"] < 1 - self.escape_drop), None)
        out: dict[str, Any] = {"saddle_escape_step": escape, "saddle_final_kappa": self.history[-1]["kappa"],
                               "saddle_final_norm_loss": loss[-1]}
        for name, k in (("i_1", i_1), ("i_2", i_2)):
            out[f"saddle_{name}"] = None if k is None else self.history[k]["gd_step"]
            if k is not None:
                out[f"saddle_active_{name}"] = self.active_set(k)
                out[f"saddle_kappa_{name}"] = self.history[k]["kappa"]
                out[f"saddle_norm_loss_{name}"] = loss[k]
        if i_1 is not None and i_2 is not None:
            out["saddle_active_sets_agree"] = out["saddle_active_i_1"] == out["saddle_active_i_2"]
        return out

    def results(self) -> dict[str, Any]:
        return self.summary

    # ------------------------------------------------------------------ figures
    def plot(self, folder: Path, pl_module: pl.LightningModule) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = [r["gd_step"] for r in self.history]
        fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
        axes[0].plot(steps, [r["norm_loss"] for r in self.history], label="L(w)/L(w̄)")
        axes[0].plot(steps, [r["dist"] for r in self.history], label="||w − w̄||/||w̄||")
        axes[1].semilogy(steps, [r["w_z_norm"] for r in self.history], label="||w_z||")
        axes[1].semilogy(steps, [max(r["w_n_dist"], 1e-300) for r in self.history], label="||w_n − w̄_n||")
        axes[2].plot(steps, [r["kappa"] for r in self.history], label="κ (KKT alignment)")
        shares = [k for k in self.history[-1] if k.endswith("_share")]
        for k in shares:
            axes[3].plot(steps, [r[k] for r in self.history], label=k[:-6] if max(r[k] for r in self.history)
                         > self.active_share else None)
        axes[3].set_title("share of ||w_z||² per G_z neuron")
        for ax in axes:
            for key, style in (("saddle_i_1", ":"), ("saddle_i_2", "--")):
                if self.summary.get(key) is not None:
                    ax.axvline(self.summary[key], color="gray", linestyle=style)
            ax.set_xlabel("GD step")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "saddle_curves.png", dpi=110)
        plt.close(fig)
        self.plot_heatmaps(folder / "saddle_heatmaps.png", pl_module)

    def plot_heatmaps(self, path: Path, pl_module: pl.LightningModule) -> None:
        import matplotlib.pyplot as plt

        points = [("init", 0)] + [(name, self._index(self.summary.get(f"saddle_{name}")))
                                  for name in ("i_1", "i_2")]
        points = [(name, k) for name, k in points if k is not None]
        shapes = [w.shape for w in pl_module.net.weights]
        fig, axes = plt.subplots(len(points), len(shapes), figsize=(4 * len(shapes), 3 * len(points)), squeeze=False)
        for row, (name, k) in enumerate(points):
            mats = self.snapshots[k].split([s.numel() for s in shapes])
            for col, (m, s) in enumerate(zip(mats, shapes)):
                image = axes[row][col].imshow(m.view(s).abs().numpy(), aspect="auto", cmap="viridis")
                axes[row][col].set_title(f"|W_{col + 1}| at {name} (step {int(self.history[k]['gd_step'])})",
                                         fontsize=9)
                fig.colorbar(image, ax=axes[row][col])
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def _index(self, step: Optional[float]) -> Optional[int]:
        if step is None:
            return None
        return next(k for k, r in enumerate(self.history) if r["gd_step"] == step)
