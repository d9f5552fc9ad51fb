"""f-R2D: a frame-based 2D ResNet-18 with temporal average pooling at the end (Tran et al., CVPR 2018).

Every frame goes through the same 2D ResNet independently (stacked as a `(N*T, C, H, W)` batch); the pooled
per-frame features are averaged over time before the classifier. The model therefore cannot see motion: its output
is invariant to the order of the frames, which makes it the no-motion baseline. Parameter names are torchvision's
`resnet18`, so a 2D ImageNet state_dict loads as is (the classifier too when it has as many classes).
"""
from __future__ import annotations

from torch import Tensor, nn

from .base import VideoClassifier
from .registry import register_model
from .resnet2d import init_2d, make_stage, stage_widths

__all__ = ["FrameResNet", "r2d_18"]


class FrameResNet(VideoClassifier):
    """2D ResNet applied per frame, features averaged over frames and space."""

    def __init__(self, layers: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = 400, dropout: float = 0.0,
                 width_mult: float = 1.0) -> None:
        super().__init__()
        w = stage_widths(width_mult)
        self.conv1 = nn.Conv2d(3, w[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_planes = w[0]
        for i, (n_blocks, planes) in enumerate(zip(layers, w)):
            self.add_module(f"layer{i + 1}", make_stage(in_planes, planes, n_blocks, 1 if i == 0 else 2))
            in_planes = planes
        self._init_head(w[-1], num_classes, dropout)
        init_2d(self)

    def forward_features(self, x: Tensor) -> Tensor:
        self.check_input(x)
        n, c, t, h, w = x.shape
        f = x.transpose(1, 2).reshape(n * t, c, h, w)
        f = self.maxpool(self.relu(self.bn1(self.conv1(f))))
        f = self.layer4(self.layer3(self.layer2(self.layer1(f))))
        return f.mean(dim=(2, 3)).view(n, t, -1).mean(dim=1)

    def pretrained_2d_map(self) -> dict[str, str]:
        """Every key is its own 2D counterpart."""
        return {k: k for k in self.state_dict()}


@register_model
def r2d_18(num_classes: int = 400, dropout: float = 0.0, width_mult: float = 1.0) -> FrameResNet:
    """f-R2D-18: frame-based ResNet-18 + temporal average pooling (11.38M parameters at 400 classes)."""
    return FrameResNet((2, 2, 2, 2), num_classes, dropout, width_mult)
