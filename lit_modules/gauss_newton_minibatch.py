"""Minibatch Levenberg-Marquardt for classification nets (beyond the GN-dynamics paper; no theory covers it).

Cross-entropy is not a sum of squares, so the GGN J^T (diag p - p p^T) J is written as J~^T J~ with the
square-root trick: per sample A = diag(sqrt p) - p sqrt(p)^T satisfies A A^T = diag p - p p^T, J~ = A^T J and
u = sqrt p - e_y / sqrt(p_y) satisfies A u = p - e_y = dCE/dlogits. The step solves
(J~^T J~ / B + lam I) d = J~^T u / B by matrix-free CG and is accepted only if it lowers the minibatch loss
(Marquardt: lam / down on success, lam * up and retry otherwise). Under DDP the p-vector products are summed
over processes, so every process takes the joined batch's step.
"""
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lit_modules.gauss_newton import StepCounter
from nets.gauss_newton.solver import Damping, FuncJacobian, MarquardtSchedule, gn_direction


def softmax_sqrt_factor(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """A (B, C, C) with A A^T = softmax Hessian, and u (B, C) with A u = softmax(logits) - onehot(targets)."""
    p = logits.softmax(-1)
    sq = p.sqrt()
    A = torch.diag_embed(sq) - p.unsqueeze(2) * sq.unsqueeze(1)
    u = sq - F.one_hot(targets, p.shape[1]).to(p.dtype) / sq.gather(1, targets[:, None]).clamp_min(1e-12)
    return A, u


class MinibatchLMModule(pl.LightningModule):
    """Levenberg-Marquardt training of any classifier ``net`` with cross-entropy, one minibatch per step.

    Args:
        lam: initial damping of the mean-loss GGN (adapted by the Marquardt schedule, kept in the checkpoint).
        up, down, max_tries: Marquardt schedule.
        cg_maxiter, cg_tol: matrix-free CG budget per solve.
    """

    def __init__(self, net: nn.Module, num_classes: int = 10, lam: float = 1.0, up: float = 3.0, down: float = 2.0,
                 max_tries: int = 3, cg_maxiter: int = 20, cg_tol: float = 1e-4) -> None:
        super().__init__()
        self.schedule = MarquardtSchedule(lam=lam, up=up, down=down, max_tries=max_tries)  # validates
        if cg_maxiter < 1:
            raise ValueError(f"model.cg_maxiter must be >= 1, got {cg_maxiter}")
        self.save_hyperparameters(ignore=["net"])
        self.automatic_optimization = False
        self.net = net
        self.monitor, self.monitor_mode = "val/acc", "max"
        self.acc = nn.ModuleDict({s: MulticlassAccuracy(num_classes, average="micro") for s in ("val_", "test_")})

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def flat_call(self, x: Tensor):
        names = [(n, p.shape, p.numel()) for n, p in self.net.named_parameters()]

        def logits(theta: Tensor) -> Tensor:
            chunks = theta.split([k for _, _, k in names])
            params = {n: c.view(s) for (n, s, _), c in zip(names, chunks)}
            return torch.func.functional_call(self.net, params, (x,))
        return logits

    def all_reduce(self, t: Tensor) -> Tensor:
        if self.trainer.world_size > 1:
            torch.distributed.all_reduce(t)
        return t

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits_fn = self.flat_call(x)
        theta = torch.nn.utils.parameters_to_vector(self.net.parameters()).detach()
        with torch.no_grad():
            logits = logits_fn(theta)
        A, u = softmax_sqrt_factor(logits, y)
        global_batch = float(self.all_reduce(torch.tensor(float(len(y)), device=x.device)))
        jac = FuncJacobian(lambda t: torch.einsum("bkc,bk->bc", A, logits_fn(t)).reshape(-1), theta)
        loss_sum = self.all_reduce(F.cross_entropy(logits, y, reduction="sum").detach())
        reduce = self.all_reduce if self.trainer.world_size > 1 else None
        tries, accepted = 0, False
        for tries in range(1, self.schedule.max_tries + 1):
            # (J~^T J~ / B + lam I) d = J~^T u / B  <=>  (J~^T J~ + B lam I) d = J~^T u
            d, info = gn_direction(jac, u.reshape(-1), Damping.additive(global_batch * self.schedule.lam),
                                   method="cg", cg_maxiter=self.hparams.cg_maxiter, cg_tol=self.hparams.cg_tol,
                                   reduce=reduce)
            with torch.no_grad():
                new_loss = self.all_reduce(F.cross_entropy(logits_fn(theta - d), y, reduction="sum"))
            if new_loss < loss_sum:
                accepted = True
                self.schedule.accepted()
                torch.nn.utils.vector_to_parameters(theta - d, self.net.parameters())
                break
            self.schedule.rejected()
        self.optimizers().step()
        self.log_dict({"train/loss": loss_sum / global_batch, "train/lam": self.schedule.lam,
                       "train/tries": float(tries), "train/accepted": float(accepted),
                       "train/cg_iters": float(info.cg_iters)}, prog_bar=True)
        return loss_sum / global_batch

    def _eval(self, stage: str, batch: tuple[Tensor, Tensor]) -> None:
        x, y = batch
        logits = self(x)
        self.acc[f"{stage}_"].update(logits, y)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log(f"{stage}/acc", self.acc[f"{stage}_"], prog_bar=stage == "val")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval("val", batch)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval("test", batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return StepCounter(self.net.parameters(), lr=1.0)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["marquardt_lam"] = self.schedule.lam

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.schedule.lam = checkpoint.get("marquardt_lam", self.schedule.lam)
