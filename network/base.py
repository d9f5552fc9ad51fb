"""The common interface of every video classifier in the zoo (see docs/ARCHITECTURE.md, network section).

A model takes a float batch `(N, 3, T, H, W)` and returns logits `(N, num_classes)`; `forward_features` gives the
pooled `(N, num_features)` vector, `forward_head` maps it to logits (dropout then the linear classifier).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["STAGE_WIDTHS", "VideoClassifier", "count_parameters", "scale_channels", "stage_widths",
           "to_channels_last"]

#: Output channels of the stem and the four stages of every ResNet in the zoo (2D and 3D).
STAGE_WIDTHS = (64, 128, 256, 512)


def scale_channels(channels: int, width_mult: float) -> int:
    """`channels * width_mult`, rounded, at least 1 (tests build tiny models with width_mult=1/8)."""
    if width_mult <= 0:
        raise ValueError(f"width_mult must be > 0, got {width_mult}")
    return max(1, int(round(channels * width_mult)))


def stage_widths(width_mult: float) -> list[int]:
    """Output channels of the stem and the four stages at `width_mult`."""
    return [scale_channels(c, width_mult) for c in STAGE_WIDTHS]


class VideoClassifier(nn.Module):
    """Base class: input checks, head, classifier reset.

    Subclasses set `num_features`, `num_classes`, `min_frames`, `self.dropout` and `self.fc`, and implement
    `forward_features(x)` (which must call `check_input(x)` first).
    """

    num_features: int
    num_classes: int
    #: Shortest clip the model accepts. Models whose temporal strides would leave the later layers with nothing
    #: but padding raise a clear error below this length rather than silently degrade.
    min_frames: int = 1
    in_channels: int = 3

    def _init_head(self, num_features: int, num_classes: int, dropout: float) -> None:
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_features = num_features
        self.dropout = nn.Dropout(dropout)
        self.reset_classifier(num_classes)

    @property
    def model_name(self) -> str:
        """Registry name when built by `build_model`, else the class name (used in error messages)."""
        return getattr(self, "_model_name", type(self).__name__)

    def check_input(self, x: Tensor) -> None:
        """Raise `ValueError` unless `x` is a float `(N, 3, T, H, W)` batch with at least `min_frames` frames."""
        if not isinstance(x, Tensor):
            raise ValueError(f"{self.model_name}: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 5:
            raise ValueError(
                f"{self.model_name}: expected a 5-D batch (N, {self.in_channels}, T, H, W), "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self.model_name}: expected {self.in_channels} channels in dim 1 of (N, C, T, H, W), "
                f"got shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise ValueError(
                f"{self.model_name}: expected a float tensor (normalised clip), got {x.dtype}"
            )
        if x.shape[2] < self.min_frames:
            raise ValueError(
                f"{self.model_name}: needs at least {self.min_frames} frames, got {x.shape[2]} "
                f"(input shape {tuple(x.shape)}){self.min_frames_hint()}"
            )

    def min_frames_hint(self) -> str:
        """Extra advice appended to the too-few-frames error (overridden by models with variants)."""
        return ""

    def forward_features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_head(self, features: Tensor) -> Tensor:
        """Pooled features `(N, num_features)` -> logits `(N, num_classes)` (dropout, then the classifier)."""
        return self.fc(self.dropout(features))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a fresh one; `num_classes=0` leaves none (forward returns the features)."""
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.num_classes = num_classes
        if num_classes == 0:
            self.fc = nn.Identity()
            return
        fc = nn.Linear(self.num_features, num_classes)
        ref = getattr(self, "fc", None)
        if isinstance(ref, nn.Linear):
            fc = fc.to(device=ref.weight.device, dtype=ref.weight.dtype)
        self.fc = fc

    def pretrained_2d_map(self) -> dict[str, str]:
        """Map of own state_dict keys -> keys of a torchvision 2D ResNet state_dict (for `inflate_2d_resnet`)."""
        raise NotImplementedError(f"{self.model_name} has no 2D ResNet counterpart to inflate from")


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (works on models built on the meta device)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def to_channels_last(model: nn.Module) -> nn.Module:
    """Put 5-D weights in channels_last_3d and 4-D ones in channels_last, in place (MiCT and R2D hold both).

    Feed the model `x.contiguous(memory_format=torch.channels_last_3d)`. On CPU (oneDNN) this is the faster
    layout for MiCT-ResNet (tools.bench.models measures it); values are unchanged.
    """
    for t in list(model.parameters()) + list(model.buffers()):
        if t.dim() == 5:
            t.data = t.data.contiguous(memory_format=torch.channels_last_3d)
        elif t.dim() == 4:
            t.data = t.data.contiguous(memory_format=torch.channels_last)
    return model
