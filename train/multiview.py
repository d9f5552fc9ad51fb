"""Multi-view testing on the model side: a checkpoint's view transform, and a model run over every view.

A multi-view batch holds clips of shape `(N, V, 3, T, S, S)` (`data.views.MultiViewTransform`); `forward_views`
runs the model on its `N x V` views (`data.views.flatten_views`) and averages each clip's views back
(`data.views.average_views`).
"""
from __future__ import annotations

from typing import Any

import torch

from data.views import MultiViewTransform, average_views, flatten_views
from train.inference import build_val_transform

__all__ = ["view_transform", "forward_views"]


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
