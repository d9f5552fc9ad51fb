"""2D ResNet parts with torchvision's parameter names (`conv1`, `bn1`, `layerX.Y.conv1`, ...), shared by the
frame-based R2D and the 2D branch of MiCT, so that a torchvision `resnet18`/`resnet34` state_dict loads as is."""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .base import stage_widths

__all__ = ["BasicBlock2d", "make_stage", "add_stages", "stage_widths", "init_2d", "BN_KEYS"]

BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class BasicBlock2d(nn.Module):
    """ResNet BasicBlock (two 3x3 convs + shortcut), torchvision's names."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


def make_stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """One ResNet stage: a (possibly strided) first block, then `blocks - 1` identity blocks."""
    return nn.Sequential(BasicBlock2d(in_planes, planes, stride),
                         *[BasicBlock2d(planes, planes) for _ in range(1, blocks)])


def add_stages(module: nn.Module, layers: Sequence[int], widths: Sequence[int]) -> None:
    """`layer1`..`layerN` of a 2D ResNet on `module`: stride 1 in the first stage, 2 after, from `widths[0]` in."""
    in_planes = widths[0]
    for i, (n_blocks, planes) in enumerate(zip(layers, widths)):
        module.add_module(f"layer{i + 1}", make_stage(in_planes, planes, n_blocks, 1 if i == 0 else 2))
        in_planes = planes


def init_2d(modules: Sequence[nn.Module] | nn.Module) -> None:
    """torchvision's ResNet initialisation: Kaiming (fan_out) convs, BN to identity."""
    mods = modules.modules() if isinstance(modules, nn.Module) else [m for mod in modules for m in mod.modules()]
    for m in mods:
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
