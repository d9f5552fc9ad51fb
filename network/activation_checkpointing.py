"""Activation checkpointing per residual block: keep only each block's input, recompute its inside in backward.

Deep networks (the 50-200 layer SRTG/CSN ResNets, MTNet) store every intermediate activation of a training step;
with checkpointing a block keeps only its input, and its forward runs a second time during the backward pass
(`torch.utils.checkpoint`, non-reentrant: autocast and the RNG state are replayed, so the gradients are those of
the plain model). That trades about one more forward for memory, i.e. a larger batch per GPU.

BatchNorm in training mode updates its running statistics on every forward; the recomputation would update them a
second time. The recomputation therefore runs with the block's buffers restored afterwards: statistics, outputs and
gradients equal those of a model without checkpointing.

Models opt in with a class attribute `activation_checkpointing = False` and run their stages through `run_stage`;
`set_activation_checkpointing` switches it on and refuses other models.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = ["run_stage", "set_activation_checkpointing", "supports_activation_checkpointing"]

Activations = Tensor | tuple[Tensor, ...]


def supports_activation_checkpointing(model: nn.Module) -> bool:
    """Whether `model` runs its residual blocks through `run_stage` (the video ResNets and MTNet do)."""
    return hasattr(model, "activation_checkpointing")


def set_activation_checkpointing(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Checkpoint every residual block of `model` (in place); `ValueError` for a model without support."""
    if not supports_activation_checkpointing(model):
        name = getattr(model, "model_name", type(model).__name__)
        raise ValueError(f"{name} has no activation checkpointing; it is supported by the video ResNets (r3d_*, "
                         f"mc3_18, r2plus1d_*, wide_r3d50_2, ir_csn_*, ip_csn_* and their srtg_* twins) and MTNet "
                         f"(mtnet_*)")
    model.activation_checkpointing = bool(enabled)
    return model


@contextlib.contextmanager
def _buffers_kept(module: nn.Module) -> Iterator[None]:
    """Undo whatever the recomputation writes into the block's buffers (BN running statistics, batch counts)."""
    saved = [(b, b.detach().clone()) for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def _contexts(block: nn.Module) -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    return contextlib.nullcontext(), _buffers_kept(block)


def _call_pair(block: nn.Module, *parts: Tensor) -> Activations:
    return block(tuple(parts))


def _checkpointed(block: nn.Module, x: Activations) -> Activations:
    fn, args = (_call_pair, (block, *x)) if isinstance(x, tuple) else (block, (x,))  # MTNet passes pairs
    if torch.compiler.is_compiling():
        # AOTAutograd plans the recomputation of a compiled model and applies the buffer updates once; it
        # accepts no other contexts there.
        return checkpoint(fn, *args, use_reentrant=False)
    return checkpoint(fn, *args, use_reentrant=False, context_fn=functools.partial(_contexts, block))


def run_stage(stage: nn.Sequential, x: Activations, enabled: bool) -> Activations:
    """Run the blocks of `stage` on `x`, each checkpointed when `enabled` and gradients are being recorded."""
    if not (enabled and torch.is_grad_enabled()):
        return stage(x)
    for block in stage:
        x = _checkpointed(block, x)
    return x
