"""Spatial views for multi-view testing: 1 centre crop or 3 full-height (full-width) crops per clip.

The 3-crop protocol of SlowFast and the torchvision video references: the shorter side is resized to the crop
size, and three square crops are taken along the longer side, at its start, centre and end (left/centre/right for
landscape frames, top/centre/bottom for portrait ones), so together they cover the whole frame. With one crop
the transform is the validation transform (resize the shorter side to `resize_short`, centre crop).

`MultiViewTransform` returns every view of a clip at once, `(views, 3, T, S, S)`, so the frames are read and
decoded once per clip; `flatten_views` turns a batch of such clips into a batch of views, repeating each clip's
label and video index (so the video accumulator averages the softmax over all K x V views of a video), and
`average_views` averages outputs back over each clip's views.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from data.transforms import MEAN, STD, ResizedCrop, ToTensorNormalize

__all__ = ["CROP_CHOICES", "view_offsets", "MultiViewTransform", "flatten_views", "average_views"]

CROP_CHOICES = (1, 3)


def view_offsets(long_side: int, crop_size: int, crops: int) -> list[int]:
    """Starts of `crops` crops of `crop_size` along a side of `long_side` pixels: start, centre, end."""
    free = long_side - crop_size
    if free < 0:
        raise ValueError(f"a side of {long_side} px cannot hold a {crop_size}-px crop")
    if crops == 1:
        return [free // 2]
    if crops == 3:
        return [0, free // 2, free]
    raise ValueError(f"crops must be one of {CROP_CHOICES}, got {crops}")


class MultiViewTransform:
    """`t(clip (T, H, W, 3) uint8, rng)` -> `(crops, 3, T, S, S)` float tensor, normalised."""

    def __init__(self, crop_size: int, crops: int = 3, resize_short: int | None = None,
                 mean: Sequence[float] = MEAN, std: Sequence[float] = STD, channel_order: str = "rgb") -> None:
        if crops not in CROP_CHOICES:
            raise ValueError(f"crops must be one of {CROP_CHOICES}, got {crops}")
        self.crop_size = int(crop_size)
        self.crops = int(crops)
        self.centre = ResizedCrop(crop_size, resize_short, None, "center") if crops == 1 else None
        self.normalize = ToTensorNormalize(mean, std, channel_order)

    @property
    def min_short_side(self) -> int:
        """Shorter side the frames need (lets the reader decode JPEGs at a reduced size)."""
        return self.centre.resize_short if self.centre is not None else self.crop_size

    def _resize_short(self, clip: np.ndarray) -> np.ndarray:
        t, h, w, _ = clip.shape
        scale = self.crop_size / min(h, w)
        size = (max(self.crop_size, round(w * scale)), max(self.crop_size, round(h * scale)))  # cv2: (w, h)
        if (size[1], size[0]) == (h, w):
            return clip
        interp = cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR
        return np.stack([cv2.resize(f, size, interpolation=interp) for f in clip])

    def __call__(self, clip: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        if self.centre is not None:
            return self.normalize(self.centre(clip, rng)).unsqueeze(0)
        frames = self._resize_short(clip)
        _, h, w, _ = frames.shape
        s = self.crop_size
        views = []
        for start in view_offsets(max(h, w), s, self.crops):
            view = frames[:, :, start:start + s] if w >= h else frames[:, start:start + s, :]
            views.append(self.normalize(np.ascontiguousarray(view[:, :s, :s])))
        return torch.stack(views)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(crop_size={self.crop_size}, crops={self.crops})"


def flatten_views(clips: torch.Tensor, labels: torch.Tensor | None = None,
                  video_index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                     torch.Tensor | None]:
    """`(N, V, C, T, H, W)` -> `(N*V, C, T, H, W)` with labels and video indices repeated V times (5-D: as is)."""
    if clips.dim() != 6:
        return clips, labels, video_index
    n, v = clips.shape[:2]
    flat = clips.reshape(n * v, *clips.shape[2:])

    def repeat(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.repeat_interleave(v, dim=0)

    return flat, repeat(labels), repeat(video_index)


def average_views(probs: torch.Tensor, views: int) -> torch.Tensor:
    """Mean of consecutive groups of `views` rows: `(N*V, classes)` -> `(N, classes)`."""
    if probs.shape[0] % views:
        raise ValueError(f"{probs.shape[0]} rows do not split into groups of {views} views")
    return probs.reshape(probs.shape[0] // views, views, *probs.shape[1:]).mean(dim=1)
