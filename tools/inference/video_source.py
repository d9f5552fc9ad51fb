"""Frames from a raw video file (PyAV) or a converted ``frames.db`` folder behind one small interface.

The inference tools never convert a video first: a raw file is decoded once, front to back, and only the frames
that some clip needs are turned into RGB arrays. ``assemble_clips`` hands out clips as soon as their last frame has
been decoded and frees every frame no pending clip still needs, so a sliding-window timeline over a long video holds
about one window of frames in memory, not the whole video.
"""
from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from tools.ingest.video_folder import file_problem

log = logging.getLogger(__name__)

DEFAULT_FPS = 25.0
_STORE_CHUNK = 64  # frames per SQLite query when streaming a frames.db


class VideoSourceError(ValueError):
    """A video that cannot be opened or read; the message names the file."""


class VideoSource(ABC):
    """A video whose frames can be read by 0-based index as ``uint8`` RGB arrays ``(H, W, 3)``.

    Attributes: ``path``, ``name`` (a short display name), ``n_frames``, ``fps`` and ``fps_known`` (False when the
    source carries no frame rate and ``DEFAULT_FPS`` is assumed).
    """

    path: str
    name: str
    n_frames: int
    fps: float
    fps_known: bool = True

    @abstractmethod
    def iter_frames(self, indices: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, frame)`` for each distinct requested index, in increasing index order."""

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats kept) as one ``(T, H, W, 3)`` uint8 RGB array."""
        idx = np.asarray(indices, dtype=np.int64)
        frames = dict(self.iter_frames(idx.tolist()))
        return np.stack([frames[int(i)] for i in idx])

    @property
    def duration(self) -> float:
        """Length in seconds, ``n_frames / fps``."""
        return self.n_frames / self.fps

    @abstractmethod
    def close(self) -> None:
        """Release file handles."""

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_indices(self, indices: Iterable[int]) -> list[int]:
        wanted = sorted({int(i) for i in indices})
        if wanted and (wanted[0] < 0 or wanted[-1] >= self.n_frames):
            bad = wanted[0] if wanted[0] < 0 else wanted[-1]
            raise VideoSourceError(f"{self.path}: frame {bad} out of range (video has {self.n_frames} frames)")
        return wanted


class PyAVSource(VideoSource):
    """A raw video file (mp4, avi, webm, ...) decoded with PyAV's bundled FFmpeg."""

    def __init__(self, path: str | os.PathLike) -> None:
        import av  # imported here so frame-store-only users never need it loaded

        self.path = str(path)
        self.name = Path(self.path).stem
        if os.path.isdir(self.path):
            raise VideoSourceError(f"{self.path}: is a folder without frames.db, not a video")
        problem = file_problem(self.path)
        if problem:
            raise VideoSourceError(f"{self.path}: {problem}")
        try:
            with av.open(self.path) as container:
                if not container.streams.video:
                    raise VideoSourceError(f"{self.path}: no video stream in the file")
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate or stream.base_rate
                self.fps_known = bool(rate) and float(rate) > 0
                self.fps = float(rate) if self.fps_known else DEFAULT_FPS
                self.frame_size = (stream.codec_context.height, stream.codec_context.width)
                # The container header is usually exact; where it is missing (webm, some avi) count packets,
                # which needs no decoding.
                n = stream.frames or sum(1 for p in container.demux(stream) if p.size)
        except VideoSourceError:
            raise
        except (av.FFmpegError, OSError, ValueError) as e:
            raise VideoSourceError(f"{self.path}: not a readable video ({_short(e)})") from e
        if n <= 0:
            raise VideoSourceError(f"{self.path}: the video stream has no frames")
        if not self.fps_known:
            log.warning("%s: no frame rate in the file, assuming %g fps for times", self.path, DEFAULT_FPS)
        self.n_frames = int(n)

    def iter_frames(self, indices: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
        import av

        wanted = self._check_indices(indices)
        if not wanted:
            return
        pos, last_rgb, frame_no = 0, None, -1
        try:
            with av.open(self.path) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"  # frame + slice threads: decode is the cost here
                for frame_no, frame in enumerate(container.decode(stream)):
                    if frame_no != wanted[pos]:
                        continue  # decoded (the codec needs it) but never converted to RGB
                    last_rgb = frame.to_ndarray(format="rgb24")
                    while pos < len(wanted) and wanted[pos] == frame_no:
                        yield frame_no, last_rgb
                        pos += 1
                    if pos == len(wanted):
                        return
        except av.FFmpegError as e:
            raise VideoSourceError(f"{self.path}: decoding failed at frame {frame_no + 1} ({_short(e)})") from e
        # The stream ended before the frame count its header promised.
        decoded = frame_no + 1
        if last_rgb is None:
            raise VideoSourceError(
                f"{self.path}: the stream ended after {decoded} frames, before frame {wanted[pos]} "
                f"(header says {self.n_frames})")
        log.warning("%s: the stream ended after %d frames although the header says %d; the last decoded frame "
                    "stands in for frames %d..%d", self.path, decoded, self.n_frames, wanted[pos], wanted[-1])
        for i in wanted[pos:]:
            yield i, last_rgb

    def close(self) -> None:
        pass  # the file is opened per decoding pass, nothing stays open


class FrameStoreSource(VideoSource):
    """A converted video folder (or its ``frames.db``) read through ``data.open_video``.

    With `min_short_side` (the transform's need) JPEGs are decoded at a reduced DCT scale where that still leaves
    at least that many pixels on the shorter side, as the dataset does: faster, and the same pixels as evaluation.
    """

    def __init__(self, path: str | os.PathLike, min_short_side: int | None = None) -> None:
        from data.store import open_video, reduce_for  # the frame store is optional for raw-video users

        p = Path(path)
        self.path = str(p)
        self.name = p.parent.name if p.name == "frames.db" else p.name
        try:
            self._reader = open_video(self.path)
        except (ValueError, OSError) as e:
            raise VideoSourceError(f"{self.path}: {_short(e)}") from e
        self.n_frames = len(self._reader)
        if self.n_frames <= 0:
            raise VideoSourceError(f"{self.path}: the frame store holds no frames")
        self.frame_size = tuple(self._reader.frame_size)
        self.reduce = reduce_for(self.frame_size, min_short_side)
        fps = _to_float((self._reader.meta or {}).get("fps"))
        self.fps_known = fps is not None and fps > 0
        self.fps = fps if self.fps_known else DEFAULT_FPS
        if not self.fps_known:
            log.warning("%s: no fps in the frame store (legacy format?), assuming %g fps for times", self.path,
                        DEFAULT_FPS)

    def iter_frames(self, indices: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
        wanted = self._check_indices(indices)
        for start in range(0, len(wanted), _STORE_CHUNK):
            chunk = wanted[start:start + _STORE_CHUNK]
            try:
                frames = self._reader.read(chunk, reduce=self.reduce)
            except (ValueError, OSError) as e:
                raise VideoSourceError(f"{self.path}: {_short(e)}") from e
            yield from zip(chunk, frames)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        # One indexed query; the store keeps repeats and order itself.
        self._check_indices(indices)
        try:
            return self._reader.read(np.asarray(indices, dtype=np.int64), reduce=self.reduce)
        except (ValueError, OSError) as e:
            raise VideoSourceError(f"{self.path}: {_short(e)}") from e

    def close(self) -> None:
        self._reader.close()


def is_frame_store(path: str | os.PathLike) -> bool:
    """True for a converted video: a ``frames.db`` file or a folder holding one."""
    p = Path(path)
    return p.name == "frames.db" or (p.is_dir() and (p / "frames.db").is_file())


def open_source(path: str | os.PathLike, min_short_side: int | None = None) -> VideoSource:
    """Open a raw video file with PyAV, or a converted ``frames.db`` folder with the frame store reader.

    `min_short_side` lets a frame store decode at reduced scale (see `FrameStoreSource`); raw videos ignore it.
    Raises ``VideoSourceError`` (a ``ValueError``) naming the file for a missing, unreadable or empty video.
    """
    if is_frame_store(path):
        return FrameStoreSource(path, min_short_side)
    return PyAVSource(path)


def assemble_clips(source: VideoSource, clips: Sequence[np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(clip_number, (T, H, W, 3) uint8)`` for every index array in ``clips``, decoding the video once.

    Clips come out in the order their last frame is reached. A frame is held only while a pending clip still needs
    it, so overlapping sliding windows share frames and memory stays around one window's worth.
    """
    clips = [np.asarray(c, dtype=np.int64) for c in clips]
    refs: dict[int, int] = {}
    for c in clips:
        for i in np.unique(c).tolist():
            refs[i] = refs.get(i, 0) + 1
    order = sorted(range(len(clips)), key=lambda k: int(clips[k].max()))
    held: dict[int, np.ndarray] = {}
    nxt = 0
    for idx, frame in source.iter_frames(refs.keys()):
        held[idx] = frame
        while nxt < len(order) and int(clips[order[nxt]].max()) <= idx:
            k = order[nxt]
            yield k, np.stack([held[i] for i in clips[k].tolist()])
            for i in np.unique(clips[k]).tolist():
                refs[i] -= 1
                if refs[i] == 0:
                    del held[i]
            nxt += 1
    if nxt != len(order):
        raise VideoSourceError(f"{source.path}: frames ended before clip {order[nxt]} was complete")


def _to_float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _short(e: BaseException) -> str:
    """One line of an exception message, without FFmpeg's errno prefix."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if text.startswith("[Errno"):
        text = text.split("]", 1)[-1].strip()
    return text
