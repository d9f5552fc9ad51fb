"""The converter's engine: one video into its ``frames.db`` (`convert_video`), and the worker pool (`run_jobs`).

- Decoding uses PyAV (FFmpeg inside the wheel); frames are optionally resized (``short_side``, aspect kept),
  resampled in time (``fps``: output frame k shows the source frame on screen at time k/fps, i.e. sample and
  hold: downsampling drops frames, upsampling repeats them) and JPEG-encoded with OpenCV at ``quality``, or with
  FFmpeg's mjpeg straight from the decoded YUV planes (`tools.ingest.jpeg_encoders`).
- Each database is written to ``frames.db.tmp`` in one transaction, verified, renamed into place, and its
  ``n_frames`` marker written last, so a killed run never leaves a video that looks complete; each video is
  converted under a lock on its folder. A video is skipped when its database is complete and its ``meta`` records
  this source (size, mtime) and these settings.
- `run_jobs` runs the jobs over worker processes, one video each at a time. A worker that dies (a decoder crash,
  the OOM killer) costs only the videos it held: they are retried alone, and recorded as failed if they kill a
  worker again. A bad video never raises: its `Result` is "failed" with the reason.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from data.fork_safety import fork_context, opencv_single_threaded
from data.index import video_lock
from data.store import DB_NAME, N_FRAMES_NAME, TMP_NAME, VideoReader, write_frames_db
from tools.ingest.jpeg_encoders import DEFAULT_ENCODER, DEFAULT_QSCALE, MjpegEncoder, opencv_encoder, yuvj420p_planes
from tools.ingest.video_folder import file_problem

log = logging.getLogger(__name__)

DEFAULT_QUALITY = 90


class ConvertError(Exception):
    """A video that cannot be converted; the message is the reason recorded in the failure report."""


@dataclass(frozen=True)
class Job:
    """One video to convert and the settings to convert it with."""

    source: str
    label: str
    video_id: str
    out_dir: str
    short_side: int | None = None
    quality: int = DEFAULT_QUALITY
    fps: float | None = None
    overwrite: bool = False
    threads: int = 1
    page_size: int | None = None
    jpeg_optimize: bool = True
    encoder: str = DEFAULT_ENCODER
    qscale: int = DEFAULT_QSCALE


def job_settings(args: Any, workers: int) -> dict[str, Any]:
    """The conversion settings of `tools.convert`'s arguments as `Job` fields, the same for every way of listing
    the videos (a folder, a label file); one thread per video when several run side by side."""
    return dict(short_side=args.short_side, quality=args.quality, fps=args.fps, overwrite=args.overwrite,
                threads=1 if workers > 1 else 0, page_size=args.page_size, jpeg_optimize=args.jpeg_optimize,
                encoder=args.jpeg_encoder, qscale=args.qscale)


@dataclass
class Result:
    """What happened to one job: status is "converted", "skipped" (already complete) or "failed"."""

    job: Job
    status: str
    frames: int = 0
    bytes: int = 0
    seconds: float = 0.0
    reason: str = ""
    warnings: list[str] = field(default_factory=list)


# -- one video -------------------------------------------------------------------------------------------------
def settings_meta(job: Job) -> dict[str, str]:
    """The conversion settings a database's ``meta`` records (a resume criterion)."""
    settings = {"short_side": str(job.short_side or ""), "quality": str(job.quality),
                "target_fps": "" if job.fps is None else repr(float(job.fps))}
    if job.encoder != DEFAULT_ENCODER:  # only then: databases written before encoders were a setting stay complete
        settings.update(quality="", encoder=job.encoder, qscale=str(job.qscale))
    return settings


def source_meta(path: Path) -> dict[str, str]:
    """Name, size and mtime of a source video, as a database's ``meta`` records them (a resume criterion)."""
    st = path.stat()
    return {"source": path.name, "source_size": str(st.st_size), "source_mtime": str(st.st_mtime_ns)}


def is_complete(job: Job) -> bool:
    """True when the video's database is complete and made from this source with these settings."""
    out = Path(job.out_dir)
    if not (out / N_FRAMES_NAME).is_file():
        return False
    try:
        with VideoReader(out, immutable=False, mmap_size=0) as reader:  # checks marker and row count
            meta, n = reader.meta, len(reader)
        expected = {**source_meta(Path(job.source)), **settings_meta(job), "n_frames": str(n)}
    except (OSError, ValueError):
        return False
    return meta.get("encoder", DEFAULT_ENCODER) == job.encoder and all(meta.get(k) == v for k, v in expected.items())


def output_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) resized so that the shorter side is `short_side` (aspect kept; None: as is)."""
    if not short_side or min(width, height) == short_side:
        return width, height
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def video_stream(container: Any, threads: int) -> tuple[Any, int, int, float]:
    """The first video stream of an open PyAV container, set to decode on `threads` threads, with its frame
    width, height and frame rate (0.0 when the container declares none).

    Raises ConvertError for a file without a video stream or without a frame size.
    """
    if not container.streams.video:
        raise ConvertError("no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = threads
    width, height = stream.codec_context.width, stream.codec_context.height
    if not width or not height:
        raise ConvertError("video stream has no frame size")
    rate = stream.average_rate or stream.guessed_rate
    return stream, width, height, float(rate) if rate else 0.0


def decode_frames(job: Job, info: dict) -> Iterator[np.ndarray]:
    """Decoded (resized, resampled) BGR frames of `job.source` (yuvj420p planes when ``job.encoder`` is mjpeg);
    fills `info` (sizes, fps, codec) before the first.

    Raises ConvertError when the file cannot be opened or decoded, has no video stream, or ends clearly before
    the length its container declares (a truncated file).
    """
    import av

    try:
        container = av.open(job.source)
    except av.FFmpegError as e:
        raise ConvertError(f"cannot open as video ({e.strerror or e}; truncated or not a video file?)") from None
    with container:
        stream, src_w, src_h, src_fps = video_stream(container, job.threads)
        out_w, out_h = output_size(src_w, src_h, job.short_side)
        out_fps = float(job.fps) if job.fps else (src_fps or 25.0)
        info.update(width=out_w, height=out_h, fps=out_fps, source_fps=src_fps, codec=stream.codec_context.name)
        step, eps = 1.0 / out_fps, 1e-6
        next_t, t0, decoded, last_t = 0.0, None, 0, 0.0
        prev = None  # with --fps: the latest frame, held until a later one starts

        def convert(frame) -> np.ndarray:
            if job.encoder == "mjpeg":  # its YUV planes as they are: no RGB round trip
                return yuvj420p_planes(frame, out_w, out_h)
            # Per frame: a stream may change resolution midway, and every stored frame must have one size.
            if (frame.width, frame.height) != (out_w, out_h):
                return frame.to_ndarray(format="bgr24", width=out_w, height=out_h, interpolation="AREA")
            return frame.to_ndarray(format="bgr24")

        def held(until: float) -> Iterator[np.ndarray]:
            """`prev` once per output time before `until` (sample and hold)."""
            nonlocal next_t
            bgr = None
            while next_t < until - eps:
                bgr = convert(prev) if bgr is None else bgr
                yield bgr
                next_t += step

        try:
            for frame in container.decode(stream):
                decoded += 1
                if job.fps is None:
                    yield convert(frame)
                    continue
                t = frame.time if frame.time is not None else (decoded - 1) / (src_fps or out_fps)
                t0 = t if t0 is None else t0
                last_t = t - t0
                if prev is not None:
                    yield from held(last_t)
                prev = frame
            if prev is not None:
                yield from held(last_t + 1.0 / (src_fps or out_fps))
        except av.FFmpegError as e:
            raise ConvertError(f"decoding failed after {decoded} frames ({e.strerror or e})") from None
        if decoded == 0:
            raise ConvertError("no frames could be decoded")
        _check_length(stream, container, decoded, src_fps, info)


def _check_length(stream, container, decoded: int, src_fps: float, info: dict) -> None:
    """Fail a video that stops clearly before its declared length (FFmpeg often ends a truncated file quietly)."""
    if stream.frames:
        declared, tolerance = stream.frames, max(2, 0.02 * stream.frames)
    elif stream.duration and stream.time_base and src_fps:
        declared = float(stream.duration * stream.time_base) * src_fps
        tolerance = max(2, 0.02 * declared)
    elif container.duration and src_fps:
        # Container duration may include a longer audio track: be lenient.
        declared = container.duration / 1e6 * src_fps
        tolerance = max(src_fps, 0.1 * declared)
    else:
        return
    if decoded < declared - tolerance:
        raise ConvertError(f"truncated? decoded {decoded} of {declared:.0f} declared frames")
    if decoded < declared - 1:
        info["warnings"].append(f"decoded {decoded} of {declared:.0f} declared frames")


def convert_video(job: Job) -> Result:
    """Convert one video (or skip it if already complete); never raises for a bad video, returns a failed Result."""
    start = time.perf_counter()
    try:
        with video_lock(job.out_dir):
            result = _convert_locked(job, start)
    except OSError as e:
        return Result(job, "failed", reason=f"cannot lock {job.out_dir} ({e.strerror or e})",
                      seconds=time.perf_counter() - start)
    if result.status == "failed":
        # A database left from an older source no longer matches it: never let it count as complete.
        marker = Path(job.out_dir) / N_FRAMES_NAME
        if marker.exists():
            marker.unlink()
        try:
            os.rmdir(job.out_dir)  # only if empty: the folder the lock created for a video that never converted
        except OSError:
            pass
    return result


def _convert_locked(job: Job, start: float) -> Result:
    source = Path(job.source)
    try:
        if not job.overwrite and is_complete(job):
            tmp = Path(job.out_dir) / TMP_NAME
            if tmp.exists():
                tmp.unlink()
            return Result(job, "skipped", frames=int((Path(job.out_dir) / N_FRAMES_NAME).read_text()))
        problem = file_problem(source)
        if problem:
            raise ConvertError(problem)
        size = source.stat().st_size
        if size == 0:
            raise ConvertError("empty file (0 bytes)")
        with open(source, "rb"):  # a clear reason for unreadable files before FFmpeg gets them
            pass
        meta = {**source_meta(source), **settings_meta(job), "label": job.label, "video_id": job.video_id}
        warnings: list[str] = []
        info: dict = {"warnings": warnings}
        # Optimised Huffman tables: smaller files for the same pixels (lossless step), a little more encode time.
        encode = opencv_encoder(job.quality, job.jpeg_optimize) if job.encoder == "opencv" else None
        optimize = job.jpeg_optimize or job.encoder == "mjpeg"  # mjpeg always builds optimal tables
        meta["jpeg_optimize"] = str(int(optimize))  # recorded, not a resume criterion (pixels are equal)
        meta["encoder"] = job.encoder

        def jpegs() -> Iterator[bytes]:
            nonlocal encode
            for frame in decode_frames(job, info):
                if encode is None:
                    encode = MjpegEncoder(info["width"], info["height"], job.qscale).encode
                try:
                    yield encode(frame)
                except ValueError as e:
                    raise ConvertError(str(e)) from None

        frames = jpegs()
        first = next(frames, None)  # fills `info` so that the meta is known before the database is created
        if first is None:
            raise ConvertError("no frames could be decoded")
        meta.update({k: str(v) for k, v in info.items() if k != "warnings"})

        def all_frames() -> Iterator[bytes]:
            yield first
            yield from frames

        n = write_frames_db(job.out_dir, all_frames(), meta, page_size=job.page_size)
        nbytes = (Path(job.out_dir) / DB_NAME).stat().st_size
        return Result(job, "converted", frames=n, bytes=nbytes, seconds=time.perf_counter() - start,
                      warnings=warnings)
    except ConvertError as e:
        reason = str(e)
    except PermissionError as e:
        reason = f"permission denied ({e.strerror})"
    except OSError as e:
        reason = f"{type(e).__name__}: {e.strerror or e}"
    except Exception as e:  # a bad video must never stop the run: record it with its reason
        reason = f"{type(e).__name__}: {e}"
    return Result(job, "failed", reason=reason, seconds=time.perf_counter() - start)


# -- running many ----------------------------------------------------------------------------------------------
class Stopped(BaseException):
    """SIGTERM (or SIGINT) reached the converter; a BaseException so that no `except Exception` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def init_worker() -> None:
    """Set up a worker process: one OpenCV thread, signals left to the parent."""
    cv2.setNumThreads(1)
    # The parent decides what a signal means: it stops the workers itself (SIGTERM) and cleans up after them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stop_pool(pool: ProcessPoolExecutor, inflight: Sequence[Job]) -> None:
    """Kill the pool's workers now (not after their current videos) and remove their half-written databases."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    for proc in processes:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)
    pool.shutdown(wait=False, cancel_futures=True)
    for job in inflight:
        # A worker killed mid-write leaves only its temporary file (never a marker); remove it all the same.
        (Path(job.out_dir) / TMP_NAME).unlink(missing_ok=True)


def _died(job: Job) -> Result:
    return Result(job, "failed", reason="the worker process died while converting it (decoder crash or killed)")


@contextlib.contextmanager
def _stopping(pool: ProcessPoolExecutor, inflight: dict[Any, Job] | list[Job]) -> Iterator[None]:
    """Stop the pool at once when the block ends by a signal (or the consumer abandoning the generator);
    `inflight` is the live container of the jobs the workers hold (a future -> job dict, or a list)."""
    try:
        yield
    except BaseException:
        _stop_pool(pool, list(inflight.values()) if isinstance(inflight, dict) else list(inflight))
        raise


def run_jobs(jobs: list[Job], workers: int, convert: Callable = convert_video) -> Iterator[Result]:
    """Results of `jobs` as they finish, over `workers` processes (in this process when workers <= 1);
    `convert` is the (top-level, picklable) function run per job."""
    if workers <= 1:
        for job in jobs:
            yield convert(job)
        return
    # fork: workers start fast and need nothing re-imported; the parent holds no SQLite connections.
    ctx = fork_context()
    # A child inheriting a started OpenCV pool blocks for ever in init_worker's cv2.setNumThreads; with one
    # thread here (this process only coordinates while they work) there is none to inherit.
    with opencv_single_threaded():
        yield from _run_pooled(jobs, workers, convert, ctx)


def _run_pooled(jobs: list[Job], workers: int, convert: Callable, ctx: BaseContext | None) -> Iterator[Result]:
    pending: deque[Job] = deque(jobs)
    suspects: list[Job] = []
    while pending:
        inflight: dict = {}
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=init_worker) as pool, \
                _stopping(pool, inflight):
            while pending or inflight:
                while pending and len(inflight) < 2 * workers:
                    job = pending.popleft()
                    inflight[pool.submit(convert, job)] = job
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                broken = False
                for fut in done:
                    job = inflight.pop(fut)
                    try:
                        yield fut.result()
                    except BrokenProcessPool:
                        suspects.append(job)
                        broken = True
                if broken:
                    # Every job in flight is lost with the pool; which one killed it is unknown.
                    suspects.extend(inflight.values())
                    log.warning("a worker process died; %d video(s) will be retried one at a time", len(suspects))
                    break
    for job in suspects:
        with ProcessPoolExecutor(1, mp_context=ctx, initializer=init_worker) as pool, _stopping(pool, [job]):
            try:
                yield pool.submit(convert, job).result()
            except BrokenProcessPool:
                yield _died(job)
