"""Full-batch gradient descent on the sum loss 1/2 ||f - y||^2 in float64 (Gulcu 2019, eqs. 2.1, 2.5)."""
import math
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from nets.resnet_width.ntk import eig_extremes, ntk

SUCCESS = 1e-8  # a run succeeds when L_T <= SUCCESS * L_0 (docs/resnet_width.md)
FIT_FROM = 1e-4  # the contraction fit starts once L_t <= FIT_FROM * L_0, past the fast modes


class FullBatchGD(pl.LightningModule):
    """Plain GD (no momentum, weight decay, schedule or clipping) of a scalar-output ``net`` on the full batch.

    The step is ``lr`` if given, else ``lr_scale / lambda_max(K_0)`` with K_0 the NTK at initialisation. The
    datamodule must offer ``full_batch() -> (x, y)``; a net with ``set_output(y)`` (the ResNet's fixed output
    vector) gets the training labels before anything else runs.

    Args:
        net: scalar-output network; converted to float64.
        lr: absolute step size eta (overrides ``lr_scale``).
        lr_scale: c in eta = c / lambda_max(K_0); the linearised dynamics are stable for c < 2.
        stop_ratio: stop once L_t <= stop_ratio * L_0 (None: run all steps).

    ``results()`` also reports the convergence readouts of docs/resnet_width.md: ``success`` (1.0 if
    L_T <= 1e-8 L_0), ``steps_to_1e-8``, and the fitted per-step contraction ``rate_measured`` =
    (L_b/L_a)^(1/(b-a)) between the first step a with L <= 1e-4 L_0 (past the fast modes) and the first step b with
    L <= 1e-8 L_0 (or the end), against ``rate_predicted`` = (1 - eta lambda_min(K_a))^2.
    """

    def __init__(self, net: nn.Module, lr: Optional[float] = None, lr_scale: float = 1.0,
                 stop_ratio: Optional[float] = 1e-10) -> None:
        super().__init__()
        if lr is not None and lr <= 0:
            raise ValueError(f"model.lr must be positive, got {lr}")
        if lr_scale <= 0:
            raise ValueError(f"model.lr_scale must be positive, got {lr_scale}")
        if stop_ratio is not None and not 0 < stop_ratio < 1:
            raise ValueError(f"model.stop_ratio must lie in (0, 1), got {stop_ratio}")
        self.save_hyperparameters(ignore=["net"])
        self.net = net.double()
        self.automatic_optimization = False
        self.monitor = None  # test the last weights
        # measured at theta_0 in setup(); buffers, so a resumed run keeps the same eta and references
        for name in ("eta", "loss_start", "lambda_min_start", "lambda_max_start"):
            self.register_buffer(name, torch.tensor(math.nan, dtype=torch.float64))
        self.losses: list[float] = []  # L(theta_t) for every step t run, in the checkpoint
        self.fit_lambda_min = math.nan  # lambda_min(K_a) at the start a of the contraction fit
        self.final: dict[str, float] = {}

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.to(torch.float64)).reshape(-1)

    def residual(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        return self(x) - y.to(torch.float64).reshape(-1)

    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        full_batch = getattr(self.trainer.datamodule, "full_batch", None)
        if not callable(full_batch):
            raise ValueError(f"FullBatchGD needs a datamodule with full_batch(); {type(self.trainer.datamodule).__name__} "
                             "has none (use datamodules.SphereDataModule)")
        x, y = full_batch()
        if getattr(self.net, "in_features", x.shape[1]) != x.shape[1]:
            raise ValueError(f"the net takes {self.net.in_features} input features but the data have d={x.shape[1]}; "
                             "set --model.net.init_args.in_features to data.d")
        if hasattr(self.net, "set_output"):
            self.net.set_output(y.to(torch.float64))
        lam_min, lam_max = eig_extremes(ntk(self.net, x.to(torch.float64)))
        with torch.no_grad():
            self.loss_start.fill_(0.5 * self.residual((x, y)).pow(2).sum())
        self.lambda_min_start.fill_(lam_min)
        self.lambda_max_start.fill_(lam_max)
        self.eta.fill_(self.hparams.lr if self.hparams.lr is not None else self.hparams.lr_scale / lam_max)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.net.parameters(), lr=float(self.eta))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        optimizer = self.optimizers()
        loss = 0.5 * self.residual(batch).pow(2).sum()  # the sum, not the mean: eq. (2.5), docs/resnet_width.md
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        self.log("train/loss", loss)
        self.losses.append(loss.item())
        if math.isnan(self.fit_lambda_min) and self.losses[-1] <= FIT_FROM * float(self.loss_start):
            self.fit_lambda_min = eig_extremes(ntk(self.net, batch[0].to(torch.float64)))[0]
        ratio = self.hparams.stop_ratio
        if ratio is not None and loss.item() <= ratio * float(self.loss_start):
            self.trainer.should_stop = True
        return loss.detach()

    def on_train_end(self) -> None:
        x, y = self.trainer.datamodule.full_batch()
        x = x.to(self.device)
        with torch.no_grad():
            loss = 0.5 * float(self.residual((x, y.to(self.device))).pow(2).sum())
        lam_min, lam_max = eig_extremes(ntk(self.net, x.to(torch.float64)))
        self.final = {"train/loss_end": loss, "ntk/lambda_min_end": lam_min, "ntk/lambda_max_end": lam_max,
                      **self.convergence([*self.losses, loss], lam_min)}

    def convergence(self, losses: list[float], lambda_min_end: float) -> dict[str, Any]:
        """Success, steps to 1e-8 L_0 and the fitted contraction over ``losses`` = L(theta_0), ..., L(theta_T)."""
        first_below = lambda level: next((t for t, v in enumerate(losses) if v <= level * losses[0]), None)  # noqa: E731
        start, end = first_below(FIT_FROM), first_below(SUCCESS)
        lam = self.fit_lambda_min
        if start is None:  # never reached 1e-4 L_0: fit over the second half of the run
            start, lam = len(losses) // 2, lambda_min_end
        end = len(losses) - 1 if end is None else end
        eta = float(self.eta)
        return {"success": float(losses[-1] <= SUCCESS * losses[0]), "steps_to_1e-8": first_below(SUCCESS),
                "rate_fit_start": start, "rate_fit_end": end, "rate_predicted": (1 - eta * lam) ** 2,
                "rate_measured": (losses[end] / losses[start]) ** (1 / (end - start)) if end > start else None,
                # the measured counterpart of R in (5.1): 4 ||r_0|| / sigma_min(J_0)
                "radius_R": 4 * math.sqrt(2 * losses[0] / float(self.lambda_min_start))
                if self.lambda_min_start > 0 else None}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["full_batch_gd"] = {"losses": self.losses, "fit_lambda_min": self.fit_lambda_min}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("full_batch_gd", {"losses": [], "fit_lambda_min": math.nan})
        self.losses, self.fit_lambda_min = list(state["losses"]), state["fit_lambda_min"]

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        r = self.residual(batch)
        self.log("test/loss", 0.5 * r.pow(2).sum())
        self.log("test/mse", r.pow(2).mean())

    def results(self) -> dict[str, Any]:
        start = {"train/loss_start": float(self.loss_start), "ntk/lambda_min_start": float(self.lambda_min_start),
                 "ntk/lambda_max_start": float(self.lambda_max_start), "eta": float(self.eta),
                 "eta_times_lambda_max_start": float(self.eta * self.lambda_max_start)}
        if not self.final:
            return start
        end = self.final["train/loss_end"]
        return {**start, **self.final, "train/loss_reduction": start["train/loss_start"] / end if end > 0 else None}
