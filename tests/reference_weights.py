"""Deterministic weights and inputs shared by `tests/fixtures/make_reference_fixtures.py` (which runs the reference
code bases) and `tests/test_reference_fixtures.py` (which loads the same weights into our networks).

Every tensor is a function of its name (as the reference code names it) and shape only, so a fixture needs to
carry the names and shapes, not the values. Scales keep a deep network's activations of order one: convolution and
linear weights ~ N(0, 2 / fan_in), BN weights near 1, running variances in [0.5, 1.5], and LSTM biases near 1.5:
the SR block multiplies a block's output by the LSTM's output, and with small biases that factor (~0.1 per block)
would leave the logits almost independent of the input, so a wrong tensor could go unseen.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import torch

__all__ = ["reference_value", "reference_input", "reference_state"]


def reference_value(name: str, shape: Sequence[int], integer: bool = False) -> torch.Tensor:
    """The float64 (or int64 when `integer`) tensor the fixtures give the tensor `name` of `shape`."""
    if integer:  # BN's num_batches_tracked
        return torch.zeros(tuple(shape), dtype=torch.int64)
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    noise = torch.randn(tuple(shape), generator=gen, dtype=torch.float64)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_var":
        return 1.0 + 0.5 * torch.tanh(noise)
    if ".lstm." in f".{name}" and leaf.startswith("bias"):
        return 1.5 + 0.1 * noise
    if len(shape) <= 1:  # BN weight / bias, running mean, linear biases
        return (1.0 if leaf == "weight" else 0.0) + 0.1 * noise
    fan_in = math.prod(shape[1:])
    return noise * math.sqrt(2.0 / fan_in)


def reference_state(tensors: Sequence[tuple[str, Sequence[int], str]]) -> dict[str, torch.Tensor]:
    """``{name: reference_value(...)}`` for ``(name, shape, dtype)`` rows (dtype "int64" or "float64")."""
    return {name: reference_value(name, shape, integer=dtype == "int64") for name, shape, dtype in tensors}


def reference_input(shape: Sequence[int]) -> torch.Tensor:
    """The float64 clip batch the fixtures feed (standard normal, seed 0)."""
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
