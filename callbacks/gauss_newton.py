"""Equal wall-clock budgets for comparing optimizers (LM, Adam, L-BFGS) on a regression data module.

Only the time spent inside training steps counts (validation, checkpointing and this callback's own
evaluations do not), so an optimizer is not charged for how often it is evaluated. The clock is the
process's wall clock: on a shared machine it moves with the load, so ``budget/ms_per_step`` is reported beside it.
"""
import math
import time
from typing import Any, Optional

import pytorch_lightning as pl
import torch


class WallClockBudget(pl.Callback):
    """Stops training after ``seconds`` of training-step time; every ``every`` seconds of it (and at 0 and at
    the end) measures the RMSE of the current weights on the datamodule's whole ``val_xy`` and ``test_xy``.
    ``results()`` holds the last and the best-validation values and the whole curve (``budget/curve``: rows of
    seconds, steps, val RMSE, test RMSE), so results.json carries it however often the loggers write.
    """

    def __init__(self, seconds: float = 60.0, every: float = 2.0) -> None:
        if not (seconds > 0 and every > 0):
            raise ValueError(f"WallClockBudget needs seconds > 0 and every > 0, got {seconds}, {every}")
        self.seconds, self.every = seconds, every
        self.elapsed, self.steps, self.next_eval = 0.0, 0, 0.0
        self.history: list[tuple[float, int, float, float]] = []  # (seconds, steps, val rmse, test rmse)
        self._start: Optional[float] = None

    def rmse(self, module: pl.LightningModule, xy: tuple[torch.Tensor, torch.Tensor]) -> float:
        x, y = (t.to(module.device) for t in xy)
        if len(y) == 0:
            return math.nan
        was_training = module.training
        module.eval()
        with torch.no_grad():
            out = module(x).reshape(y.shape)
        module.train(was_training)
        return float((out - y).pow(2).mean().sqrt())

    def evaluate(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        data = trainer.datamodule
        point = (self.elapsed, self.steps, self.rmse(module, data.val_xy), self.rmse(module, data.test_xy))
        self.history.append(point)
        self.next_eval = self.elapsed + self.every

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if not self.history:
            self.evaluate(trainer, module)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.elapsed += time.perf_counter() - self._start
        self.steps += 1
        done = self.elapsed >= self.seconds
        if done or self.elapsed >= self.next_eval:
            self.evaluate(trainer, module)
        if done:
            trainer.should_stop = True

    def results(self) -> dict[str, Any]:
        if not self.history:
            return {}
        seconds, steps, val, test = self.history[-1]
        best = min(self.history, key=lambda h: h[2] if math.isfinite(h[2]) else math.inf)
        return {"budget/seconds": seconds, "budget/steps": steps, "budget/ms_per_step": 1e3 * seconds / max(steps, 1),
                "budget/val_rmse": val, "budget/test_rmse": test, "budget/best_val_rmse": best[2],
                "budget/test_rmse_at_best_val": best[3], "budget/curve": [list(h) for h in self.history]}

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed, "steps": self.steps, "next_eval": self.next_eval, "history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.elapsed, self.steps, self.next_eval = state["elapsed"], state["steps"], state["next_eval"]
        self.history = [tuple(h) for h in state["history"]]
