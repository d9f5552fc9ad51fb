"""Checks of the clip shape against the stored frames, before a run or a tool allocates anything.

Frames are resized so that their short side is `resize_short` and then cropped to `clip_size`; a crop far
larger than the stored frames would upscale every frame of every batch (a 4000 px crop of 64x80 frames is
killed for memory long before the first step). Such a run is refused with the sizes named, by the trainer
(``--clip-size``) and by every tool that takes ``--crop-size`` (evaluate, predict, extract_features).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from data.dataset import VideoDataset
from data.store import FrameStoreError, open_video

log = logging.getLogger(__name__)

# Upscaling beyond this factor adds no information and costs memory quadratically.
MAX_UPSCALE = 4.0

__all__ = ["MAX_UPSCALE", "check_clip_fits", "check_frames_fit", "check_preprocess_fits", "needed_short_side",
           "check_dataset_preprocess_fits"]


def check_frames_fit(needed: int, frame_size: tuple[int, int], where: str | os.PathLike, asked: str,
                     remedy: str) -> None:
    """Raise ValueError when frames of `frame_size` ``(H, W)`` must be upscaled beyond `MAX_UPSCALE` to `needed`.

    `asked` names the option that asks for the size (``--crop-size 4000``), `remedy` says what to do instead.
    """
    height, width = frame_size
    short = min(height, width)
    if short > 0 and needed > MAX_UPSCALE * short:
        raise ValueError(f"{asked} needs frames with a short side of {needed} px, {needed / short:.0f}x the stored "
                         f"{width}x{height} frames of {where} (at most {MAX_UPSCALE:.0f}x): {remedy}")


def check_clip_fits(dataset: VideoDataset, clip_size: int, resize_short: int) -> None:
    """Raise ValueError when `resize_short` (and so `clip_size`) is out of proportion to the stored frames."""
    if clip_size > resize_short:
        raise ValueError(f"--clip-size {clip_size} is larger than --resize-short {resize_short}: the crop cannot fit")
    frame_size = _first_frame_size(dataset)
    if frame_size is not None:
        check_frames_fit(resize_short, frame_size, dataset.root, f"--clip-size {clip_size}",
                         "choose a smaller --clip-size/--resize-short or convert at a larger --short-side")


def needed_short_side(preprocess: Mapping[str, Any]) -> int:
    """The short side a model's preprocessing resizes frames to (``resize_short``, a fixed ``resize``, or the crop)."""
    if preprocess.get("resize"):
        return int(min(preprocess["resize"]))
    return int(preprocess.get("resize_short") or preprocess["crop_size"])


def check_preprocess_fits(preprocess: Mapping[str, Any], frame_size: tuple[int, int],
                          where: str | os.PathLike) -> None:
    """`check_frames_fit` for a tool's ``--crop-size`` (the model's preprocessing after the override)."""
    check_frames_fit(needed_short_side(preprocess), frame_size, where, f"--crop-size {preprocess['crop_size']}",
                     "choose a smaller --crop-size")


def check_dataset_preprocess_fits(dataset: VideoDataset, preprocess: Mapping[str, Any]) -> None:
    """`check_preprocess_fits` against the frames of a dataset (its first video)."""
    frame_size = _first_frame_size(dataset)
    if frame_size is not None:
        check_preprocess_fits(preprocess, frame_size, dataset.root)


def _first_frame_size(dataset: VideoDataset) -> tuple[int, int] | None:
    try:
        with open_video(dataset.video_dirs[0]) as reader:
            return tuple(reader.frame_size)
    except FrameStoreError:
        return None  # the dataset reports bad databases itself, naming the file
