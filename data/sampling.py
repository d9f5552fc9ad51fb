"""Temporal samplers: which frame indices of a video make one clip.

Both samplers return ``np.ndarray`` of ``int64`` of length ``clip_length``, always valid indices of a video of
``n_frames`` frames. A clip that spans more frames than the video has loops over the video (``idx % n_frames``),
so repeated indices are normal and must be read as repeats (the reader keeps them).

- `RandomClipSampler` (training): the frame interval is drawn from a configurable set and the start uniformly
  among the starts whose clip fits; a clip too long for the video starts anywhere and loops.
- `UniformClipSampler` (validation / test): deterministic; ``K`` clips evenly spaced over the video, clip ``k``
  centred in the ``k``-th of ``K`` equal segments (``K = 1``: the centred clip), as in the R(2+1)D evaluation.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["RandomClipSampler", "UniformClipSampler", "clip_span", "as_intervals", "eval_interval"]


def as_intervals(intervals: int | Sequence[int]) -> tuple[int, ...]:
    """Normalise an interval or a set of intervals to a non-empty tuple of positive ints."""
    values = (intervals,) if isinstance(intervals, (int, np.integer)) else tuple(intervals)
    if not values:
        raise ValueError("frame interval list is empty")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"frame interval must be a positive integer, got {v!r}")
        out.append(int(v))
    return tuple(out)


def eval_interval(frame_interval: int | Sequence[int]) -> int:
    """The one interval evaluation samples with: the value itself, or the middle of a (sorted) training set."""
    values = sorted(as_intervals(frame_interval))
    return values[len(values) // 2]


def clip_span(clip_length: int, interval: int) -> int:
    """Number of source frames a clip covers (first to last sampled frame, inclusive)."""
    return (clip_length - 1) * interval + 1


def _check(clip_length: int, n_frames: int) -> None:
    if clip_length < 1:
        raise ValueError(f"clip_length must be >= 1, got {clip_length}")
    if n_frames < 1:
        raise ValueError(f"cannot sample a clip from a video with {n_frames} frames")


class RandomClipSampler:
    """Training sampler: random interval from `intervals`, random start, loop when the clip is too long.

    Call as ``sampler(n_frames, rng)`` with a `numpy.random.Generator`.
    """

    def __init__(self, clip_length: int, intervals: int | Sequence[int] = 2):
        if clip_length < 1:
            raise ValueError(f"clip_length must be >= 1, got {clip_length}")
        self.clip_length = int(clip_length)
        self.intervals = as_intervals(intervals)

    def __call__(self, n_frames: int, rng: np.random.Generator) -> np.ndarray:
        _check(self.clip_length, n_frames)
        interval = self.intervals[rng.integers(len(self.intervals))] if len(self.intervals) > 1 else self.intervals[0]
        span = clip_span(self.clip_length, interval)
        # Clip fits: every start keeping it inside the video is equally likely. Too long: any start, then loop.
        start = int(rng.integers(n_frames - span + 1)) if span <= n_frames else int(rng.integers(n_frames))
        return (start + interval * np.arange(self.clip_length, dtype=np.int64)) % n_frames

    def __repr__(self) -> str:
        return f"{type(self).__name__}(clip_length={self.clip_length}, intervals={list(self.intervals)})"


class UniformClipSampler:
    """Evaluation sampler: clip ``k`` of ``clips_per_video`` is centred in the ``k``-th of K equal segments.

    Deterministic. When the clip is longer than the video, clip ``k`` starts at frame ``k * n // K`` and loops.
    Call as ``sampler(n_frames, clip_index)``.
    """

    def __init__(self, clip_length: int, interval: int = 2, clips_per_video: int = 1):
        if clip_length < 1:
            raise ValueError(f"clip_length must be >= 1, got {clip_length}")
        if clips_per_video < 1:
            raise ValueError(f"clips_per_video must be >= 1, got {clips_per_video}")
        (self.interval,) = as_intervals(interval)
        self.clip_length = int(clip_length)
        self.clips_per_video = int(clips_per_video)

    def start(self, n_frames: int, clip_index: int) -> int:
        """First frame of clip `clip_index` (before looping)."""
        _check(self.clip_length, n_frames)
        if not 0 <= clip_index < self.clips_per_video:
            raise IndexError(f"clip_index {clip_index} out of range for {self.clips_per_video} clips per video")
        k, n_clips = clip_index, self.clips_per_video
        span = clip_span(self.clip_length, self.interval)
        if span > n_frames:
            return (k * n_frames) // n_clips
        # Segment k holds frames [k*n/K, (k+1)*n/K); centring the clip in it leaves (n/K - span)/2 frames on each
        # side. Integer arithmetic (times 2K) keeps it exact; K = 1 gives start = (n - span) // 2.
        start = ((2 * k + 1) * n_frames - n_clips * span) // (2 * n_clips)
        return min(max(start, 0), n_frames - span)

    def __call__(self, n_frames: int, clip_index: int = 0) -> np.ndarray:
        start = self.start(n_frames, clip_index)
        return (start + self.interval * np.arange(self.clip_length, dtype=np.int64)) % n_frames

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(clip_length={self.clip_length}, interval={self.interval}, "
                f"clips_per_video={self.clips_per_video})")
