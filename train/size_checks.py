"""Checks of the clip shape against the stored frames, before a run allocates anything.

Frames are resized so that their short side is `resize_short` and then cropped to `clip_size`; a crop far
larger than the stored frames would upscale every frame of every batch (a 4000 px crop of 64x80 frames is
killed for memory long before the first step). Such a run is refused with the sizes named.
"""
from __future__ import annotations

import logging

from data.dataset import VideoDataset
from data.store import FrameStoreError, open_video

log = logging.getLogger(__name__)

# Upscaling beyond this factor adds no information and costs memory quadratically.
MAX_UPSCALE = 4.0


def check_clip_fits(dataset: VideoDataset, clip_size: int, resize_short: int) -> None:
    """Raise ValueError when `resize_short` (and so `clip_size`) is out of proportion to the stored frames."""
    if clip_size > resize_short:
        raise ValueError(f"--clip-size {clip_size} is larger than --resize-short {resize_short}: the crop cannot fit")
    try:
        with open_video(dataset.video_dirs[0]) as reader:
            height, width = reader.frame_size
    except FrameStoreError:
        return  # the dataset reports bad databases itself, naming the file
    short = min(height, width)
    if resize_short > MAX_UPSCALE * short:
        raise ValueError(f"--clip-size {clip_size} needs frames with a short side of {resize_short} px, "
                         f"{resize_short / short:.0f}x the stored {width}x{height} frames of {dataset.root} (at most "
                         f"{MAX_UPSCALE:.0f}x): choose a smaller --clip-size/--resize-short or convert at a larger "
                         "--short-side")
