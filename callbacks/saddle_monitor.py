"""Saddle-dynamics instrumentation (spec 11.2): distances, KKT alignment of the saddle NCF, per-neuron balance,
plateau detection, active sets and weight heatmaps for ``lit_modules.SaddleDynamicsModule``."""
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor

from nets.neuron_pursuit.ncf import GrowthNCF, growth_problems


class SaddleNCF:
    """N(w_z) = sum_l sum_{j in G_z(l)} N_l(A_l[j], B_{l+1}[:, j]) with ybar and dH/dz taken at the saddle.

    The candidate-neuron NCFs N_l are the growth NCFs of the one-neuron-per-layer net at w_bar_n (spec 6),
    mean-normalised; neuron 0 of every hidden layer is the saddle's w_n, neurons 1.. are G_z.
    """

    def __init__(self, small_net: Any, x: Tensor, y: Tensor) -> None:
        self.power = small_net.power
        self.ncfs = [GrowthNCF(g, c, small_net.alpha, small_net.power) for g, c in growth_problems(small_net, x, y)]

    def rows(self, weights: list[Tensor]) -> list[Tensor]:
        """u_j = (A_l[j, :], B_{l+1}[:, j]) for every G_z neuron j of every hidden layer l."""
        rows = []
        for l, ncf in enumerate(self.ncfs):
            k_next = weights[l + 1].shape[0] if l + 1 == len(weights) - 1 else 1
            rows.append(torch.cat([weights[l][1:, :ncf.k_in], weights[l + 1][:k_next, 1:].T], 1))
        return rows

    def value_and_grad(self, weights: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """N(w_z) and its gradient, shaped like ``weights`` (zero on w_n and on the z-to-z blocks C_l)."""
        grads = [torch.zeros_like(w) for w in weights]
        total = weights[0].new_zeros(())
        for l, (ncf, u) in enumerate(zip(self.ncfs, self.rows(weights))):
            values, g = ncf.value_and_grad(u)
            total = total + values.sum()
            k_next = weights[l + 1].shape[0] if l + 1 == len(weights) - 1 else 1
            grads[l][1:, :ncf.k_in] = g[:, :ncf.k_in]
            grads[l + 1][:k_next, 1:] = g[:, ncf.k_in:].T
        return total, grads


def kkt_alignment(value_and_grad: Any, weights: list[Tensor], z_mask: list[Tensor]) -> tuple[float, float]:
    """(kappa, N(w_z / ||w_z||)): kappa = grad N . w~_z / ||grad N|| on the w_z coordinates (1 at a KKT point)."""
    w_z = torch.cat([w[m] for w, m in zip(weights, z_mask)])
    norm = w_z.norm()
    unit = [torch.where(m, w / norm, torch.zeros_like(w)) for w, m in zip(weights, z_mask)]
    value, grads = value_and_grad(unit)
    g = torch.cat([gr[m] for gr, m in zip(grads, z_mask)])
    return float(g @ (w_z / norm) / g.norm().clamp_min(1e-300)), float(value)


def neuron_stats(weights: list[Tensor], power: int) -> dict[str, Tensor]:
    """Per G_z neuron (layer l, neuron j >= 1): ||in||, ||out||, ||in||^2 / (p ||out||^2), share of ||w_z||^2.

    Shares are (||in||^2 + ||out||^2) over their sum across G_z, so they add up to 1 (C-block entries count for
    both neurons they connect)."""
    n_in = torch.stack([weights[l][1:].norm(dim=1) for l in range(len(weights) - 1)])  # (layers, width - 1)
    n_out = torch.stack([weights[l + 1][:, 1:].norm(dim=0) for l in range(len(weights) - 1)])
    mass = n_in.square() + n_out.square()
    return {"in": n_in, "out": n_out, "ratio": n_in.square() / (power * n_out.square()).clamp_min(1e-300),
            "share": mass / mass.sum().clamp_min(1e-300)}


def detect_plateaus(loss: list[float], window: int, tol: float,
                    level: Optional[float] = None) -> tuple[Optional[int], Optional[int]]:
    """Indices (i_1, i_2): i_1 is the last point of the first plateau, where the loss drop over the next ``window``
    points first exceeds ``tol`` (relative to ``level``, default the initial loss) and, if ``level`` is given,
    ends below level * (1 - tol) (so the relaxation of the perturbed w_n down to the saddle's loss is no escape);
    i_2 is the first later point where the drop over a window is below ``tol`` again. Drops are relative to a fixed
    level, not to loss[k]: a loss converging to 0 is a plateau too."""
    scale = abs(level if level is not None else loss[0])
    drops = [(loss[k] - loss[k + window]) / scale for k in range(len(loss) - window)]
    below = [level is None or loss[k + window] < level * (1 - tol) for k in range(len(drops))]
    i_1 = next((k for k, d in enumerate(drops) if d > tol and below[k]), None)
    if i_1 is None:
        return None, None
    i_2 = next((k for k in range(i_1 + window, len(drops)) if drops[k] < tol), None)
    return i_1, i_2


class SaddleMonitor(Callback):
    """Logs the spec 11.2 saddle quantities every Lightning step (``saddle/*``) and, at the end of training,
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
        if not hasattr(pl_module, "w_bar"):
            raise ValueError("SaddleMonitor needs lit_modules.SaddleDynamicsModule")

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
        record = self._measure(trainer, pl_module, step=trainer.global_step * pl_module.hparams.gd_steps_per_batch)
        pl_module.log_dict({f"saddle/{k}": v for k, v in record.items()}, on_step=False, on_epoch=True)
        if self.stop_after_escape and record["norm_loss"] < 1 - self.escape_drop:
            trainer.should_stop = True

    @torch.no_grad()
    def _measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> dict[str, float]:
        (x, y), loss_bar = self._data, self._loss_bar
        weights = [w.detach() for w in pl_module.net.weights]
        flat, w_bar, n_mask = pl_module.flat_weights(), pl_module.w_bar, pl_module.n_mask
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
