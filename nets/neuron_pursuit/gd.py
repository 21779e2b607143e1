"""Plain full-batch gradient descent on a ``GrowableNet`` (the GD stages of Neuron Pursuit, Algorithm 1 lines 13-15
and 33-36) with the PVR lr schedule of Appendix C."""
from typing import Any, Callable, Optional

import torch
from torch import Tensor

Loss = Callable[[], Tensor]  # the full-batch training loss at the current weights
Gradients = Callable[[], tuple[Tensor, list[Tensor]]]  # (loss, gradient of every weight) at the current weights


class HalvingSchedule:
    """PVR's GD schedule: every ``every`` steps, if the loss rose since the last check, restore that check's
    weights and halve lr (at most ``max_halvings`` times per stage); otherwise the check becomes the new reference.
    With ``every`` None the lr stays constant (plain GD).
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
    def begin(self, params: list[Tensor], loss: Loss) -> None:
        """Take the stage's starting point as the first reference (restarts if the widths changed unannounced)."""
        shapes = [p.shape for p in params]
        if self.ref_weights is not None and [w.shape for w in self.ref_weights] != shapes:
            self.restart()
        if self.ref_loss is None:
            self.ref_loss, self.ref_weights = float(loss()), [p.detach().clone() for p in params]

    def steps_to_check(self) -> Optional[int]:
        """GD steps until the next loss check (None: never)."""
        return None if self.every is None else self.every - self.steps % self.every

    @torch.no_grad()
    def tick(self, params: list[Tensor], loss: Loss, steps: int = 1) -> bool:
        """Count ``steps`` GD steps (``params`` already updated); True when lr was halved and the weights restored."""
        self.steps += steps
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


@torch.no_grad()
def gd_steps(params: list[Tensor], gradients: Gradients, steps: int, schedule: HalvingSchedule, loss: Loss) -> Tensor:
    """``steps`` plain GD steps w <- w - lr grad at the schedule's lr; returns the loss before the last step.

    Plain GD is stateless, so the update is one ``_foreach_add_`` (a torch optimizer's step costs several times
    more Python per step on these tiny nets). Steps run in chunks between the schedule's loss checks, so the
    schedule adds no work per step and a run cut anywhere resumes to the same trajectory.
    """
    if schedule.every is not None:
        schedule.begin(params, loss)
    last, done = None, 0
    while done < steps:
        chunk = min(steps - done, schedule.steps_to_check() or steps - done)
        for _ in range(chunk):
            last, grads = gradients()
            torch._foreach_add_(params, grads, alpha=-schedule.lr)
        done += chunk
        if schedule.every is not None:
            schedule.tick(params, loss, chunk)
    return last
