"""Squeeze and Recursion (SR) with optional temporal gates (Stergiou & Poppe, "Learn to cycle", PRL 2021).

Squeeze: global average pool of each frame -> a `(N, T, C)` sequence U. Recursion: a 2-layer LSTM(C, C) over
time -> states V `(N, T, C)`, one scale per (sample, channel, frame) that recalibrates the feature map.

Two forms of the recalibration (`mode`):
- `"raw"`: the reference code's, `x * V` with the raw LSTM output (values in (-1, 1), sign flips included). The
  SRTG-layout networks apply it after the residual block's final ReLU, as the reference does.
- `"sigmoid"`: `x * sigmoid(V)`, an SE-style gate; the torchvision-layout networks apply it to the residual
  branch before the addition, so the identity path stays ungated and a fresh gate (~0.5) does not shrink the
  signal through 8-16 blocks.
Both have 16C^2 + 16C parameters (srtg_r3d_18: 44,543,312 at 400 classes, as the reference).

Temporal gates (`temporal_gates=True`): a cycle-consistency test between U and V of each sample decides whether
the sample gets the recalibration or passes through unchanged. From frame u_i, its soft nearest neighbour among
the states is v~_i = sum_j softmax_j(-||u_i - v_j||^2) v_j; frame i cycles back when the frame of U nearest to
v~_i is u_i itself and the state nearest to v~_i is v_i, the state of the same time step. A pure U -> V -> U
cycle cannot see time order (any permutation of U would pass), so the second condition ties the cycle to time.
The test runs both ways (U -> V -> U and V -> U -> V); a sample is consistent when every frame cycles back both
ways (a one-frame sequence always passes). `soft_nearest_neighbour` is differentiable; the decision itself is
hard (argmin, all frames) and carries no gradient, so the LSTM learns only from the samples whose recalibration
was applied. The reference code's
gate zeroes its own mask (an in-place scatter), so with its gates on the block returns its input; every
reference `srtg_*` model ships with the gates off, and the author trained 30-50 epochs before switching them on
(see `train.temporal_gates` for doing that here).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["SqueezeRecursion", "cycle_consistent", "set_temporal_gates", "soft_nearest_neighbour"]

_MODES = ("sigmoid", "raw")


def _squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """(N, T, C), (N, S, C) -> (N, T, S) squared Euclidean distances (no sqrt: finite gradients at 0)."""
    return (a.unsqueeze(2) - b.unsqueeze(1)).pow(2).sum(-1)


def soft_nearest_neighbour(query: Tensor, keys: Tensor) -> Tensor:
    """Soft nearest neighbour of every query frame among `keys`: softmax(-squared distance) weighted mean.

    `query` `(N, T, C)`, `keys` `(N, S, C)` -> `(N, T, C)`; differentiable in both.
    """
    weights = torch.softmax(-_squared_distances(query, keys), dim=-1)
    return weights @ keys


def _cycles_back(a: Tensor, b: Tensor) -> Tensor:
    """(N, T) bool: frame i of `a` goes to its soft nearest neighbour in `b` and returns to frame i of `a`, and
    that neighbour lies nearest to `b`'s frame i."""
    soft = soft_nearest_neighbour(a, b)
    steps = torch.arange(a.shape[1], device=a.device)
    back = _squared_distances(soft, a).argmin(-1)
    landed = _squared_distances(soft, b).argmin(-1)
    return (back == steps) & (landed == steps)


def cycle_consistent(features: Tensor, states: Tensor) -> Tensor:
    """Per-sample temporal cycle consistency of two `(N, T, C)` sequences, both directions -> `(N,)` bool."""
    if features.shape != states.shape or features.dim() != 3:
        raise ValueError(f"cycle_consistent needs two (N, T, C) sequences of one shape, got "
                         f"{tuple(features.shape)} and {tuple(states.shape)}")
    with torch.no_grad():
        u, v = features.float(), states.float()
        return (_cycles_back(u, v) & _cycles_back(v, u)).all(dim=1)


class SqueezeRecursion(nn.Module):
    """Per-frame squeeze -> LSTM over time -> recalibration, optionally gated per sample by cycle consistency.

    Input and output `(N, C, T, H, W)`. `mode` is `"sigmoid"` (scale by sigmoid(h)) or `"raw"` (scale by h, the
    reference's). `temporal_gates` can be switched at any time (`set_temporal_gates`).
    """

    def __init__(self, channels: int, num_layers: int = 2, mode: str = "sigmoid", temporal_gates: bool = False
                 ) -> None:
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f"unknown Squeeze-and-Recursion mode {mode!r}; valid: {', '.join(_MODES)}")
        self.channels = channels
        self.mode = mode
        self.temporal_gates = temporal_gates
        #: the per-sample decision of the last gated forward (`(N,)` bool), for monitoring how many samples pass
        self.last_consistent: Tensor | None = None
        # batch_first changes no parameter: the reference's time-first LSTM weights load as they are
        self.lstm = nn.LSTM(channels, channels, num_layers=num_layers, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        squeezed = x.mean(dim=(3, 4)).transpose(1, 2)  # (N, T, C)
        hidden, _ = self.lstm(squeezed)
        scale = hidden if self.mode == "raw" else torch.sigmoid(hidden)
        out = x * scale.transpose(1, 2)[..., None, None].to(x.dtype)
        if not self.temporal_gates:
            return out
        keep = cycle_consistent(squeezed, hidden)
        self.last_consistent = keep
        return torch.where(keep.view(-1, 1, 1, 1, 1), out, x)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, mode={self.mode}, temporal_gates={self.temporal_gates}"


def set_temporal_gates(model: nn.Module, enabled: bool) -> int:
    """Switch the temporal gates of every SR block of `model`; returns how many blocks were switched.

    Raises `ValueError` when the model has no Squeeze-and-Recursion block.
    """
    blocks = [m for m in model.modules() if isinstance(m, SqueezeRecursion)]
    if not blocks:
        name = getattr(model, "model_name", type(model).__name__)
        raise ValueError(f"{name} has no Squeeze-and-Recursion block, so it has no temporal gates "
                         f"(use an srtg_* model)")
    for block in blocks:
        block.temporal_gates = enabled
    return len(blocks)
