"""MiCT-ResNet: Mixed 3D/2D Convolutional Tube on a ResNet backbone (Zhou et al., CVPR 2018; the ResNet form of
Mahoudeau's MiCT-Net-PyTorch).

A 2D ResNet-18/34 runs on the frames stacked as a `(N*T, C, H, W)` batch. Five 3D convolutions run beside it: a
3D stem beside the 2D stem, and one 3x3x3 conv beside the first block of each of the four stages. Each 3D output
is added to the 2D output of the same position (cross-domain residual), so the 3D branch only has to learn the
temporal residual (motion) on top of the 2D features.

Alignment: the 3D convs are padded in time only at the end, so 3D output frame t covers input frames t..t+k-1 and
lines up with 2D frame t; with a temporal stride s the 2D branch takes every s-th frame, and both give ceil(T/s)
frames for any T.

Temporal strides (stem conv, stem pool, layer1..4): v1 = 1, 2, 1, 2, 2, 2 (total 16: 16 frames -> 1) and
v2 = 1, 2, 1, 1, 2, 1 (total 4). `min_frames` is the total stride (16 for v1, 4 for v2): below it the later 3D
convs would see nothing but padding, so `check_input` refuses such clips. Use v2 for short clips (the 8-frame CPU
demo) and for long-clip evaluation.

Parameters at 101 classes: MiCT-ResNet-18 16.05M (7x7x7 stem; 16.01M / 16.03M with a 3- / 5-frame stem kernel),
MiCT-ResNet-34 26.16M. The head is dropout (default 0.5) on the pooled features, then a linear layer; the
reference's channel dropout + per-frame FC + mean over time is the same function and distribution.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .base import VideoClassifier
from .registry import register_model
from .resnet2d import BN_KEYS, init_2d, make_stage, stage_widths

__all__ = ["MiCTResNet", "mict_resnet18", "mict_resnet34", "TEMPORAL_STRIDES"]

#: Temporal strides of the 3D convolution beside each of the four stages (the stem adds 2, by its max-pool).
TEMPORAL_STRIDES = {"v1": (1, 2, 2, 2), "v2": (1, 1, 2, 1)}
_STEM_POOL_STRIDE = 2


class Conv3dBN(nn.Module):
    """3D conv -> BN -> ReLU, with the time axis padded only at the end (output t sees frames t..t+k-1)."""

    def __init__(self, in_planes: int, planes: int, kernel: tuple[int, int, int], stride: tuple[int, int, int]
                 ) -> None:
        super().__init__()
        self.time_pad = kernel[0] - 1
        self.conv = nn.Conv3d(in_planes, planes, kernel, stride, padding=(0, kernel[1] // 2, kernel[2] // 2),
                              bias=False)
        self.bn = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        if self.time_pad:
            x = F.pad(x, (0, 0, 0, 0, 0, self.time_pad))
        return self.relu(self.bn(self.conv(x)))


class MiCTResNet(VideoClassifier):
    """MiCT-ResNet with BasicBlocks: `layers` blocks per stage, `version` v1/v2 temporal strides."""

    def __init__(self, layers: Sequence[int], num_classes: int = 101, version: str = "v1",
                 first_kernel_depth: int = 7, dropout: float = 0.5, width_mult: float = 1.0) -> None:
        super().__init__()
        if version not in TEMPORAL_STRIDES:
            raise ValueError(f"version must be one of {sorted(TEMPORAL_STRIDES)}, got {version!r}")
        if first_kernel_depth < 1:
            raise ValueError(f"first_kernel_depth must be >= 1, got {first_kernel_depth}")
        self.version = version
        self.temporal_strides = TEMPORAL_STRIDES[version]
        self.min_frames = _STEM_POOL_STRIDE
        for s in self.temporal_strides:
            self.min_frames *= s
        w = stage_widths(width_mult)

        # 2D stem (torchvision names) and its 3D twin
        self.conv1 = nn.Conv2d(3, w[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.stem3d = Conv3dBN(3, w[0], (first_kernel_depth, 7, 7), (1, 2, 2))
        self.maxpool3d = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)

        in_planes = w[0]
        for i, (n_blocks, planes, t_stride) in enumerate(zip(layers, w, self.temporal_strides)):
            stride = 1 if i == 0 else 2
            self.add_module(f"layer{i + 1}", make_stage(in_planes, planes, n_blocks, stride))
            self.add_module(f"layer{i + 1}_3d", Conv3dBN(in_planes, planes, (3, 3, 3), (t_stride, stride, stride)))
            in_planes = planes
        self._init_head(w[-1], num_classes, dropout)
        init_2d(self)

    def min_frames_hint(self) -> str:
        if self.version == "v1":
            v2 = _STEM_POOL_STRIDE
            for s in TEMPORAL_STRIDES["v2"]:
                v2 *= s
            return f"; MiCT {self.version} has a total temporal stride of {self.min_frames}: use longer clips " \
                   f"or version v2 (at least {v2} frames; --model-arg version=v2)"
        return f"; MiCT {self.version} has a total temporal stride of {self.min_frames}"

    @staticmethod
    def _frames(x: Tensor, stride: int) -> Tensor:
        """(N, C, T, H, W) -> every `stride`-th frame stacked as (N*T', C, H, W)."""
        if stride > 1:
            x = x[:, :, ::stride]
        n, c, t, h, w = x.shape
        return x.transpose(1, 2).reshape(n * t, c, h, w)

    @staticmethod
    def _add_3d(x2d: Tensor, x3d: Tensor) -> Tensor:
        """Cross-domain residual: 2D output (N*T, C, H, W) + 3D output (N, C, T, H, W), in the 2D layout."""
        n, c, t, h, w = x3d.shape
        # reshape, not view: stays a free view for contiguous and channels-last layouts, copies for odd strides
        return (x2d.reshape(n, t, c, h, w) + x3d.transpose(1, 2)).reshape(n * t, c, h, w)

    def forward_stem(self, x: Tensor) -> Tensor:
        """Stem of both branches, merged: (N, 3, T, H, W) -> (N*ceil(T/2), C, H/4, W/4)."""
        y2d = self._frames(x, _STEM_POOL_STRIDE)
        y2d = self.maxpool(self.relu(self.bn1(self.conv1(y2d))))
        y3d = self.maxpool3d(self.stem3d(x))
        return self._add_3d(y2d, y3d)

    def forward_features(self, x: Tensor) -> Tensor:
        self.check_input(x)
        n = x.shape[0]
        y = self.forward_stem(x)
        for i, t_stride in enumerate(self.temporal_strides):
            stage = getattr(self, f"layer{i + 1}")
            conv3d = getattr(self, f"layer{i + 1}_3d")
            _, c, h, w = y.shape
            y5 = y.reshape(n, -1, c, h, w).transpose(1, 2)  # (N, C, T, H, W) view for the 3D branch
            y3d = conv3d(y5)
            y2d = stage[0](self._frames(y5, t_stride) if t_stride > 1 else y)
            y = self._add_3d(y2d, y3d)
            for block in stage[1:]:
                y = block(y)
        _, c, h, w = y.shape
        return y.reshape(n, -1, c, h * w).mean(dim=(1, 3))

    def pretrained_2d_map(self) -> dict[str, str]:
        """2D branch: same names. 3D stem <- 2D stem; each stage's 3D conv <- that stage's first 3x3 conv."""
        mapping = {k: k for k in self.state_dict() if "_3d." not in k and not k.startswith("stem3d.")}
        mapping["stem3d.conv.weight"] = "conv1.weight"
        mapping.update({f"stem3d.bn.{k}": f"bn1.{k}" for k in BN_KEYS})
        for i in range(1, 5):
            mapping[f"layer{i}_3d.conv.weight"] = f"layer{i}.0.conv1.weight"
            mapping.update({f"layer{i}_3d.bn.{k}": f"layer{i}.0.bn1.{k}" for k in BN_KEYS})
        return mapping


def _mict(layers: Sequence[int], num_classes: int, version: str, first_kernel_depth: int, dropout: float,
          width_mult: float) -> MiCTResNet:
    return MiCTResNet(layers, num_classes, version, first_kernel_depth, dropout, width_mult)


@register_model
def mict_resnet18(num_classes: int = 101, version: str = "v1", first_kernel_depth: int = 7, dropout: float = 0.5,
                  width_mult: float = 1.0) -> MiCTResNet:
    """MiCT-ResNet-18 (16.05M parameters at 101 classes with the 7x7x7 stem). v1 needs >= 16 frames, v2 >= 4."""
    return _mict((2, 2, 2, 2), num_classes, version, first_kernel_depth, dropout, width_mult)


@register_model
def mict_resnet34(num_classes: int = 101, version: str = "v1", first_kernel_depth: int = 7, dropout: float = 0.5,
                  width_mult: float = 1.0) -> MiCTResNet:
    """MiCT-ResNet-34 (26.16M parameters at 101 classes). v1 needs >= 16 frames, v2 >= 4."""
    return _mict((3, 4, 6, 3), num_classes, version, first_kernel_depth, dropout, width_mult)
