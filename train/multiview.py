"""Multi-view testing on the model side: batches of clip views flattened for the model, softmax averaged back.

A multi-view batch holds clips of shape `(N, V, 3, T, S, S)` (`data.views.MultiViewTransform`): `flatten_views`
makes it `N x V` clips and repeats each clip's label and video index, so the video accumulator averages the
softmax over all K x V views of a video; `average_views` does the same for tools that hold one video's views.
"""
from __future__ import annotations

from typing import Any

import torch

from data.views import MultiViewTransform
from train.inference import build_val_transform

__all__ = ["flatten_views", "average_views", "view_transform", "forward_views"]


def view_transform(preprocess: dict[str, Any], crops: int = 1) -> Any:
    """The checkpoint's validation transform (`crops` 1), or its `crops`-view transform (views stacked)."""
    if crops == 1:
        return build_val_transform(preprocess)
    norm = {k: tuple(preprocess[k]) for k in ("mean", "std") if preprocess.get(k) is not None}
    return MultiViewTransform(int(preprocess["crop_size"]), crops, preprocess.get("resize_short"), **norm,
                              channel_order=preprocess.get("channel_order") or "rgb")


def forward_views(fn: Any, clips: torch.Tensor) -> torch.Tensor:
    """`fn` (e.g. softmax of the model, or its features) of every view, averaged over each clip's views."""
    views = clips.shape[1] if clips.dim() == 6 else 1
    out = fn(flatten_views(clips)[0])
    return average_views(out, views) if views > 1 else out


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
