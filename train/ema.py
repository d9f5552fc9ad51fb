"""Exponential moving average of a model's weights (and buffers), kept next to the trained model.

`ema = decay * ema + (1 - decay) * weights` after every optimizer step; integer buffers (BN's batch counter) are
copied. The trainer evaluates the average next to the raw weights and checkpoints it under `ema`. The update is
two multi-tensor (`torch._foreach_*`) kernels over all floating tensors rather than two kernels per tensor (a
deep network has hundreds to thousands of them).
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
        self._flatten_rnns()
        self.updates = 0

    def _flatten_rnns(self) -> None:
        # A copied cuDNN RNN no longer has its weights in one contiguous block: without this, every call of the
        # copy warns and re-packs them (a no-op on the CPU).
        for m in self.module.modules():
            if isinstance(m, nn.RNNBase):
                m.flatten_parameters()

    @staticmethod
    def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
        # The live parameters and buffers (not state_dict() copies of their views), by name.
        return {**dict(module.named_parameters()), **dict(module.named_buffers())}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards `model`'s current weights (the plain module, not a DDP wrapper)."""
        self.updates += 1
        source = self._tensors(model)
        floats: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        others: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        for name, target in self._tensors(self.module).items():
            value = source[name].detach()
            if target.dtype.is_floating_point:
                floats[0].append(target)
                floats[1].append(value if value.dtype == target.dtype else value.to(target.dtype))
            else:
                others[0].append(target)
                others[1].append(value)
        if floats[0]:
            torch._foreach_mul_(floats[0], self.decay)
            torch._foreach_add_(floats[0], floats[1], alpha=1.0 - self.decay)
        if others[0]:
            torch._foreach_copy_(others[0], others[1])

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates,
                "model": {k: v.detach().cpu() for k, v in self.module.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"], strict=True)
        self._flatten_rnns()
        self.updates = int(state.get("updates", 0))
