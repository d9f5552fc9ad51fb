"""Multi-view testing on the model side: batches of clip views flattened for the model, softmax averaged back.

A multi-view batch holds clips of shape `(N, V, 3, T, S, S)` (`data.views.MultiViewTransform`): `flatten_views`
makes it `N x V` clips and repeats each clip's label and video index, so the video accumulator averages the
softmax over all K x V views of a video; `average_views` does the same for tools that hold one video's views.
"""
from __future__ import annotations

import torch

__all__ = ["flatten_views", "average_views"]


def flatten_views(clips: torch.Tensor, labels: torch.Tensor | None = None,
                  video_index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                     torch.Tensor | None]:
    """`(N, V, C, T, H, W)` -> `(N*V, C, T, H, W)` with labels and video indices repeated V times (5-D: as is)."""
    if clips.dim() != 6:
        return clips, labels, video_index
    n, v = clips.shape[:2]
    flat = clips.reshape(n * v, *clips.shape[2:])
    rep = (lambda t: None if t is None else t.repeat_interleave(v, dim=0))
    return flat, rep(labels), rep(video_index)


def average_views(probs: torch.Tensor, views: int) -> torch.Tensor:
    """Mean of consecutive groups of `views` rows: `(N*V, classes)` -> `(N, classes)`."""
    if probs.shape[0] % views:
        raise ValueError(f"{probs.shape[0]} rows do not split into groups of {views} views")
    return probs.reshape(probs.shape[0] // views, views, *probs.shape[1:]).mean(dim=1)
