"""Squeeze-and-Recursion block of SRTG (Stergiou & Poppe, "Learn to cycle", PRL 2021).

Squeeze: global average pool of each frame -> a `(N, T, C)` sequence. Recursion: a 2-layer LSTM(C, C) over time.
Gate: a sigmoid of the LSTM output, one weight per (sample, channel, frame), rescaling the feature map.

Departures from the reference code, on purpose: the reference multiplies by the raw LSTM output (values in
(-1, 1), sign flips included) and applies it after the residual ReLU, where it also scales the identity path of
every later block. We use a sigmoid gate (SE-style) on the residual branch before the addition, so the identity
path stays ungated and a fresh gate (~0.5) does not shrink the signal through 8-16 blocks. The LSTM shape is the
reference's (2 layers, hidden = C), so the parameter count matches (srtg_r3d_18: 44.54M at 400 classes).
The cycle-consistency "temporal gates" of the paper are not implemented (every reference `srtg_*` model had
them switched off, `gates=False`).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["SqueezeRecursion"]


class SqueezeRecursion(nn.Module):
    """Per-frame squeeze -> LSTM over time -> sigmoid gate -> rescale. Input and output `(N, C, T, H, W)`."""

    def __init__(self, channels: int, num_layers: int = 2) -> None:
        super().__init__()
        self.channels = channels
        self.lstm = nn.LSTM(channels, channels, num_layers=num_layers, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        squeezed = x.mean(dim=(3, 4)).transpose(1, 2)  # (N, T, C)
        hidden, _ = self.lstm(squeezed)
        gate = torch.sigmoid(hidden).transpose(1, 2)  # (N, C, T)
        return x * gate[..., None, None].to(x.dtype)
