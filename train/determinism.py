"""`--deterministic`: the settings, model changes and check that make a run repeat bit for bit, CUDA included.

On the CPU every kernel the zoo uses is deterministic already. On CUDA three things are needed: cuBLAS must use a
fixed workspace (`CUBLAS_WORKSPACE_CONFIG`, read when cuBLAS creates its handle, so set before the first matrix
product), cuDNN must pick deterministic algorithms (no autotuning), and no operation may accumulate with atomics.
`torch.use_deterministic_algorithms(True)` enforces the last two: an operation without a deterministic CUDA
kernel raises instead of silently differing run to run.

The zoo's global average pooling (`nn.AdaptiveAvgPool3d(1)`, whose CUDA backward scatters with atomics) is replaced
by a mean over (T, H, W), which computes the same values with a deterministic backward. Operations that have no
such equivalent (the SRTG layout's and MiCT's overlapping `MaxPool3d`, MTNet's `avg_pool3d` and trilinear
resizing) are found by one forward and backward pass before training, and the run is refused with their name.
"""
from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["CUBLAS_WORKSPACE", "enable_deterministic", "GlobalAvgPool3d", "replace_global_pooling",
           "check_deterministic"]

# The smaller of the two documented settings costs more time; this one costs about 24 MiB of GPU memory.
CUBLAS_WORKSPACE = ":4096:8"
_NO_DETERMINISTIC = "does not have a deterministic implementation"


def enable_deterministic() -> None:
    """Deterministic kernels only (errors, not warnings, for the others), fixed cuBLAS workspace, no autotune."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=False)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


class GlobalAvgPool3d(nn.Module):
    """`nn.AdaptiveAvgPool3d(1)` as a mean over (T, H, W): the same values, a backward without atomics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-3, -2, -1), keepdim=True)


def replace_global_pooling(model: nn.Module) -> int:
    """Replace every `nn.AdaptiveAvgPool3d` to size 1 by `GlobalAvgPool3d`; returns how many were replaced.

    Neither has parameters or buffers, so state_dicts and checkpoints are unchanged.
    """
    count = 0
    for name, child in list(model.named_children()):
        size = getattr(child, "output_size", None)
        if isinstance(child, nn.AdaptiveAvgPool3d) and size in (1, (1, 1, 1)):
            setattr(model, name, GlobalAvgPool3d())
            count += 1
        else:
            count += replace_global_pooling(child)
    return count


def check_deterministic(model: nn.Module, clips: torch.Tensor, autocast: Callable[[], Any] | None = None,
                        network: str = "the model") -> None:
    """One training forward, cross-entropy and backward of a copy of `model` on `clips`; `ValueError` naming the
    first operation without a deterministic kernel on this device (call after `enable_deterministic`)."""
    probe = copy.deepcopy(model).train()  # the run's BN statistics and gradients stay untouched
    try:
        with autocast() if autocast is not None else contextlib.nullcontext():
            out = probe(clips)
            # The training loss too (class targets), for its kernels on this device.
            loss = nn.functional.cross_entropy(out.float(), torch.zeros(len(out), dtype=torch.long,
                                                                         device=out.device))
        loss.backward()
    except RuntimeError as e:
        text = str(e)
        if _NO_DETERMINISTIC not in text:
            raise
        op = text.split(_NO_DETERMINISTIC)[0].strip() or "an operation"
        raise ValueError(f"--deterministic: {network} uses {op}, which {_NO_DETERMINISTIC} on "
                         f"{clips.device.type}; train it without --deterministic") from None
    finally:
        del probe

