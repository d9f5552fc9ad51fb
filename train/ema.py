"""Exponential moving average of a model's weights (and buffers), kept next to the trained model.

`ema = decay * ema + (1 - decay) * weights` after every optimizer step; integer buffers (BN's batch counter) are
copied. The trainer evaluates the average next to the raw weights and checkpoints it under `ema`.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["ModelEMA"]


class ModelEMA:
    """A frozen copy of `model` (eval mode, no gradients) updated with `update(model)`."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards `model`'s current weights (the plain module, not a DDP wrapper)."""
        self.updates += 1
        ema_state = self.module.state_dict()
        for name, value in model.state_dict().items():
            target = ema_state[name]
            if target.dtype.is_floating_point:
                target.mul_(self.decay).add_(value.detach().to(target.dtype), alpha=1.0 - self.decay)
            else:
                target.copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates,
                "model": {k: v.detach().cpu() for k, v in self.module.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"], strict=True)
        self.updates = int(state.get("updates", 0))
