"""The two 2D ResNet-18 baselines of "A Closer Look at Spatiotemporal Convolutions" (Tran et al., CVPR 2018).

R2D (`r2d_18`): the L frames of a clip are stacked into the channels of the first convolution (3L input channels,
colour c of frame t at channel c*L + t, a plain reshape of `(N, 3, L, H, W)`), so time is collapsed in the first
layer and everything after is a 2D ResNet-18. The clip length is fixed when the model is built (`frames=`, default
16); a clip of another length is a clear error. Its stages are named `stem`, `layer1`..`layer4` like the 3D
ResNets' (all 2D). With `--pretrained-2d` the 2D first conv is spread over the stacked frames (repeated, divided by
L: a clip of identical frames then gives the 2D response).

f-R2D (`fr2d_18`): every frame goes through the same 2D ResNet independently (stacked as a `(N*T, C, H, W)`
batch); the pooled per-frame features are averaged over time before the classifier. The model therefore cannot see
motion: its output is invariant to the order of the frames, which makes it the no-motion baseline. Parameter names
are torchvision's `resnet18`, so a 2D ImageNet state_dict loads as is (the classifier too when it has as many
classes). Earlier versions registered this network as `r2d_18`; their checkpoints load as `fr2d_18`.
"""
from __future__ import annotations

from torch import Tensor, nn

from .base import VideoClassifier
from .registry import register_model
from .resnet2d import BN_KEYS, add_stages, init_2d, stage_widths

__all__ = ["FrameResNet", "StackedFrameResNet", "fr2d_18", "r2d_18"]


class FrameResNet(VideoClassifier):
    """f-R2D: 2D ResNet applied per frame, features averaged over frames and space."""

    def __init__(self, layers: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = 400, dropout: float = 0.0,
                 width_mult: float = 1.0) -> None:
        super().__init__()
        w = stage_widths(width_mult)
        self.conv1 = nn.Conv2d(3, w[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        add_stages(self, layers, w)
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


class StackedFrameResNet(VideoClassifier):
    """R2D: the clip's frames stacked into the input channels of a 2D ResNet (time collapsed in the first conv)."""

    def __init__(self, frames: int = 16, layers: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = 400,
                 dropout: float = 0.0, width_mult: float = 1.0) -> None:
        super().__init__()
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
            raise ValueError(f"r2d_18: frames must be an integer >= 1 (the clip length it stacks), got {frames!r}")
        self.frames = self.min_frames = frames
        w = stage_widths(width_mult)
        self.stem = nn.Sequential(
            nn.Conv2d(3 * frames, w[0], kernel_size=7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(w[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        add_stages(self, layers, w)
        self._init_head(w[-1], num_classes, dropout)
        init_2d(self)

    def check_input(self, x: Tensor) -> None:
        if isinstance(x, Tensor) and x.dim() == 5 and x.shape[2] != self.frames:
            raise ValueError(f"{self.model_name}: built for clips of exactly {self.frames} frames (they are stacked "
                             f"into its first conv's {3 * self.frames} input channels), got {x.shape[2]} (input "
                             f"shape {tuple(x.shape)}); build it with frames={x.shape[2]}")
        super().check_input(x)

    def forward_features(self, x: Tensor) -> Tensor:
        self.check_input(x)
        n, c, t, h, w = x.shape
        f = self.stem(x.reshape(n, c * t, h, w))
        f = self.layer4(self.layer3(self.layer2(self.layer1(f))))
        return f.mean(dim=(2, 3))

    def pretrained_2d_map(self) -> dict[str, str]:
        """torchvision's names with the stem's conv1/bn1 under `stem.0`/`stem.1`; the 3-channel first conv fills
        the 3L stacked channels (`inflate_2d_resnet`)."""
        mapping = {k: k for k in self.state_dict() if not k.startswith("stem.")}
        mapping["stem.0.weight"] = "conv1.weight"
        mapping.update({f"stem.1.{k}": f"bn1.{k}" for k in BN_KEYS})
        return mapping


@register_model
def r2d_18(num_classes: int = 400, dropout: float = 0.0, width_mult: float = 1.0, frames: int = 16
           ) -> StackedFrameResNet:
    """R2D-18: the `frames` frames stacked into 3*frames input channels of a 2D ResNet-18 (11.45M parameters at
    400 classes and 8 frames, 11.52M at 16)."""
    return StackedFrameResNet(frames, (2, 2, 2, 2), num_classes, dropout, width_mult)


@register_model
def fr2d_18(num_classes: int = 400, dropout: float = 0.0, width_mult: float = 1.0) -> FrameResNet:
    """f-R2D-18: frame-based ResNet-18 + temporal average pooling (11.38M parameters at 400 classes)."""
    return FrameResNet((2, 2, 2, 2), num_classes, dropout, width_mult)
