"""Cutting clips out of one source video: every ``[time_start, time_end)`` segment of a source in one decoding pass.

``convert_source(job)`` converts the clips of one source (a ``SourceJob``): each becomes its own ``frames.db``
(written by ``data.store.write_frames_db``: temp file, one transaction, verified, renamed, marker last).

- Times are presentation times from the start of the video stream. Without ``--fps`` a clip holds the source
  frames whose time t satisfies ``start <= t < end`` (so 1.0-3.0 s of a 25 fps video is 50 frames, first and last
  within one frame of the segment's edges); with ``--fps F`` output frame k shows the source frame on screen at
  ``start + k / F`` (sample and hold, as the whole-video converter does).
- One pass: the source is opened once; frames between segments are decoded only as far as needed (a gap longer
  than ``SEEK_GAP`` seconds is skipped by seeking to the keyframe before the next segment, which is checked to land
  at or before it, else decoding restarts from the stream's start); a decoded frame is JPEG-encoded at most once,
  however many clips share it, and only if some clip uses it. Clips are written one after another in start order;
  frames that a later, overlapping clip needs are held (as decoded frames) until it is written.
- A segment that runs past the end of the video is clipped to the end, with a warning; one that starts after the
  end is recorded as failed. A video that stops clearly before the duration its container declares is reported
  as truncated: the clips it cannot fill at all fail; one it fills partly is kept, clipped, with a warning.
- Resuming: a clip is skipped when its database is complete and was made from this source (size, mtime), with
  these settings and these times.
"""
from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data.store import DB_NAME, VideoReader, write_frames_db
from tools.ingest.jobs import (
    ConvertError,
    Job,
    Result,
    is_complete,
    output_size,
    settings_meta,
    source_meta,
    video_stream,
)
from tools.ingest.jpeg_encoders import opencv_encoder

log = logging.getLogger(__name__)

__all__ = ["SourceJob", "SourceResult", "convert_source", "open_container", "SEEK_GAP"]

EPS = 1e-4  # seconds: frame times and segment edges closer than this count as equal
SEEK_GAP = 10.0  # seconds of frames nobody needs before seeking instead of decoding through them
SEEK_BACK = 1.0  # seek this far before a segment, so that the keyframe found is at or before its start


@dataclass(frozen=True)
class SourceJob:
    """The clips to cut from one source video: `clips` are per-clip `Job`s whose times are set."""

    source: str
    clips: tuple[Job, ...]
    times: tuple[tuple[float, float], ...]  # (start, end) of each clip, seconds


@dataclass
class SourceResult:
    """The per-clip results of one source, and what decoding it cost (for the log and the tests)."""

    job: SourceJob
    results: list[Result] = field(default_factory=list)
    decoded: int = 0
    seeks: int = 0
    opens: int = 0
    seconds: float = 0.0


def open_container(path: str) -> Any:
    """Open a video file with PyAV (one place, so that a test can count how often a source is opened)."""
    import av

    return av.open(path)


def _time_meta(start: float, end: float) -> dict[str, str]:
    return {"time_start": repr(float(start)), "time_end": repr(float(end))}


def clip_complete(clip: Job, start: float, end: float) -> bool:
    """True when `clip`'s database is complete and made from its source with these settings and times."""
    if not is_complete(clip):
        return False
    try:
        with VideoReader(Path(clip.out_dir), immutable=False, mmap_size=0) as reader:
            meta = reader.meta
    except (OSError, ValueError):
        return False
    return all(meta.get(k) == v for k, v in _time_meta(start, end).items())


@dataclass
class _Entry:
    """One decoded frame: its time, the frame (until encoded) and its JPEG once some clip asked for it."""

    t: float
    frame: Any
    jpeg: bytes | None = None


class _Tape:
    """Decoded frames in time order, kept from the latest frame at or before `floor` on (older ones are dropped)."""

    def __init__(self, frames: Iterator[tuple[float, Any]], encode: Callable[[Any], bytes]) -> None:
        self._frames, self._encode = frames, encode
        self._buf: deque[_Entry] = deque()
        self._base = 0  # absolute index of _buf[0]
        self._done = False
        self.floor = 0.0  # frames before the latest one at or before this time are dropped
        self.keep_from = math.inf  # start of the next clip: its frames stay however far a clip has read
        self.last_t: float | None = None

    def at(self, i: int) -> tuple[int, _Entry | None]:
        """(index, entry) of frame `i` (or of the oldest kept frame if `i` was dropped); None past the end."""
        while i >= self._base + len(self._buf):
            while len(self._buf) >= 2 and self._buf[1].t <= self.floor + EPS:
                self._buf.popleft()
                self._base += 1
            if self._done:
                return i, None
            nxt = next(self._frames, None)
            if nxt is None:
                self._done = True
                return i, None
            self._buf.append(_Entry(*nxt))
            self.last_t = nxt[0]
        i = max(i, self._base)
        return i, self._buf[i - self._base]

    @property
    def first(self) -> int:
        return self._base

    @property
    def done(self) -> bool:
        """True once the decoder has handed out its last frame."""
        return self._done

    def read_up_to(self, t: float) -> None:
        """A clip has used the frames up to `t`: older ones may go unless the next clip needs them."""
        self.floor = min(t, self.keep_from)

    def jpeg(self, entry: _Entry) -> bytes:
        if entry.jpeg is None:
            entry.jpeg, entry.frame = self._encode(entry.frame), None
        return entry.jpeg


def _spans(times: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted segments merged where the gap between them is too short to be worth a seek."""
    spans: list[list[float]] = []
    for s, e in sorted(times):
        if spans and s <= spans[-1][1] + SEEK_GAP:
            spans[-1][1] = max(spans[-1][1], e)
        else:
            spans.append([s, e])
    return [(s, e) for s, e in spans]


def _decoded(container: Any, stream: Any, spans: list[tuple[float, float]], t0: float, dt: float,
             stats: SourceResult) -> Iterator[tuple[float, Any]]:
    """(time, frame) of the frames of `stream` needed for `spans`, in time order, each decoded once."""
    tb = stream.time_base

    def seek(t: float) -> Iterator[Any]:
        container.seek(max(0, int((t + t0) / tb)) if tb else 0, stream=stream, backward=True, any_frame=False)
        stats.seeks += 1
        return container.decode(stream)

    k, last, checking, fell_back = 0, -math.inf, False, False
    can_seek = bool(tb)
    if can_seek and spans[0][0] > SEEK_GAP:
        frames, checking = seek(spans[0][0] - SEEK_BACK), True
    else:
        frames = container.decode(stream)
    while k < len(spans):
        frame = next(frames, None)
        if frame is None:
            return
        stats.decoded += 1
        t = frame.time - t0 if frame.time is not None else last + dt
        if checking:
            checking = False
            if t > spans[k][0] + EPS and not fell_back:
                # The seek landed after the segment (an imprecise index): decode from the start instead.
                log.warning("%s: seeking to %.2f s landed at %.2f s; decoding from the start", stats.job.source,
                            spans[k][0], t)
                fell_back, can_seek = True, False
                frames = seek(-t0)
                continue
        if t <= last:
            continue  # already handed out before a fallback seek
        last = t
        yield t, frame
        if t >= spans[k][1] - EPS:
            while k < len(spans) and spans[k][1] <= t + EPS:
                k += 1
            if can_seek and k < len(spans) and spans[k][0] - t > SEEK_GAP:
                frames, checking = seek(spans[k][0] - SEEK_BACK), True


def _native(tape: _Tape, start: float, end: float) -> Iterator[bytes]:
    """Source frames with ``start <= t < end``."""
    i = tape.first
    while True:
        i, e = tape.at(i)
        if e is None or e.t >= end - EPS:
            return
        if e.t >= start - EPS:
            yield tape.jpeg(e)
            tape.read_up_to(e.t)
        i += 1


def _held(tape: _Tape, start: float, end: float, fps: float, dt: float) -> Iterator[bytes]:
    """The frame on screen at ``start + k / fps`` for every such time before `end` and before the video's end."""
    i, e = tape.at(tape.first)
    if e is None:
        return
    k = 0
    while True:
        tau = start + k / fps
        if tau >= end - EPS:
            return
        while True:
            j, n = tape.at(i + 1)
            if n is None or n.t > tau + EPS:
                break
            i, e = j, n
        if n is None and tau >= e.t + dt - EPS:
            return  # past the last frame's display time
        yield tape.jpeg(e)
        tape.read_up_to(e.t)
        k += 1


def convert_source(job: SourceJob) -> SourceResult:
    """Cut every clip of `job` from its source in one pass; never raises for a bad video (failed Results)."""
    begin = time.perf_counter()
    out = SourceResult(job)
    todo = []
    for clip, (s, e) in zip(job.clips, job.times):
        if not clip.overwrite and clip_complete(clip, s, e):
            tmp = Path(clip.out_dir) / (DB_NAME + ".tmp")
            if tmp.exists():
                tmp.unlink()
            frames = int((Path(clip.out_dir) / "n_frames").read_text())
            out.results.append(Result(clip, "skipped", frames=frames))
        else:
            todo.append((s, e, clip))
    if not todo:
        return out
    todo.sort(key=lambda c: (c[0], c[1], c[2].video_id))
    try:
        _cut(job, todo, out)
    except ConvertError as e:
        reason = str(e)
    except Exception as e:  # a bad video must never stop the run: record it with its reason
        reason = f"{type(e).__name__}: {e}"
    else:
        reason = ""
    done = {id(r.job) for r in out.results}
    for _, _, clip in todo:
        if id(clip) not in done:
            out.results.append(Result(clip, "failed", reason=reason or "not converted"))
    out.seconds = time.perf_counter() - begin
    return out


def _cut(job: SourceJob, todo: list[tuple[float, float, Job]], out: SourceResult) -> None:
    import av

    source = Path(job.source)
    first = todo[0][2]
    try:
        if source.stat().st_size == 0:
            raise ConvertError("empty file (0 bytes)")
        with open(source, "rb"):
            pass
    except PermissionError as e:
        raise ConvertError(f"permission denied ({e.strerror})") from None
    except FileNotFoundError:
        raise ConvertError("source video not found") from None
    try:
        container = open_container(job.source)
    except av.FFmpegError as e:
        raise ConvertError(f"cannot open as video ({e.strerror or e}; truncated or not a video file?)") from None
    out.opens += 1
    with container:
        stream, src_w, src_h, src_fps = video_stream(container, first.threads)
        src_fps = src_fps or 25.0
        dt = 1.0 / src_fps
        out_w, out_h = output_size(src_w, src_h, first.short_side)
        out_fps = float(first.fps) if first.fps else src_fps
        tb = stream.time_base
        t0 = float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0
        declared = _declared_seconds(stream, container)
        to_jpeg = opencv_encoder(first.quality, first.jpeg_optimize)

        def encode(frame: Any) -> bytes:
            if (frame.width, frame.height) != (out_w, out_h):
                bgr = frame.to_ndarray(format="bgr24", width=out_w, height=out_h, interpolation="AREA")
            else:
                bgr = frame.to_ndarray(format="bgr24")
            try:
                return to_jpeg(np.ascontiguousarray(bgr))
            except ValueError as e:
                raise ConvertError(str(e)) from None

        spans = _spans([(s, e) for s, e, _ in todo])
        tape = _Tape(_decoded(container, stream, spans, t0, dt, out), encode)
        info = {"width": out_w, "height": out_h, "fps": out_fps, "source_fps": src_fps,
                "codec": stream.codec_context.name}
        for n, (s, e, clip) in enumerate(todo):
            tape.floor = s
            tape.keep_from = todo[n + 1][0] if n + 1 < len(todo) else math.inf
            out.results.append(_write_clip(clip, s, e, tape, info, dt, declared))


def _declared_seconds(stream: Any, container: Any) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1e6
    return None


def _write_clip(clip: Job, s: float, e: float, tape: _Tape, info: dict, dt: float,
                declared: float | None) -> Result:
    """Write one clip from the tape; a decoding error fails this clip (and, raised on, the clips after it)."""
    import av

    begin = time.perf_counter()
    frames = _held(tape, s, e, float(clip.fps), dt) if clip.fps else _native(tape, s, e)
    try:
        head = next(frames, None)
    except av.FFmpegError as err:
        raise ConvertError(f"decoding failed after {tape.last_t or 0:.2f} s ({err.strerror or err})") from None
    end_t = tape.last_t
    if head is None:
        if end_t is not None and declared and end_t + max(1.0, 0.02 * declared) < min(s, declared):
            return Result(clip, "failed", reason=f"truncated? decoding stopped at {end_t:.2f} s of {declared:.2f} s")
        if not tape.done:  # a gap in the timestamps (variable frame rate) longer than the segment
            return Result(clip, "failed", reason=f"no frame of the video is shown during {s:g}-{e:g} s")
        video_end = "no frames" if end_t is None else f"{end_t + dt:.2f} s"
        return Result(clip, "failed", reason=f"segment {s:g}-{e:g} s starts after the video's end ({video_end})")
    meta = {**source_meta(Path(clip.source)), **settings_meta(clip), **_time_meta(s, e), "label": clip.label,
            "video_id": clip.video_id, "jpeg_optimize": str(int(clip.jpeg_optimize)),
            **{k: str(v) for k, v in info.items()}}

    def all_frames() -> Iterator[bytes]:
        yield head
        yield from frames

    try:
        n = write_frames_db(clip.out_dir, all_frames(), meta, page_size=clip.page_size)
    except av.FFmpegError as err:
        raise ConvertError(f"decoding failed after {tape.last_t or 0:.2f} s ({err.strerror or err})") from None
    warnings = []
    video_end = (tape.last_t or 0.0) + dt
    if tape.done and video_end < e - EPS:
        if declared and video_end + max(1.0, 0.02 * declared) < min(e, declared):
            warnings.append(f"truncated? decoding stopped at {video_end:.2f} s of {declared:.2f} s declared")
        warnings.append(f"{clip.label}/{clip.video_id}: segment {s:g}-{e:g} s runs past the video's end "
                        f"({video_end:.2f} s): clipped to {n} frames")
    nbytes = (Path(clip.out_dir) / DB_NAME).stat().st_size
    return Result(clip, "converted", frames=n, bytes=nbytes, seconds=time.perf_counter() - begin,
                  warnings=warnings)
