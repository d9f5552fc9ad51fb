"""Speed options of a training run: channels-last memory format, `torch.compile`, activation checkpointing.

None of them changes what is computed (tests/test_speed_options.py checks outputs and gradients against the plain
model on the CPU), and none changes the checkpoint: the weights are saved from the plain module, without the
`_orig_mod.` prefix of a compiled model or the input wrapper of channels-last, so a checkpoint written with any of
them resumes (and loads for inference) without it, and the other way round.

- `--channels-last`: 5-D weights in `torch.channels_last_3d` (4-D ones of MiCT's 2-D branch in `channels_last`)
  and every input batch converted on the device: the layout cuDNN's fastest 3-D convolutions (and oneDNN's on
  the CPU) run in, without a transpose around every convolution.
- `--compile`: `torch.compile` (inductor) of the model the trainer runs. Multigrid changes the clip shape from
  epoch to epoch and inside an epoch, so each shape would be compiled again: `train.arguments` refuses the
  combination.
- `--activation-checkpointing`: each residual block of a video ResNet or MTNet is recomputed in the backward pass
  instead of keeping its activations (`network.activation_checkpointing`): the deep SRTG/CSN/MTNet networks then
  fit larger batches, at about one more forward per step.
"""
from __future__ import annotations

import argparse
import logging

import torch
from torch import Tensor, nn

from network import set_activation_checkpointing, to_channels_last

__all__ = ["ChannelsLastInput", "compile_model", "configure_model", "wrap_input"]

log = logging.getLogger(__name__)


class ChannelsLastInput(nn.Module):
    """Runs `module` on its input converted to `channels_last_3d` (unwrapped like DDP: `.module` is the model)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return self.module(x)


def configure_model(model: nn.Module, args: argparse.Namespace) -> nn.Module:
    """Apply `--channels-last` (weights) and `--activation-checkpointing` to the plain model, in place."""
    if getattr(args, "activation_checkpointing", False):
        try:
            set_activation_checkpointing(model)
        except ValueError as e:
            raise ValueError(f"--activation-checkpointing: {e}") from None
        log.info("activation checkpointing: every residual block is recomputed in the backward pass")
    if getattr(args, "channels_last", False):
        to_channels_last(model)
        log.info("channels-last: weights and input batches in the channels_last_3d memory format")
    return model


def wrap_input(model: nn.Module, args: argparse.Namespace) -> nn.Module:
    """With `--channels-last`, the model behind the input conversion (wrap it inside DDP: `no_sync` stays
    reachable); else the model itself."""
    return ChannelsLastInput(model) if getattr(args, "channels_last", False) else model


def compile_model(model: nn.Module, args: argparse.Namespace) -> nn.Module:
    """With `--compile`, `torch.compile(model)` (of the DDP module when distributed); else the model itself."""
    if not getattr(args, "compile", False):
        return model
    log.info("torch.compile: the first steps compile the model (inductor)")
    return torch.compile(model)
