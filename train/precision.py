"""Mixed precision: autocast (fp16 + GradScaler on CUDA, bf16 on CPU or CUDA), BN in fp32, non-finite losses.

A non-finite loss is never trained on: the step is skipped (with fp16 the GradScaler also skips steps whose
gradients overflow and lowers its scale), and `NonFiniteGuard` stops the run with a clear message after
`max_in_row` consecutive bad batches.
"""
from __future__ import annotations

import contextlib
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class NonFiniteLossError(RuntimeError):
    """Raised when the loss stayed NaN/inf for too many batches in a row."""


class Precision:
    """Autocast context and loss scaling for one device.

    `mode`: fp32 (no autocast), fp16 (CUDA only: autocast float16 + GradScaler) or bf16 (autocast bfloat16,
    no scaler needed because bf16 has the fp32 exponent range).
    """

    def __init__(self, mode: str, device: torch.device) -> None:
        if mode not in PRECISIONS:
            raise ValueError(f"unknown precision {mode!r}; choose one of {', '.join(PRECISIONS)}")
        if mode == "fp16" and device.type != "cuda":
            raise ValueError("--precision fp16 needs a CUDA device; on CPU use --precision bf16")
        self.mode = mode
        self.device_type = device.type
        self.dtype = _DTYPES.get(mode)
        self.scaler = torch.amp.GradScaler(device.type, enabled=(mode == "fp16"))

    @property
    def enabled(self) -> bool:
        return self.mode != "fp32"

    def autocast(self) -> contextlib.AbstractContextManager:
        """Context for the forward pass and the loss."""
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, clip_grad_norm: float | None = None) -> bool:
        """Optimizer step through the scaler; False (no step) when the gradients are not finite.

        One host read per step, of the gradients' total norm: under DDP every rank holds the same all-reduced
        gradients, so every rank takes the same decision without a collective of its own (a non-finite loss on
        one rank makes every rank's gradients non-finite). With fp16 the scaler then lowers its scale.
        `clip_grad_norm` rescales the gradients (of all parameter groups together) to at most that L2 norm.
        """
        self.scaler.unscale_(optimizer)  # a no-op when the scaler is disabled
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if params:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
            if not bool(torch.isfinite(norm)):
                if self.scaler.is_enabled():
                    self.scaler.update()  # unscale_ recorded the overflow: back off
                return False
            if clip_grad_norm:
                torch.nn.utils.clip_grads_with_norm_(params, clip_grad_norm, norm)
        if not self.scaler.is_enabled():
            optimizer.step()
            return True
        self.scaler.step(optimizer)  # finds the gradients finite, as above
        self.scaler.update()
        return True

    def state_dict(self) -> dict:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state)


def keep_batchnorm_fp32(model: nn.Module) -> int:
    """Make every BatchNorm layer compute in float32 under autocast; returns how many layers were hooked.

    Parameters and running statistics are float32 anyway (autocast never casts parameters); this also feeds
    them float32 input so that the batch statistics are computed at full precision.
    """

    def to_fp32(_module: nn.Module, args: tuple) -> tuple:
        return tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    n = 0
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.register_forward_pre_hook(to_fp32)
            n += 1
    return n


class NonFiniteGuard:
    """Counts consecutive non-finite losses; raises `NonFiniteLossError` after `max_in_row` of them."""

    def __init__(self, max_in_row: int = 5) -> None:
        self.max_in_row = max_in_row
        self.in_row = 0
        self.total = 0

    def check(self, finite: bool, where: str) -> bool:
        """Record one batch; returns `finite`. `where` names the batch in the messages."""
        if finite:
            self.in_row = 0
            return True
        self.in_row += 1
        self.total += 1
        log.warning("non-finite loss at %s: step skipped (%d in a row)", where, self.in_row)
        if self.in_row >= self.max_in_row:
            raise NonFiniteLossError(
                f"loss was NaN/inf for {self.in_row} batches in a row (last at {where}); stopping. "
                "Lower --lr-base, add warm-up (--warmup-epochs) or use --precision fp32")
        return False
