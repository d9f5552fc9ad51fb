"""Learning-rate schedule: step decay at given epochs, optional linear warm-up, per-group multipliers.

The schedule is a pure function of training progress (fractional epochs done), so resuming only needs the
position, and the multigrid scale (batch-size factor of the current shape) multiplies on top.
"""
from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch


class StepLRSchedule:
    """`lr = lr_base * lr_factor ** (number of lr_steps passed) * warm-up * scale * group['lr_mult']`.

    `lr_steps` are epoch counts: with `lr_steps=[10]` epochs 1..10 run at `lr_base` and epoch 11 on at
    `lr_base * lr_factor`. Warm-up ramps linearly from `warmup_start * lr` to `lr` over `warmup_epochs`
    (fractional epochs allowed; updated every batch).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, lr_base: float, lr_steps: Sequence[int] = (),
                 lr_factor: float = 0.1, warmup_epochs: float = 0.0, warmup_start: float = 0.1) -> None:
        if lr_base <= 0:
            raise ValueError(f"lr_base must be positive, got {lr_base}")
        self.optimizer = optimizer
        self.lr_base = float(lr_base)
        self.lr_steps = sorted(int(s) for s in lr_steps)
        self.lr_factor = float(lr_factor)
        self.warmup_epochs = float(warmup_epochs)
        self.warmup_start = float(warmup_start)
        self.progress = 0.0
        self.scale = 1.0
        for group in optimizer.param_groups:
            group.setdefault("lr_mult", 1.0)

    def factor(self, progress: float) -> float:
        """Schedule factor (without multigrid scale or group multiplier) after `progress` epochs."""
        f = self.lr_factor ** bisect.bisect_right(self.lr_steps, progress)
        if self.warmup_epochs > 0 and progress < self.warmup_epochs:
            f *= self.warmup_start + (1.0 - self.warmup_start) * progress / self.warmup_epochs
        return f

    def step(self, progress: float, scale: float = 1.0) -> float:
        """Set every group's lr for `progress` epochs done; returns the base-group lr (lr_mult 1)."""
        self.progress = float(progress)
        self.scale = float(scale)
        lr = self.lr_base * self.factor(progress) * scale
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]
        return lr

    @property
    def current_lr(self) -> float:
        return self.lr_base * self.factor(self.progress) * self.scale

    def state_dict(self) -> dict:
        return {"lr_base": self.lr_base, "lr_steps": list(self.lr_steps), "lr_factor": self.lr_factor,
                "warmup_epochs": self.warmup_epochs, "warmup_start": self.warmup_start,
                "progress": self.progress, "scale": self.scale}

    def load_state_dict(self, state: dict) -> None:
        # The schedule is taken from the checkpoint so that a resumed run continues the same curve.
        self.lr_base = float(state["lr_base"])
        self.lr_steps = [int(s) for s in state["lr_steps"]]
        self.lr_factor = float(state["lr_factor"])
        self.warmup_epochs = float(state["warmup_epochs"])
        self.warmup_start = float(state["warmup_start"])
        self.step(float(state["progress"]), float(state["scale"]))
