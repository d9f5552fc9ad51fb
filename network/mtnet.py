"""MTNet: the Multi-Temporal Convolution networks (Stergiou & Poppe, IJCNN 2021), as the SRTG reference builds them.

Stem (3x7x7 conv, BN, ReLU; replicate-pad odd H/W; (1,3,3) max-pool; cosine pooling) -> split into a short path
(56 of 64 channels, full resolution) and a long path (8 channels, (1,2,2)-pooled, cosine-pooled) -> four stages of
MTBlocks (64/128/256/512 planes, stride 2 from stage 2) -> average pool of each path, concatenated (512) -> fc.
The parts (cosine pooling, SoftPool, MTConv, GRU Squeeze-and-Recursion) live in network/mtconv.py.

MTBlock, in the reference's order: 1x1x1 MTConv in -> width, 1x1x1 width -> in, 3x3x3 in -> width (stride,
groups), then width -> planes (1x1x1 in a block with a downsample, else (1,3,3)); ReLU after each but the last; a
GRU Squeeze-and-Recursion on each path (raw product); residual add; ReLU.

Reference-exact by default (same parameter names, counts and computation); its quirks that change outputs are kept:
- the stem pads (1, 0) on both H and W with replicate padding whenever either is odd;
- the long norm of an MTConv is one module applied to the long conv and to the lateral link;
- before a block's downsample, a long identity less than 3 pixels high is resized to (T, 3, 3);
- identities whose shape differs from the block output are trilinearly resized to it.
Departures: 1-pixel maps skip the (1,2,2) pooling in that dimension, where the reference fails (see
`mtconv.halve_space`); `lateral_pool="soft"` is real SoftPool (the reference's 'soft' branch is a same-size max
pool, i.e. no pooling; its default, and ours, is average pooling). As in the reference, a GroupNorm of the grouped
variants fails on a single value (one channel of 1x1x1: reduced widths on tiny crops).

Names: the reference's `get_symbol` routes "mtnet_xs" to MTNet-S and "mtnet_xl" to MTNet-L; here every name builds
its own depth. Clips need >= 3 frames (the stem's cosine pooling).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .activation_checkpointing import run_stage
from .base import VideoClassifier
from .mtconv import (
    COSINE_POOL_MIN_FRAMES,
    LATERAL_POOLS,
    RATE,
    GRUSqueezeRecursion,
    MTConv,
    Pair,
    halve_space,
    temporal_cosine_pool,
)
from .registry import register_model

__all__ = ["MTNet", "MTBlock", "MTStem", "VARIANTS", "STAGE_PLANES"]

STAGE_PLANES = (64, 128, 256, 512)
#: name -> (blocks per stage, groups); grouped variants use GroupNorm in their grouped convolutions
VARIANTS: dict[str, tuple[tuple[int, int, int, int], int]] = {
    "mtnet_xs": ((2, 2, 2, 2), 1),
    "mtnet_s": ((2, 2, 5, 3), 1),
    "mtnet_m": ((3, 4, 6, 3), 1),
    "mtnet_l": ((3, 4, 23, 3), 1),
    "mtnet_xl": ((3, 8, 36, 3), 1),
    "mtnet_xxl": ((3, 24, 36, 3), 1),
    "mtnet_xs_g8": ((2, 2, 2, 2), 8),
    "mtnet_s_g8": ((2, 2, 5, 3), 8),
    "mtnet_m_g8": ((3, 4, 6, 3), 8),
    "mtnet_l_g8": ((3, 4, 23, 3), 8),
}


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    return x if tuple(x.shape[2:]) == tuple(size) else F.interpolate(x, size=tuple(size), mode="trilinear")


class MTStem(nn.Sequential):
    """3x7x7 conv (stride 1,2,2) -> BN -> ReLU, then pad, max-pool, cosine-pool and split into `(short, long)`."""

    def __init__(self, width: int, rate: float = RATE) -> None:
        super().__init__(
            nn.Conv3d(3, width, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
        )
        self.short_channels = int(width * rate)
        self.long_channels = width - self.short_channels

    def forward(self, x: Tensor) -> Pair:  # type: ignore[override]
        x = super().forward(x)
        if x.shape[3] % 2 or x.shape[4] % 2:
            x = F.pad(x, (1, 0, 1, 0, 0, 0), mode="replicate")
        x = F.max_pool3d(x, kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        x = temporal_cosine_pool(x)
        short, long = x.split([self.short_channels, self.long_channels], dim=1)
        long = halve_space(long)
        if long.shape[2] > 2:
            long = temporal_cosine_pool(long)
        return short, long


class MTBlock(nn.Module):
    """Bottleneck of four MTConvs with a GRU Squeeze-and-Recursion per path (see the module docstring)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: MTConv | None = None,
                 groups: int = 1, rate: float = RATE, lateral_pool: str = "avg") -> None:
        super().__init__()
        width = planes // groups
        kw = {"rate": rate, "lateral_pool": lateral_pool}
        self.conv1_1 = MTConv(inplanes, width, 1, **kw)
        self.conv1_2 = MTConv(width, inplanes, 1, **kw)
        self.conv2 = MTConv(inplanes, width, 3, stride=stride, padding=1, groups=groups, **kw)
        if downsample is not None:
            self.conv3 = MTConv(width, planes, 1, groups=groups, **kw)
        else:
            self.conv3 = MTConv(width, planes, (1, 3, 3), padding=(0, 1, 1), groups=groups, **kw)
        self.downsample = downsample
        self.sr_short = GRUSqueezeRecursion(int(planes * rate))
        self.sr_long = GRUSqueezeRecursion(int(planes * (1 - rate)))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Pair) -> Pair:
        id_short, id_long = x
        out = x
        for conv in (self.conv1_1, self.conv1_2, self.conv2):
            out = tuple(self.relu(p) for p in conv(out))
        short, long = self.conv3(out)
        if self.downsample is not None:
            if id_long.shape[3] < 3:  # the reference tests the height only, and resizes the width with it
                id_long = F.interpolate(id_long, size=(id_long.shape[2], 3, 3), mode="trilinear")
            id_short, id_long = self.downsample((id_short, id_long))
        short = self.sr_short(short) + _resize(id_short, short.shape[2:])
        long = self.sr_long(long) + _resize(id_long, long.shape[2:])
        return self.relu(short), self.relu(long)


def _stage_planes(width_mult: float, groups: int) -> list[int]:
    # a multiple of 8 * groups keeps the 7:1 split exact and every grouped conv and GroupNorm divisible
    if width_mult <= 0:
        raise ValueError(f"width_mult must be > 0, got {width_mult}")
    unit = 8 * groups
    return [max(unit, round(p * width_mult / unit) * unit) for p in STAGE_PLANES]


class MTNet(VideoClassifier):
    """MTNet with `layers` MTBlocks per stage; see the module docstring. Features: `planes[-1]` (512 at width 1)."""

    min_frames = COSINE_POOL_MIN_FRAMES
    #: Recompute each MTBlock in backward (`network.activation_checkpointing`).
    activation_checkpointing = False

    def __init__(self, layers: Sequence[int], num_classes: int = 400, groups: int = 1, dropout: float = 0.0,
                 width_mult: float = 1.0, lateral_pool: str = "avg") -> None:
        super().__init__()
        if lateral_pool not in LATERAL_POOLS:
            raise ValueError(f"lateral_pool must be one of {', '.join(LATERAL_POOLS)}, got {lateral_pool!r}")
        planes = _stage_planes(width_mult, groups)
        self.stem = MTStem(planes[0])
        inplanes = planes[0]
        for i, (n_blocks, p) in enumerate(zip(layers, planes)):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or inplanes != p:
                downsample = MTConv(inplanes, p, 1, stride=stride, lateral=False)
            blocks = [MTBlock(inplanes, p, stride, downsample, groups, lateral_pool=lateral_pool)]
            blocks += [MTBlock(p, p, groups=groups, lateral_pool=lateral_pool) for _ in range(1, n_blocks)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = p
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self._init_head(planes[-1], num_classes, dropout)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm3d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def min_frames_hint(self) -> str:
        return " (the stem's temporal cosine pooling keeps floor(T/2) of the T-2 frame triplets)"

    def forward_features(self, x: Tensor) -> Tensor:
        self.check_input(x)
        pair = self.stem(x)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            pair = run_stage(stage, pair, self.activation_checkpointing)
        return torch.cat([self.avgpool(p).flatten(1) for p in pair], dim=1)


def _register(name: str, layers: tuple[int, int, int, int], groups: int) -> None:
    def builder(num_classes: int = 400, dropout: float = 0.0, width_mult: float = 1.0,
                lateral_pool: str = "avg") -> MTNet:
        return MTNet(layers, num_classes, groups, dropout, width_mult, lateral_pool)

    grouped = f", {groups} groups (GroupNorm in the grouped convs)" if groups > 1 else ""
    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"MTNet with {list(layers)} MTBlocks per stage{grouped}; `lateral_pool` 'avg' or 'soft'."
    globals()[name] = register_model(builder, name=name)
    __all__.append(name)


for _name, (_layers, _groups) in VARIANTS.items():
    _register(_name, _layers, _groups)
