"""FLOPs of one forward pass, counted by ``torch.utils.flop_counter`` (2 FLOPs per multiply-add), per clip.

The same counting as ``tools.bench.models`` (torchvision's model tables quote multiply-adds, i.e. half of this).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_gflops"]


@torch.inference_mode()
def count_gflops(model: nn.Module, clip_shape: Sequence[int], batch: int = 1) -> float:
    """GFLOPs per clip of `model` (eval mode, on its device) for input ``(batch, *clip_shape)``."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros(batch, *clip_shape, device=device)
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / batch / 1e9
