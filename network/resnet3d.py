"""R3D, MC3 and R(2+1)D video ResNets (Tran et al., "A Closer Look at Spatiotemporal Convolutions", CVPR 2018).

The module tree and parameter names are torchvision's (`torchvision.models.video.resnet`): `r3d_18`, `mc3_18` and
`r2plus1d_18` load a torchvision state_dict strictly and give the same outputs; `r3d_34` and `r2plus1d_34` use the
same layout with [3, 4, 6, 3] blocks (the layout of the IG-65M R(2+1)D-34 checkpoints). The `srtg_*` variants add a
Squeeze-and-Recursion block (network/srtg.py) to every residual block; their extra tensors live under
`layerX.Y.sr.*`, everything else keeps the plain names, so plain checkpoints load into them by name.

Temporal strides: stem 1, then 2 in layers 2-4 (R3D, R(2+1)D; MC3 keeps time after layer 1). Every temporal
convolution is padded by 1 on each side, so any clip length T >= 1 runs (T -> ceil(T/8)).
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .base import VideoClassifier, scale_channels
from .registry import register_model
from .srtg import SqueezeRecursion

__all__ = ["VideoResNet", "r3d_18", "r3d_34", "mc3_18", "r2plus1d_18", "r2plus1d_34",
           "srtg_r3d_18", "srtg_r3d_34", "srtg_r2plus1d_18", "srtg_r2plus1d_34"]

STAGE_WIDTHS = (64, 128, 256, 512)


def _mid_planes(in_planes: int, out_planes: int) -> int:
    """R(2+1)D mid-planes M = floor(27 Nin Nout / (9 Nin + 3 Nout)): same parameters as one 3x3x3 conv."""
    return (27 * in_planes * out_planes) // (9 * in_planes + 3 * out_planes)


class Conv3x3x3(nn.Conv3d):
    """Full 3x3x3 convolution (R3D); stride applies to time and space."""

    temporal_stride = True

    def __init__(self, in_planes: int, out_planes: int, mid_planes: int, stride: int = 1) -> None:
        super().__init__(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class Conv1x3x3(nn.Conv3d):
    """Spatial-only 1x3x3 convolution (the 2D layers of MC3); never strides time."""

    temporal_stride = False

    def __init__(self, in_planes: int, out_planes: int, mid_planes: int, stride: int = 1) -> None:
        super().__init__(in_planes, out_planes, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                         padding=(0, 1, 1), bias=False)


class Conv2Plus1D(nn.Sequential):
    """(2+1)D factorised convolution: 1x3x3 spatial -> BN -> ReLU -> 3x1x1 temporal."""

    temporal_stride = True

    def __init__(self, in_planes: int, out_planes: int, mid_planes: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv3d(in_planes, mid_planes, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                      padding=(0, 1, 1), bias=False),
            nn.BatchNorm3d(mid_planes),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid_planes, out_planes, kernel_size=(3, 1, 1), stride=(stride, 1, 1),
                      padding=(1, 0, 0), bias=False),
        )


ConvBuilder = type[Conv3x3x3] | type[Conv1x3x3] | type[Conv2Plus1D]


class BasicBlock3d(nn.Module):
    """Two convolutions + identity (or 1x1x1 projection) shortcut, optionally gated by a Squeeze-and-Recursion."""

    def __init__(self, in_planes: int, planes: int, conv: ConvBuilder, stride: int = 1,
                 downsample: nn.Module | None = None, squeeze_recursion: bool = False) -> None:
        super().__init__()
        # torchvision computes M once from (in_planes, planes) and reuses it for conv2 as well; kept so that
        # its R(2+1)D checkpoints load
        mid = _mid_planes(in_planes, planes)
        self.conv1 = nn.Sequential(conv(in_planes, planes, mid, stride), nn.BatchNorm3d(planes),
                                   nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(conv(planes, planes, mid), nn.BatchNorm3d(planes))
        self.sr = SqueezeRecursion(planes) if squeeze_recursion else None
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        if self.sr is not None:
            out = self.sr(out)
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class R3DStem(nn.Sequential):
    """3x7x7 conv, stride (1, 2, 2) -> BN -> ReLU (R3D and MC3)."""

    def __init__(self, width: int) -> None:
        super().__init__(
            nn.Conv3d(3, width, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
        )


class R2Plus1DStem(nn.Sequential):
    """Factorised stem: 1x7x7 conv to 45 channels, BN, ReLU, 3x1x1 conv, BN, ReLU (torchvision's)."""

    def __init__(self, width: int, mid: int = 45) -> None:
        super().__init__(
            nn.Conv3d(3, mid, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, width, kernel_size=(3, 1, 1), stride=1, padding=(1, 0, 0), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
        )


class VideoResNet(VideoClassifier):
    """Generic video ResNet: stem, four stages of `BasicBlock3d`, global average pool, dropout, linear."""

    def __init__(self, convs: Sequence[ConvBuilder], layers: Sequence[int], stem: str = "r3d",
                 num_classes: int = 400, dropout: float = 0.0, width_mult: float = 1.0,
                 squeeze_recursion: bool = False) -> None:
        super().__init__()
        widths = [scale_channels(c, width_mult) for c in STAGE_WIDTHS]
        if stem == "r3d":
            self.stem: nn.Module = R3DStem(widths[0])
        elif stem == "r2plus1d":
            self.stem = R2Plus1DStem(widths[0], scale_channels(45, width_mult))
        else:
            raise ValueError(f"unknown stem {stem!r}")
        in_planes = widths[0]
        for i, (conv, n_blocks, planes) in enumerate(zip(convs, layers, widths)):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or in_planes != planes:
                t_stride = stride if conv.temporal_stride else 1
                downsample = nn.Sequential(
                    nn.Conv3d(in_planes, planes, kernel_size=1, stride=(t_stride, stride, stride), bias=False),
                    nn.BatchNorm3d(planes),
                )
            blocks = [BasicBlock3d(in_planes, planes, conv, stride, downsample, squeeze_recursion)]
            blocks += [BasicBlock3d(planes, planes, conv, squeeze_recursion=squeeze_recursion)
                       for _ in range(1, n_blocks)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            in_planes = planes
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self._init_head(widths[-1], num_classes, dropout)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        self.check_input(x)
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        return self.avgpool(x).flatten(1)

    def pretrained_2d_map(self) -> dict[str, str]:
        """Own keys -> torchvision 2D ResNet keys. 3x3x3 / 1x3x3 convs and their BNs map to the 2D block's;
        the factorised (2+1)D convolutions and the 45-channel R(2+1)D stem have no 2D counterpart."""
        mapping: dict[str, str] = {}
        bn_keys = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
        if isinstance(self.stem, R3DStem):
            mapping["stem.0.weight"] = "conv1.weight"
            mapping.update({f"stem.1.{k}": f"bn1.{k}" for k in bn_keys})
        for i in range(1, 5):
            for j, block in enumerate(getattr(self, f"layer{i}")):
                prefix = f"layer{i}.{j}"
                for c in (1, 2):
                    conv_seq = getattr(block, f"conv{c}")
                    if isinstance(conv_seq[0], Conv2Plus1D):
                        continue
                    mapping[f"{prefix}.conv{c}.0.weight"] = f"{prefix}.conv{c}.weight"
                    mapping.update({f"{prefix}.conv{c}.1.{k}": f"{prefix}.bn{c}.{k}" for k in bn_keys})
                if block.downsample is not None:
                    mapping[f"{prefix}.downsample.0.weight"] = f"{prefix}.downsample.0.weight"
                    mapping.update({f"{prefix}.downsample.1.{k}": f"{prefix}.downsample.1.{k}" for k in bn_keys})
        if isinstance(self.fc, nn.Linear):
            mapping.update({"fc.weight": "fc.weight", "fc.bias": "fc.bias"})
        return mapping


def _build(convs: Sequence[ConvBuilder], layers: Sequence[int], stem: str, num_classes: int, dropout: float,
           width_mult: float, squeeze_recursion: bool = False) -> VideoResNet:
    return VideoResNet(convs, layers, stem, num_classes, dropout, width_mult, squeeze_recursion)


_R3D = (Conv3x3x3,) * 4
_MC3 = (Conv3x3x3,) + (Conv1x3x3,) * 3
_R2P1D = (Conv2Plus1D,) * 4
_D18 = (2, 2, 2, 2)
_D34 = (3, 4, 6, 3)


@register_model
def r3d_18(num_classes: int = 400, dropout: float = 0.0, width_mult: float = 1.0) -> VideoResNet:
    """R3D-18: 3D ResNet-18, torchvision layout (33,371,472 parameters at 400 classes)."""
    return _build(_R3D, _D18, "r3d", num_classes, dropout, width_mult)


@register_model
def r3d_34(num_classes: int = 400, dropout: float = 0.0, width_mult: float = 1.0) -> VideoResNet:
    """R3D-34: 3D ResNet-34 in torchvision's layout (63.68M parameters at 400 classes)."""
    return _build(_R3D, _D34, "r3d", num_classes, dropout, width_mult)


@register_model
def mc3_18(num_classes: int = 400, dropout: float = 0.0, width_mult: float = 1.0) -> VideoResNet:
    """MC3-18: 3D convolutions in the stem and layer 1, 2D (1x3x3) in layers 2-4 (11,695,440 at 400)."""
    return _build(_MC3, _D18, "r3d", num_classes, dropout, width_mult)


@register_model
def r2plus1d_18(num_classes: int = 400, dropout: float = 0.0, width_mult: float = 1.0) -> VideoResNet:
    """R(2+1)D-18: factorised spatial/temporal convolutions (31,505,325 parameters at 400 classes)."""
    return _build(_R2P1D, _D18, "r2plus1d", num_classes, dropout, width_mult)


@register_model
def r2plus1d_34(num_classes: int = 400, dropout: float = 0.0, width_mult: float = 1.0) -> VideoResNet:
    """R(2+1)D-34 in torchvision's layout ([3, 4, 6, 3] blocks; the IG-65M checkpoints' layout)."""
    return _build(_R2P1D, _D34, "r2plus1d", num_classes, dropout, width_mult)


@register_model
def srtg_r3d_18(num_classes: int = 400, dropout: float = 0.0, width_mult: float = 1.0) -> VideoResNet:
    """R3D-18 with a Squeeze-and-Recursion block in every residual block (44.54M at 400 classes)."""
    return _build(_R3D, _D18, "r3d", num_classes, dropout, width_mult, squeeze_recursion=True)


@register_model
def srtg_r3d_34(num_classes: int = 400, dropout: float = 0.0, width_mult: float = 1.0) -> VideoResNet:
    """R3D-34 with Squeeze-and-Recursion blocks."""
    return _build(_R3D, _D34, "r3d", num_classes, dropout, width_mult, squeeze_recursion=True)


@register_model
def srtg_r2plus1d_18(num_classes: int = 400, dropout: float = 0.0, width_mult: float = 1.0) -> VideoResNet:
    """R(2+1)D-18 with Squeeze-and-Recursion blocks."""
    return _build(_R2P1D, _D18, "r2plus1d", num_classes, dropout, width_mult, squeeze_recursion=True)


@register_model
def srtg_r2plus1d_34(num_classes: int = 400, dropout: float = 0.0, width_mult: float = 1.0) -> VideoResNet:
    """R(2+1)D-34 with Squeeze-and-Recursion blocks."""
    return _build(_R2P1D, _D34, "r2plus1d", num_classes, dropout, width_mult, squeeze_recursion=True)
