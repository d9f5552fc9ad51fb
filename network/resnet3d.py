"""R3D, the mixed MCk / rMCk, R(2+1)D and CSN video ResNets (Tran et al., CVPR 2018 and ICCV 2019), plain and
with Squeeze and Recursion (SRTG, Stergiou & Poppe 2021), in two layouts.

"A Closer Look at Spatiotemporal Convolutions" (CVPR 2018) compares, at 18 layers, R3D (`r3d_18`), the mixed
networks MC2-MC5 (`mc2_18`..`mc5_18`: 3D convolutions in conv1..conv(k-1), conv1 being the stem and conv2..conv5
layer1..layer4, 2D 1x3x3 ones after), their reverses rMC2-rMC5 (`rmc2_18`..`rmc5_18`: a 2D 1x7x7 stem and 1x3x3
convolutions below group k, 3D after) and R(2+1)D (`r2plus1d_18`; `mid_channels="per_conv"` sizes every (2+1)D
convolution like the 3x3x3 one it replaces, the paper's 33.3M instead of torchvision's 31.5M) with the 2D
baselines of `network.r2d`. 2D layers never stride time, so MCk keeps every frame after group k-1.

`layout="torchvision"`: the module tree and parameter names are torchvision's
(`torchvision.models.video.resnet`): `r3d_18`, `mc3_18` and `r2plus1d_18` load a torchvision state_dict strictly
and give the same outputs; the 34-layer models use the same layout with [3, 4, 6, 3] blocks (the IG-65M R(2+1)D-34
layout). No pool after the stem; the SR block (sigmoid form) scales the residual branch before the addition.
Temporal strides: stem 1, then 2 in layers 2-4 (MC3 keeps time after layer 1); any clip length T >= 1 runs.

`layout="srtg"`: the SRTG reference code's networks: the stem is followed by `MaxPool3d(3, 2, 1)` (halving T, H
and W), the SR block multiplies by the raw LSTM output after the block's final ReLU, and the "Bottleneck" of the
50-200 layer models has expansion 1 (1x1x1 -> 3x3x3 or (2+1)D or depthwise -> 1x1x1, all at the stage width), so
every model ends in 512 features. Clips need at least 2 frames (the stem pool halves time).

Defaults: the 18/34-layer models use `layout="torchvision"`, every other model `layout="srtg"` (torchvision has
no such networks; the reference code defines them); `mc3_18` has the torchvision layout only. Names of the
family: `{r3d,r2plus1d}_{18,34,50,101,152,200}`, `wide_r3d50_2` (twice the bottleneck width), `ir_csn_*` (the
bottleneck's 3x3x3 conv is depthwise) and `ip_csn_*` (a 1x1x1 conv + BN + ReLU before the depthwise one), for
depths 50/101/152, each with an `srtg_` twin holding one SR block per residual block (its tensors under
`layerX.Y.sr.*`, everything else with the plain names, so plain checkpoints load into it by name). Checkpoints of
the reference code load through `network.weights.load_weights` (names mapped by `network.reference_keys`).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from .activation_checkpointing import run_stage
from .base import VideoClassifier, scale_channels, stage_widths
from .registry import register_model, register_name_hint
from .srtg import SqueezeRecursion

__all__ = ["VideoResNet", "BasicBlock3d", "Bottleneck3d", "LAYOUTS", "DEPTHS", "FAMILIES", "video_resnet"]

LAYOUTS = ("torchvision", "srtg")
#: Blocks per stage and block type of each depth.
DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}


#: How a (2+1)D convolution's mid-planes M are chosen: "torchvision" computes M once per block from its input and
#: output widths and reuses it for the block's second convolution (torchvision's and the reference's R(2+1)D, so
#: their checkpoints load); "per_conv" gives every (2+1)D convolution the M of its own input and output widths, so
#: each has exactly the parameters of the 3x3x3 one it replaces (the paper's count: R(2+1)D-18 33.3M, as R3D).
MID_CHANNELS = ("torchvision", "per_conv")


def _mid_planes(in_planes: int, out_planes: int, t: int = 3, d: int = 3) -> int:
    """R(2+1)D mid-planes M = floor(t d^2 Nin Nout / (d^2 Nin + t Nout)): the parameters of one t x d x d conv."""
    return (t * d * d * in_planes * out_planes) // (d * d * in_planes + t * out_planes)


class Conv3x3x3(nn.Conv3d):
    """Full 3x3x3 convolution (R3D); stride applies to time and space."""

    temporal_stride = True

    def __init__(self, in_planes: int, out_planes: int, mid_planes: int, stride: int = 1) -> None:
        super().__init__(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class DepthwiseConv3x3x3(nn.Conv3d):
    """Channel-separated (depthwise) 3x3x3 convolution of ir-CSN; needs in_planes == out_planes."""

    temporal_stride = True

    def __init__(self, in_planes: int, out_planes: int, mid_planes: int, stride: int = 1) -> None:
        super().__init__(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, groups=in_planes,
                         bias=False)


class IPDepthwiseConv3x3x3(nn.Sequential):
    """Interaction-preserving CSN convolution: 1x1x1 conv -> BN -> ReLU -> depthwise 3x3x3 conv."""

    temporal_stride = True

    def __init__(self, in_planes: int, out_planes: int, mid_planes: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv3d(in_planes, out_planes, kernel_size=1, bias=False),
            nn.BatchNorm3d(out_planes),
            nn.ReLU(inplace=True),
            DepthwiseConv3x3x3(out_planes, out_planes, mid_planes, stride),
        )


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


ConvBuilder = Callable[[int, int, int, int], nn.Module]


class _ResidualBlock3d(nn.Module):
    """Shared residual logic: branch, optional SR (before the addition, or after the final ReLU), shortcut."""

    sr: SqueezeRecursion | None
    sr_after_relu: bool

    def _init_tail(self, planes: int, downsample: nn.Module | None, squeeze_recursion: bool, layout: str,
                   temporal_gates: bool) -> None:
        self.sr_after_relu = layout == "srtg"
        self.sr = SqueezeRecursion(planes, mode="raw" if self.sr_after_relu else "sigmoid",
                                   temporal_gates=temporal_gates) if squeeze_recursion else None
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def branch(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        out = self.branch(x)
        if self.sr is not None and not self.sr_after_relu:
            out = self.sr(out)
        out += x if self.downsample is None else self.downsample(x)
        out = self.relu(out)
        if self.sr is not None and self.sr_after_relu:
            out = self.sr(out)
        return out


class BasicBlock3d(_ResidualBlock3d):
    """Two convolutions + identity (or 1x1x1 projection) shortcut, optionally with Squeeze and Recursion."""

    def __init__(self, in_planes: int, planes: int, conv: ConvBuilder, stride: int = 1,
                 downsample: nn.Module | None = None, squeeze_recursion: bool = False, layout: str = "torchvision",
                 temporal_gates: bool = False, mid_channels: str = "torchvision") -> None:
        super().__init__()
        # torchvision (and the reference) compute M once from (in_planes, planes) and reuse it for conv2; kept as
        # the default so that their R(2+1)D checkpoints load
        mid = _mid_planes(in_planes, planes)
        mid2 = _mid_planes(planes, planes) if mid_channels == "per_conv" else mid
        self.conv1 = nn.Sequential(conv(in_planes, planes, mid, stride), nn.BatchNorm3d(planes),
                                   nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(conv(planes, planes, mid2, 1), nn.BatchNorm3d(planes))
        self._init_tail(planes, downsample, squeeze_recursion, layout, temporal_gates)

    def branch(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))


class Bottleneck3d(_ResidualBlock3d):
    """The reference's expansion-1 bottleneck: 1x1x1 -> `conv` (strided) -> 1x1x1, every conv with BN.

    Inner width `int(planes * base_width / 64)`; a (2+1)D conv's mid-planes come from (in_planes, planes) and are
    scaled the same way, as the reference computes them.
    """

    def __init__(self, in_planes: int, planes: int, conv: ConvBuilder, stride: int = 1,
                 downsample: nn.Module | None = None, squeeze_recursion: bool = False, layout: str = "srtg",
                 temporal_gates: bool = False, base_width: int = 64, mid_channels: str = "torchvision") -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0))
        mid = (_mid_planes(width, width) if mid_channels == "per_conv"
               else int(_mid_planes(in_planes, planes) * (base_width / 64.0)))
        self.conv1 = nn.Sequential(nn.Conv3d(in_planes, width, kernel_size=1, bias=False), nn.BatchNorm3d(width),
                                   nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(conv(width, width, mid, stride), nn.BatchNorm3d(width), nn.ReLU(inplace=True))
        self.conv3 = nn.Sequential(nn.Conv3d(width, planes, kernel_size=1, bias=False), nn.BatchNorm3d(planes))
        self._init_tail(planes, downsample, squeeze_recursion, layout, temporal_gates)

    def branch(self, x: Tensor) -> Tensor:
        return self.conv3(self.conv2(self.conv1(x)))


class R3DStem(nn.Sequential):
    """3x7x7 conv, stride (1, 2, 2) -> BN -> ReLU (R3D, MC3 and CSN)."""

    def __init__(self, width: int) -> None:
        super().__init__(
            nn.Conv3d(3, width, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
        )


class SpatialStem(nn.Sequential):
    """2D stem of the reversed mixed networks (rMCk): 1x7x7 conv, stride (1, 2, 2) -> BN -> ReLU, frame by frame."""

    def __init__(self, width: int) -> None:
        super().__init__(
            nn.Conv3d(3, width, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
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


_STEM_POOL_STRIDE = 2


class VideoResNet(VideoClassifier):
    """Generic video ResNet: stem (+ max-pool in the SRTG layout), four stages of basic or bottleneck blocks,
    global average pool, dropout, linear."""

    #: Recompute each residual block in backward (`network.activation_checkpointing`).
    activation_checkpointing = False

    def __init__(self, convs: Sequence[ConvBuilder], layers: Sequence[int], stem: str = "r3d",
                 num_classes: int = 400, dropout: float = 0.0, width_mult: float = 1.0,
                 squeeze_recursion: bool = False, block: str = "basic", base_width: int = 64,
                 layout: str = "torchvision", temporal_gates: bool = False, mid_channels: str = "torchvision"
                 ) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
        if mid_channels not in MID_CHANNELS:
            raise ValueError(f"unknown mid_channels {mid_channels!r}; valid: {', '.join(MID_CHANNELS)}")
        self.mid_channels = mid_channels
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"unknown block {block!r}; valid: basic, bottleneck")
        if temporal_gates and not squeeze_recursion:
            raise ValueError("temporal_gates need Squeeze-and-Recursion blocks: use an srtg_* model")
        self.layout = layout
        self.block_type = block
        self.layers = tuple(layers)
        widths = stage_widths(width_mult)
        if stem == "r3d":
            self.stem: nn.Module = R3DStem(widths[0])
        elif stem == "spatial":
            self.stem = SpatialStem(widths[0])
        elif stem == "r2plus1d":
            # 45 mid-planes in the stem whatever `mid_channels` says, as torchvision and the paper's code have it
            self.stem = R2Plus1DStem(widths[0], scale_channels(45, width_mult))
        else:
            raise ValueError(f"unknown stem {stem!r}")
        if layout == "srtg":
            self.pool = nn.MaxPool3d(kernel_size=3, stride=_STEM_POOL_STRIDE, padding=1)
            self.min_frames = _STEM_POOL_STRIDE
        in_planes = widths[0]
        for i, (conv, n_blocks, planes) in enumerate(zip(convs, layers, widths)):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or in_planes != planes:
                t_stride = stride if getattr(conv, "temporal_stride", True) else 1
                downsample = nn.Sequential(
                    nn.Conv3d(in_planes, planes, kernel_size=1, stride=(t_stride, stride, stride), bias=False),
                    nn.BatchNorm3d(planes),
                )
            blocks = [self._block(in_planes if j == 0 else planes, planes, conv, stride if j == 0 else 1,
                                  downsample if j == 0 else None, squeeze_recursion, temporal_gates, base_width)
                      for j in range(n_blocks)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            in_planes = planes
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self._init_head(widths[-1], num_classes, dropout)
        self._init_weights()

    def _block(self, in_planes: int, planes: int, conv: ConvBuilder, stride: int, downsample: nn.Module | None,
               squeeze_recursion: bool, temporal_gates: bool, base_width: int) -> nn.Module:
        if self.block_type == "basic":
            return BasicBlock3d(in_planes, planes, conv, stride, downsample, squeeze_recursion, self.layout,
                                temporal_gates, self.mid_channels)
        return Bottleneck3d(in_planes, planes, conv, stride, downsample, squeeze_recursion, self.layout,
                            temporal_gates, base_width, self.mid_channels)

    def min_frames_hint(self) -> str:
        return "; the SRTG layout's stem max-pool halves time (layout='torchvision' accepts 1 frame)"

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
        if self.layout == "srtg":
            x = self.pool(x)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = run_stage(stage, x, self.activation_checkpointing)
        return self.avgpool(x).flatten(1)

    def pretrained_2d_map(self) -> dict[str, str]:
        """Own keys -> torchvision 2D ResNet keys. 3x3x3 / 1x3x3 convs of basic blocks and their BNs map to the
        2D block's; (2+1)D and depthwise convolutions, the expansion-1 bottlenecks and the 45-channel R(2+1)D stem
        have no 2D counterpart."""
        mapping: dict[str, str] = {}
        bn_keys = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
        if isinstance(self.stem, (R3DStem, SpatialStem)):
            mapping["stem.0.weight"] = "conv1.weight"
            mapping.update({f"stem.1.{k}": f"bn1.{k}" for k in bn_keys})
        for i in range(1, 5):
            for j, block in enumerate(getattr(self, f"layer{i}")):
                if not isinstance(block, BasicBlock3d):
                    continue
                prefix = f"layer{i}.{j}"
                for c in (1, 2):
                    conv_seq = getattr(block, f"conv{c}")
                    if not isinstance(conv_seq[0], (Conv3x3x3, Conv1x3x3)):
                        continue
                    mapping[f"{prefix}.conv{c}.0.weight"] = f"{prefix}.conv{c}.weight"
                    mapping.update({f"{prefix}.conv{c}.1.{k}": f"{prefix}.bn{c}.{k}" for k in bn_keys})
                if block.downsample is not None:
                    mapping[f"{prefix}.downsample.0.weight"] = f"{prefix}.downsample.0.weight"
                    mapping.update({f"{prefix}.downsample.1.{k}": f"{prefix}.downsample.1.{k}" for k in bn_keys})
        if isinstance(self.fc, nn.Linear):
            mapping.update({"fc.weight": "fc.weight", "fc.bias": "fc.bias"})
        return mapping


@dataclass(frozen=True)
class Family:
    """A model family: convolution per stage, stem, available depths, bottleneck base width, what it is."""

    convs: tuple[ConvBuilder, ConvBuilder, ConvBuilder, ConvBuilder]
    stem: str
    depths: tuple[int, ...]
    base_width: int = 64
    layouts: tuple[str, ...] = LAYOUTS
    summary: str = ""


#: The mixed networks of "A Closer Look at Spatiotemporal Convolutions": k is the first group (conv1 = the stem,
#: conv2..conv5 = layer1..layer4) that is 2D (MCk: 3D below) or 3D (rMCk: 2D below).
MIXED_KS = (2, 3, 4, 5)


def _mixed(k: int, reverse: bool) -> Family:
    """MCk: 3D (3x3x3) in conv1..conv(k-1), 2D (1x3x3) after; rMCk: 2D (a 1x7x7 stem, 1x3x3) below, 3D after."""
    three_d = [g < k for g in range(2, 6)]  # groups conv2..conv5 = layer1..layer4
    if reverse:
        three_d = [not v for v in three_d]
    convs = tuple(Conv3x3x3 if v else Conv1x3x3 for v in three_d)
    below = "conv1" if k == 2 else f"conv1..conv{k - 1}"
    what = (f"2D (1x7x7 stem, 1x3x3) in {below}, 3D (3x3x3) after" if reverse
            else f"3D (3x7x7 stem, 3x3x3) in {below}, 2D (1x3x3) after")
    return Family(convs, "spatial" if reverse else "r3d", (18,), layouts=("torchvision",),  # type: ignore[arg-type]
                  summary=f"{'rMC' if reverse else 'MC'}{k}: {what}")


_ALL_DEPTHS = tuple(DEPTHS)
FAMILIES: dict[str, Family] = {
    "r3d": Family((Conv3x3x3,) * 4, "r3d", _ALL_DEPTHS),
    **{f"mc{k}": _mixed(k, reverse=False) for k in MIXED_KS},
    **{f"rmc{k}": _mixed(k, reverse=True) for k in MIXED_KS},
    "r2plus1d": Family((Conv2Plus1D,) * 4, "r2plus1d", _ALL_DEPTHS),
    "wide_r3d": Family((Conv3x3x3,) * 4, "r3d", (50,), base_width=128),
    "ir_csn": Family((DepthwiseConv3x3x3,) * 4, "r3d", (50, 101, 152)),
    "ip_csn": Family((IPDepthwiseConv3x3x3,) * 4, "r3d", (50, 101, 152)),
}


def video_resnet(family: str, depth: int, num_classes: int = 400, dropout: float = 0.0, width_mult: float = 1.0,
                 squeeze_recursion: bool = False, layout: str | None = None, temporal_gates: bool = False,
                 mid_channels: str = "torchvision") -> VideoResNet:
    """Build one member of a family at a depth; `layout=None` takes the default (torchvision for 18/34)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; valid: {', '.join(FAMILIES)}")
    fam = FAMILIES[family]
    if depth not in fam.depths:
        raise ValueError(f"{family} has no depth {depth}; valid depths: {', '.join(map(str, fam.depths))}")
    if layout is None:
        layout = default_layout(depth)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    if layout not in fam.layouts:
        raise ValueError(f"{family}_{depth} has no layout {layout!r}; valid: {', '.join(fam.layouts)}")
    block, layers = DEPTHS[depth]
    return VideoResNet(fam.convs, layers, fam.stem, num_classes, dropout, width_mult, squeeze_recursion, block,
                       fam.base_width, layout, temporal_gates, mid_channels)


def default_layout(depth: int) -> str:
    """The 18/34-layer models default to torchvision's layout, the bottleneck ones to the reference's."""
    return "torchvision" if DEPTHS[depth][0] == "basic" else "srtg"


def family_model_name(family: str, depth: int) -> str:
    """The registry name of a family's model of `depth` layers (without the ``srtg_`` prefix)."""
    # the reference spells the wide model wide_r3d50_2 (no underscore before the depth)
    return f"wide_r3d{depth}_2" if family == "wide_r3d" else f"{family}_{depth}"


def _register(family: str, depth: int, squeeze_recursion: bool) -> None:
    fam = FAMILIES[family]
    plain = family_model_name(family, depth)
    name = f"srtg_{plain}" if squeeze_recursion else plain
    default = default_layout(depth) if default_layout(depth) in fam.layouts else fam.layouts[0]

    def builder(num_classes: int = 400, dropout: float = 0.0, width_mult: float = 1.0, layout: str = default,
                temporal_gates: bool = False, mid_channels: str = "torchvision") -> VideoResNet:
        return video_resnet(family, depth, num_classes, dropout, width_mult, squeeze_recursion, layout,
                            temporal_gates, mid_channels)

    block, layers = DEPTHS[depth]
    sr = " with a Squeeze-and-Recursion block in every residual block" if squeeze_recursion else ""
    what = f" ({fam.summary})" if fam.summary else ""
    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = (f"{plain}: {family}{what} {block} blocks {list(layers)}{sr}; layouts "
                       f"{', '.join(fam.layouts)} (default {default}).")
    # build_model rejects by name the arguments a model does not take: temporal gates without SR blocks, and
    # mid-planes without (2+1)D convolutions
    dropped = ({"temporal_gates"} if not squeeze_recursion else set()) | ({"mid_channels"} if family != "r2plus1d"
                                                                          else set())
    if dropped:
        sig = inspect.signature(builder)
        builder.__signature__ = sig.replace(  # type: ignore[attr-defined]
            parameters=[p for p in sig.parameters.values() if p.name not in dropped])
    register_model(builder, name=name)
    globals()[name] = builder
    __all__.append(name)


for _family, _fam in FAMILIES.items():
    for _depth in _fam.depths:
        _register(_family, _depth, squeeze_recursion=False)
        if "srtg" in _fam.layouts:
            _register(_family, _depth, squeeze_recursion=True)
register_name_hint(r"r?mc\d+_\d+", f"the mixed-convolution networks are mc{MIXED_KS[0]}_18..mc{MIXED_KS[-1]}_18 and "
                   f"rmc{MIXED_KS[0]}_18..rmc{MIXED_KS[-1]}_18 (k = the first 2D group of MCk, the first 3D group "
                   f"of rMCk, {MIXED_KS[0]}..{MIXED_KS[-1]}; 2D throughout is fr2d_18, 3D throughout r3d_18)")
