"""Said once per run: what an epoch of the training loader leaves out (drop_last) or repeats (clips that loop).

Neither is an error, but both change what a model learns from silently: 25 videos in batches of 16 leave 9 out of
every epoch, and a video shorter than one clip is seen as the same frames over and over.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from data.rank_logging import SAME_ON_EVERY_RANK
from data.sampling import as_intervals, clip_span

__all__ = ["DROP_WARN_SHARE", "note_epoch_coverage"]

log = logging.getLogger(__name__)

# Dropping up to this share of the videos per epoch (the last incomplete batch) goes unmentioned.
DROP_WARN_SHARE = 0.05
_MAX_LISTED = 5


def note_epoch_coverage(dataset: Any, loader: Any) -> None:
    """Warn when `loader` drops more than `DROP_WARN_SHARE` of its videos per epoch, and when videos loop."""
    sampler, batch_size = getattr(loader, "sampler", None), getattr(loader, "batch_size", None)
    if sampler is not None and batch_size and getattr(loader, "drop_last", False):
        available = len(sampler)
        dropped = available - len(loader) * batch_size
        if dropped > DROP_WARN_SHARE * available:
            log.warning("%d of %d training videos are left out of every epoch (drop_last: batches of %d); a batch "
                        "size that divides %d keeps them all", dropped, available, batch_size, available,
                        extra=SAME_ON_EVERY_RANK)
    n_frames = getattr(dataset, "n_frames", None)
    clip_length = getattr(dataset, "clip_length", None)
    if n_frames is None or clip_length is None:
        return
    span = clip_span(int(clip_length), min(as_intervals(dataset.frame_interval)))
    short = np.flatnonzero(np.asarray(n_frames) < span)
    if len(short):
        names = [f"{dataset.samples[i].label}/{dataset.samples[i].video_id}" for i in short[:_MAX_LISTED].tolist()]
        log.warning("%d of %d training videos are shorter than one clip (%d frames): their clips loop over the "
                    "video (%s%s)", len(short), len(n_frames), span, ", ".join(names),
                    ", ..." if len(short) > _MAX_LISTED else "", extra=SAME_ON_EVERY_RANK)
