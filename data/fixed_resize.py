"""Resize every frame to a fixed ``height x width`` (aspect ratio not kept), then centre crop: torchvision's
video evaluation preprocessing (``VideoClassification``: resize to 128x171, centre crop 112).

The crop box is computed in the coordinates of the frames given, and only that box is resized, once per frame,
as `data.transforms.ResizedCrop` does: resizing the whole frame to ``H x W`` and cropping ``c x c`` out of its
centre is the same as cropping the centred ``c/H`` x ``c/W`` fraction of the frame and resizing it to ``c x c``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data.transforms import MEAN, STD, Compose, ToTensorNormalize, crop_resize

__all__ = ["FixedResizeCenterCrop", "fixed_resize_val_transform"]


class FixedResizeCenterCrop:
    """Resize to ``resize = (H, W)`` then centre crop ``crop_size`` x ``crop_size``, fused into one resize."""

    def __init__(self, crop_size: int, resize: Sequence[int]):
        rh, rw = (int(v) for v in resize)
        if crop_size < 1 or min(rh, rw) < crop_size:
            raise ValueError(f"resize {rh}x{rw} must be at least the crop size {crop_size} on both sides")
        self.crop_size = int(crop_size)
        self.resize = (rh, rw)

    def short_side_for(self, crop_size: int) -> int:
        """Shorter side the frames are resized to for a crop of `crop_size` (scaled with the crop)."""
        return max(int(crop_size), round(min(self.resize) * crop_size / self.crop_size))

    @property
    def min_short_side(self) -> int:
        return self.short_side_for(self.crop_size)

    def box(self, height: int, width: int, crop_size: int | None = None) -> tuple[int, int, int, int]:
        """Crop box ``(y0, x0, h, w)`` in the coordinates of a ``height x width`` frame."""
        crop = self.crop_size if crop_size is None else int(crop_size)
        rh, rw = (v * crop / self.crop_size for v in self.resize)
        bh = min(height, max(1, round(height * crop / rh)))
        bw = min(width, max(1, round(width * crop / rw)))
        return (height - bh) // 2, (width - bw) // 2, bh, bw

    def __call__(self, clip: np.ndarray, rng: np.random.Generator | None = None,
                 crop_size: int | None = None) -> np.ndarray:
        if not isinstance(clip, np.ndarray) or clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8:
            raise ValueError(f"expected a uint8 clip array (T, H, W, 3), got {getattr(clip, 'shape', clip)!r}")
        crop = self.crop_size if crop_size is None else int(crop_size)
        _, height, width, _ = clip.shape
        return crop_resize(clip, self.box(height, width, crop), crop)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(crop_size={self.crop_size}, resize={self.resize})"


def fixed_resize_val_transform(crop_size: int, resize: Sequence[int], *, mean: Sequence[float] = MEAN,
                               std: Sequence[float] = STD, channel_order: str = "rgb") -> Compose:
    """Evaluation pipeline: fixed resize, centre crop, normalise (a `ClipTransform`)."""
    return Compose([FixedResizeCenterCrop(crop_size, resize), ToTensorNormalize(mean, std, channel_order)])
