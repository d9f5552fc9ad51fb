"""Parts of MTNet (Stergiou & Poppe, "Multi-Temporal Convolutions for Human Action Recognition in Videos",
IJCNN 2021): temporal cosine-similarity pooling, SoftPool, the GRU Squeeze-and-Recursion block and the MTConv.

Features travel as a pair `(short, long)`: the short path holds a share `rate` (0.875) of the channels at full
resolution, the long path the rest at half the spatial size and (by cosine pooling) about half the frames.
Parameter names are the reference code's (`conv_short`, `conv_long`, `conv_short2long`, `norm_short`,
`norm_long`, `op` for the GRU), so its checkpoints load by name.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["RATE", "LATERAL_POOLS", "temporal_cosine_pool", "soft_pool", "halve_space", "GRUSqueezeRecursion",
           "MTConv"]

RATE = 0.875
LATERAL_POOLS = ("avg", "soft")
#: Smallest clip the cosine pooling can select from (it keeps floor(T/2) of the T-2 frame triplets).
COSINE_POOL_MIN_FRAMES = 3

Pair = tuple[Tensor, Tensor]


def temporal_cosine_pool(x: Tensor) -> Tensor:
    """Keep the floor(T/2) frames of `(N, C, T, H, W)` that sit in the most self-similar triplets, in time order.

    Frame t is scored by the mean of cos(g_{t-1}, g_t)^2 and cos(g_t, g_{t+1})^2 over the spatially pooled frames
    g (cosine eps 1e-4); the first and last frames are never kept.
    """
    n, c, t, h, w = x.shape
    if t < COSINE_POOL_MIN_FRAMES:
        raise ValueError(f"temporal cosine pooling needs at least {COSINE_POOL_MIN_FRAMES} frames, got {t}")
    g = x.mean(dim=(3, 4))
    sim = F.cosine_similarity(g[..., :-1], g[..., 1:], dim=1, eps=1e-4).pow(2)  # (N, T-1)
    triplet = (sim[:, :-1] + sim[:, 1:]) / 2  # (N, T-2), centred on frames 1..T-2
    keep = triplet.topk(t // 2, dim=1).indices.add(1).sort(dim=1).values
    # gather (not advanced indexing) so that the ONNX graph is a plain GatherElements
    return x.gather(2, keep[:, None, :, None, None].expand(n, c, keep.shape[1], h, w))


def _space_kernel(x: Tensor) -> tuple[int, int, int]:
    # a 1-pixel dimension is kept as is: the reference fails there (its 2x2 pool has no window), which small crops
    # such as the 32-px CPU demo reach in the last stage; for every size the reference runs, this is its 2x2 pool
    return 1, (2 if x.shape[3] > 1 else 1), (2 if x.shape[4] > 1 else 1)


def soft_pool(x: Tensor, kernel: tuple[int, int, int]) -> Tensor:
    """SoftPool (Stergiou et al., ICCV 2021) over non-overlapping `kernel` windows of `(N, C, T, H, W)`.

    Each window becomes sum_i softmax(a)_i a_i, per channel. The window maximum is subtracted before the
    exponential, so the weights stay in (0, 1] and the denominator >= 1 in any precision. Trailing rows that do
    not fill a window are dropped, as by `avg_pool3d`.
    """
    n, c, t, h, w = x.shape
    kt, kh, kw = kernel
    t2, h2, w2 = t // kt, h // kh, w // kw
    win = x[:, :, :t2 * kt, :h2 * kh, :w2 * kw].reshape(n, c, t2, kt, h2, kh, w2, kw)
    dims = (3, 5, 7)
    # softmax is shift invariant, so the shift needs no gradient
    weight = torch.exp(win - win.detach().amax(dim=dims, keepdim=True))
    return (weight * win).sum(dim=dims) / weight.sum(dim=dims)


def halve_space(x: Tensor, pool: str = "avg") -> Tensor:
    """The (1, 2, 2) pooling that takes the short path to the long path's resolution (`avg` or `soft`)."""
    kernel = _space_kernel(x)
    if pool == "soft":
        return soft_pool(x, kernel)
    return F.avg_pool3d(x, kernel, kernel)


class GRUSqueezeRecursion(nn.Module):
    """Per-frame global average -> 2-layer GRU(C, C) over time -> `x * h`.

    As the reference: the raw GRU output (in (-1, 1)) multiplies the features, no sigmoid. Time-major GRU
    (`op`), the reference's layout; a spatial mean replaces its pooling, which it skips (and fails) when one of
    H, W is 1 and the other is not.
    """

    def __init__(self, channels: int, num_layers: int = 2) -> None:
        super().__init__()
        self.op = nn.GRU(channels, channels, num_layers=num_layers)

    def forward(self, x: Tensor) -> Tensor:
        seq = x.mean(dim=(3, 4)).permute(2, 0, 1)  # (T, N, C)
        hidden, _ = self.op(seq)
        return x * hidden.permute(1, 2, 0)[..., None, None].to(x.dtype)


def _norm(channels: int, groups: int, grouped: bool) -> nn.Module:
    return nn.GroupNorm(groups, channels) if grouped else nn.BatchNorm3d(channels)


class MTConv(nn.Module):
    """Multi-temporal convolution on a `(short, long)` pair: one Conv3d per path and a lateral short -> long link.

    Lateral: the short conv output is pooled (1, 2, 2) (`lateral_pool`), cosine-pooled in time when it has more
    than 2 frames, trilinearly resized to the long output's shape when the shapes differ, and mapped by a 1x1x1
    conv to the long channels. Long output = norm_long(conv_long) + norm_long(lateral); no activation.
    Channel split as the reference: short in = floor(int(in * rate) / g_s) * g_s, short out = int(out * rate),
    with g_s = max(1, floor(groups * rate)) short and max(1, groups - g_s) long groups.
    """

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int | tuple[int, int, int],
                 stride: int | tuple[int, int, int] = 1, padding: int | tuple[int, int, int] = 0, groups: int = 1,
                 lateral: bool = True, rate: float = RATE, lateral_pool: str = "avg") -> None:
        super().__init__()
        if lateral_pool not in LATERAL_POOLS:
            raise ValueError(f"lateral_pool must be one of {', '.join(LATERAL_POOLS)}, got {lateral_pool!r}")
        groups_short = max(1, math.floor(groups * rate))
        groups_long = max(1, groups - groups_short)
        in_short = int(in_planes * rate) // groups_short * groups_short
        out_short = int(out_planes * rate)
        in_long, out_long = in_planes - in_short, out_planes - out_short
        if min(in_short, out_short, in_long, out_long) < 1:
            raise ValueError(f"MTConv {in_planes}->{out_planes} leaves a path without channels at rate {rate}")
        self.split = (in_short, in_long)
        self.lateral_pool = lateral_pool
        self.conv_short = nn.Conv3d(in_short, out_short, kernel_size, stride, padding, groups=groups_short,
                                    bias=False)
        self.conv_long = nn.Conv3d(in_long, out_long, kernel_size, stride, padding, groups=groups_long, bias=False)
        self.conv_short2long = nn.Conv3d(out_short, out_long, 1, bias=False) if lateral else None
        self.norm_short = _norm(out_short, groups_short, groups > 1)
        self.norm_long = _norm(out_long, groups_long, groups > 1)

    def lateral(self, short: Tensor, size: torch.Size) -> Tensor:
        """The short -> long link before its norm: pool space, cosine-pool time, resize to `size`, 1x1x1 conv."""
        x = halve_space(short, self.lateral_pool)
        if x.shape[2] > 2:
            x = temporal_cosine_pool(x)
        # the reference resizes unconditionally (its shape test compares against one sample's shape, never
        # equal); a same-size trilinear resize is the identity, so it is skipped then
        if x.shape[2:] != size:
            x = F.interpolate(x, size=tuple(size), mode="trilinear")
        return self.conv_short2long(x)

    def forward(self, x: Pair) -> Pair:
        short, long = self.conv_short(x[0]), self.conv_long(x[1])
        if self.conv_short2long is None:
            return self.norm_short(short), self.norm_long(long)
        lateral = self.lateral(short, long.shape[2:])
        # one norm module for both long terms, called long first (BN running statistics update twice, in order)
        long = self.norm_long(long)
        short = self.norm_short(short)
        return short, long + self.norm_long(lateral)
