"""Convert a folder of videos into the SQLite frame store: ``python -m tools.convert VIDEOS DATASET_ROOT``.

VIDEOS is ``<class>/<video file>`` (mp4, avi, mkv, webm, mov, ...; other files are ignored). For every video this
writes ``DATASET_ROOT/jpg/<class>/<video_id>/frames.db`` (+ ``n_frames``), video id = file name without extension,
then the folder dataset's ``DATASET_ROOT/labels/all.csv`` and ``DATASET_ROOT/classes.txt``.

- Decoding uses PyAV (FFmpeg inside the wheel); frames are optionally resized (``--short-side``, aspect kept),
  resampled in time (``--fps``: output frame k shows the source frame on screen at time k/fps, i.e. sample and
  hold: downsampling drops frames, upsampling repeats them)
  and JPEG-encoded at ``--quality`` (default 90) with optimised Huffman tables (``--no-jpeg-optimize``: standard
  tables, same pixels, 1.13x larger files on synthetic clips, docs/BENCHMARKS.md). ``--jpeg-encoder mjpeg
  --qscale Q`` encodes instead with FFmpeg's mjpeg straight from the decoded YUV planes (`tools.jpeg_encoders`):
  fewer bytes at equal PSNR on real footage; ``--quality`` does not apply to it.
- Videos are converted in parallel (``--workers`` processes, one video each at a time). A worker that dies (a
  decoder crash, the OOM killer) costs only the videos it held: they are retried alone, and recorded as failed if
  they kill a worker again.
- Each database is written to ``frames.db.tmp`` in one transaction, verified, renamed into place, and its
  ``n_frames`` marker written last, so a killed run never leaves a video that looks complete.
- Re-running resumes: a video is skipped when its marker and database are complete and the source's size and
  mtime, and the conversion settings (short side, quality or encoder and qscale, fps), equal what its ``meta`` recorded; otherwise it is
  converted again (``--overwrite`` redoes everything).
- Videos that cannot be converted (empty, truncated, not a video, unreadable, ...) are listed with the reason in
  ``DATASET_ROOT/convert_failures.csv`` (``path,reason``); the run goes on and exits with status 1. A missing or
  empty VIDEOS folder is an error (status 2).
- Splits in ``labels/all.csv``: per class, ``round(val_fraction * n)`` videos are ``val`` (at least one when the
  class has two or more videos and the fraction is positive), the rest ``train``; the choice is a hash of
  (``--seed``, class, video id), so it is deterministic and does not depend on file order, worker count or
  platform. Failed videos are left out of the label file.
- ``--labels LABELS.csv --source-root SRC ROOT`` converts instead exactly the videos a label file names, found
  wherever the official layout puts them under SRC, cutting ``[time_start, time_end)`` segments out of untrimmed
  sources (``tools.convert_labels``, ``tools.convert_segments``).
- The label file, ``classes.txt`` and the dataset index (``index.db``, `data.index`) are rebuilt at the end from
  every complete video on disk, under the root's lock: converting a subset into an existing root adds to them.
  Each video is converted under a lock on its folder, so two converters on one root never write the same video.
- Many machines (`tools.convert_shards`): ``--num-shards N --shard-index I`` (defaults from SLURM array or
  RANK/WORLD_SIZE variables) converts the videos whose path hashes to shard I; the last shard to finish, or
  ``--merge``, writes labels, classes, index and failure report. ``--dask ADDRESS`` runs the per-video work on a
  Dask cluster instead (`tools.convert_dask`).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import logging
import os
import signal
import sys
import tempfile
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
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from data.atomic import atomic_write
from data.fork_safety import fork_context, opencv_single_threaded
from data.index import video_lock
from data.labels import safe_video_dir
from data.store import DB_NAME, N_FRAMES_NAME, PAGE_SIZE, TMP_NAME, VideoReader, write_frames_db
from tools.convert_shards import (
    ShardError,
    finish_root,
    merge_shards,
    missing_shards,
    resolve_shards,
    shard_of,
    write_shard_report,
)
from tools.jpeg_encoders import (
    DEFAULT_ENCODER,
    DEFAULT_QSCALE,
    ENCODERS,
    MAX_QSCALE,
    MIN_QSCALE,
    MjpegEncoder,
    opencv_encoder,
    yuvj420p_planes,
)
from tools.video_folder import VIDEO_EXTENSIONS, file_problem, scan_folder
from train.console import DefaultsHelpFormatter, die, setup_logging

log = logging.getLogger(__name__)

DEFAULT_QUALITY = 90
FAILURES_NAME = "convert_failures.csv"
# Sane ranges: beyond them a typo (--fps 1e6, --short-side 100000) silently writes gigabytes of repeated frames.
MAX_FPS = 1000.0
MIN_SHORT_SIDE, MAX_SHORT_SIDE = 8, 4096


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


# -- scanning --------------------------------------------------------------------------------------------------
def _warn_stray(videos: Path) -> None:
    """Video files straight in VIDEOS have no class folder: say so instead of ignoring them silently."""
    stray = [p for p in videos.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS]
    if stray:
        log.warning("%d video file(s) directly in %s are ignored (expected <class>/<video>), e.g. %s",
                    len(stray), videos, stray[0].name)


# -- one video -------------------------------------------------------------------------------------------------
def _settings_meta(job: Job) -> dict[str, str]:
    settings = {"short_side": str(job.short_side or ""), "quality": str(job.quality),
                "target_fps": "" if job.fps is None else repr(float(job.fps))}
    if job.encoder != DEFAULT_ENCODER:  # only then: databases written before encoders were a setting stay complete
        settings.update(quality="", encoder=job.encoder, qscale=str(job.qscale))
    return settings


def _source_meta(path: Path) -> dict[str, str]:
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
        expected = {**_source_meta(Path(job.source)), **_settings_meta(job), "n_frames": str(n)}
    except (OSError, ValueError):
        return False
    return meta.get("encoder", DEFAULT_ENCODER) == job.encoder and all(meta.get(k) == v for k, v in expected.items())


def _output_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
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


def _decode_bgr(job: Job, info: dict) -> Iterator[np.ndarray]:
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
        out_w, out_h = _output_size(src_w, src_h, job.short_side)
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
        meta = {**_source_meta(source), **_settings_meta(job), "label": job.label, "video_id": job.video_id}
        warnings: list[str] = []
        info: dict = {"warnings": warnings}
        # Optimised Huffman tables: smaller files for the same pixels (lossless step), a little more encode time.
        encode = opencv_encoder(job.quality, job.jpeg_optimize) if job.encoder == "opencv" else None
        optimize = job.jpeg_optimize or job.encoder == "mjpeg"  # mjpeg always builds optimal tables
        meta["jpeg_optimize"] = str(int(optimize))  # recorded, not a resume criterion (pixels are equal)
        meta["encoder"] = job.encoder

        def jpegs() -> Iterator[bytes]:
            nonlocal encode
            for frame in _decode_bgr(job, info):
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


def _raise_stopped(signum: int, frame: object) -> None:
    raise Stopped(signum)


def _init_worker() -> None:
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
    # A child inheriting a started OpenCV pool blocks for ever in _init_worker's cv2.setNumThreads; with one
    # thread here (this process only coordinates while they work) there is none to inherit.
    with opencv_single_threaded():
        yield from _run_pooled(jobs, workers, convert, ctx)


def _run_pooled(jobs: list[Job], workers: int, convert: Callable, ctx: BaseContext | None) -> Iterator[Result]:
    pending: deque[Job] = deque(jobs)
    suspects: list[Job] = []
    while pending:
        inflight: dict = {}
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool, \
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
        with ProcessPoolExecutor(1, mp_context=ctx, initializer=_init_worker) as pool, _stopping(pool, [job]):
            try:
                yield pool.submit(convert, job).result()
            except BrokenProcessPool:
                yield _died(job)


def write_failures(root: Path, failures: list[tuple[str, str]]) -> Path | None:
    """Write `root/convert_failures.csv` (path, reason); remove a stale one when nothing failed."""
    path = root / FAILURES_NAME
    if not failures:
        if path.exists():
            path.unlink()
        return None
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["path", "reason"])
        writer.writerows(sorted(failures))
    return path


def _count_results(results: Iterator[Result], bar: tqdm, counts: dict[str, int], failures: list[tuple[str, str]],
                   start: float) -> None:
    """Count `results` as they come into `counts` (also "frames" and "bytes") and `failures`."""
    counts.update(frames=0, bytes=0)
    for res in results:
        counts[res.status] += 1
        for w in res.warnings:
            log.warning("%s: %s", res.job.source, w)
        if res.status == "failed":
            log.warning("%s: %s", res.job.source, res.reason)
            failures.append((res.job.source, res.reason))
        if res.status == "converted":
            counts["frames"] += res.frames
            counts["bytes"] += res.bytes
        bar.update()
        bar.set_postfix(frames=counts["frames"],
                        fps=f"{counts['frames'] / max(time.perf_counter() - start, 1e-9):.0f}",
                        failed=counts["failed"], refresh=False)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.convert", description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("videos", type=Path, nargs="?", help="folder of <class>/<video file> (not with --labels)")
    p.add_argument("root", type=Path, help="dataset root to write (jpg/, labels/all.csv, classes.txt)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel processes (1: in-process)")
    p.add_argument("--short-side", type=int, default=None, help="resize so the shorter side is this (keeps aspect)")
    p.add_argument("--quality", type=int, default=DEFAULT_QUALITY, help="JPEG quality 1-100")
    p.add_argument("--fps", type=float, default=None, help="resample to this frame rate (default: native)")
    p.add_argument("--overwrite", action="store_true", help="convert again even if complete and unchanged")
    p.add_argument("--no-jpeg-optimize", dest="jpeg_optimize", action="store_false",
                   help="standard Huffman tables (faster encode, larger files; same pixels)")
    p.add_argument("--jpeg-encoder", choices=ENCODERS, default=DEFAULT_ENCODER,
                   help="opencv (from BGR, --quality) or mjpeg (FFmpeg's, from the decoded YUV planes, --qscale)")
    p.add_argument("--qscale", type=int, default=DEFAULT_QSCALE,
                   help=f"mjpeg quantiser {MIN_QSCALE} (best) .. {MAX_QSCALE} (smallest), as ffmpeg's -q:v")
    p.add_argument("--page-size", type=int, default=PAGE_SIZE, help="SQLite page size of new databases")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of each class marked 'val' in all.csv")
    p.add_argument("--seed", type=int, default=0, help="seed of the deterministic train/val assignment")
    p.add_argument("--log-file", default=None, help="also append the log to this file")
    p.add_argument("--labels", type=Path, default=None,
                   help="convert exactly the videos of this label CSV (cutting segments of untrimmed sources)")
    p.add_argument("--source-root", type=Path, default=None, help="with --labels: folder holding the videos")
    p.add_argument("--num-shards", type=int, default=None,
                   help="split the videos into N shards by a hash of their path (default: SLURM_ARRAY_TASK_COUNT, "
                        "else WORLD_SIZE, else 1)")
    p.add_argument("--shard-index", type=int, default=None,
                   help="the shard to convert, 0..N-1 (default: SLURM_ARRAY_TASK_ID, else RANK, else 0)")
    p.add_argument("--merge", action="store_true",
                   help="only merge finished shards: labels, classes, index and failure report from disk")
    p.add_argument("--dask", metavar="ADDRESS", default=None,
                   help="run the per-video work on the Dask scheduler at ADDRESS (tcp://host:8786)")
    p.add_argument("--dask-timeout", type=float, default=60.0, help="seconds to wait for the Dask scheduler")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 1 some videos failed; bad input exits 2)."""
    args = parse_args(argv)
    setup_logging(log_file=args.log_file)
    if (args.labels is None) == (args.videos is None) or (args.labels is None) != (args.source_root is None):
        die("give VIDEOS ROOT, or --labels LABELS.csv --source-root SRC ROOT")
    if args.labels is None and args.videos.exists() and not args.videos.is_dir():
        die(f"{args.videos}: is a file, not a folder (VIDEOS is a folder of <class>/<video file>)")
    if args.labels is None and not args.videos.is_dir():
        die(f"{args.videos}: no such folder (expected <class>/<video file>)")
    if args.workers < 1:
        die(f"--workers must be >= 1 (1: in this process), got {args.workers}")
    if args.short_side is not None and not MIN_SHORT_SIDE <= args.short_side <= MAX_SHORT_SIDE:
        die(f"--short-side must be in {MIN_SHORT_SIDE}..{MAX_SHORT_SIDE} pixels, got {args.short_side}")
    if not 1 <= args.quality <= 100:
        die(f"--quality must be in 1..100, got {args.quality}")
    if not MIN_QSCALE <= args.qscale <= MAX_QSCALE:
        die(f"--qscale must be in {MIN_QSCALE}..{MAX_QSCALE}, got {args.qscale}")
    if args.jpeg_encoder != DEFAULT_ENCODER and args.labels is not None:
        die("--jpeg-encoder mjpeg is not supported with --labels (segment cutting encodes with OpenCV)")
    if args.fps is not None and not 0 < args.fps <= MAX_FPS:  # also refuses nan and inf (an endless loop)
        die(f"--fps must be a frame rate in (0, {MAX_FPS:g}], got {args.fps}")
    if args.page_size not in (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536):
        die(f"--page-size must be a power of two in 512..65536, got {args.page_size}")
    if not 0 <= args.val_fraction < 1:
        die(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    workers = max(1, args.workers)
    if args.labels is not None:
        from tools import convert_labels  # it builds on this module

        try:
            return convert_labels.run(args, workers)
        except (ValueError, OSError) as e:  # a bad label file or source folder: nothing was converted
            die(str(e))
    try:
        num_shards, shard_index = resolve_shards(args.num_shards, args.shard_index)
    except ShardError as e:
        die(str(e))
    if args.merge:
        if not (args.root / "jpg").is_dir():
            die(f"{args.root}: not a dataset root (no jpg/ folder) to merge")
        try:
            report, _ = merge_shards(args.root, args.val_fraction, args.seed,
                                     args.num_shards if args.num_shards else None)
        except (ShardError, ValueError, OSError) as e:
            die(str(e))
        return 1 if report else 0

    found, failures = scan_folder(args.videos)
    _warn_stray(args.videos)
    if not found and not failures:
        die(f"{args.videos}: no videos found (expected <class>/<video> with one of "
            f"{', '.join(sorted(VIDEO_EXTENSIONS))})")
    if num_shards > 1:
        def mine(path) -> bool:
            return shard_of(os.path.relpath(path, args.videos), num_shards) == shard_index
        found = [f for f in found if mine(f.path)]
        failures = [f for f in failures if mine(f[0])]
        log.info("shard %d of %d: %d videos", shard_index, num_shards, len(found))
    jobs = []
    for label, video_id, path in found:
        try:
            out_dir = safe_video_dir(args.root, label, video_id, where=str(path))
        except ValueError as e:
            failures.append((str(path), str(e)))
            continue
        jobs.append(Job(str(path), label, video_id, str(out_dir), args.short_side, args.quality, args.fps,
                        args.overwrite, threads=1 if workers > 1 else 0, page_size=args.page_size,
                        jpeg_optimize=args.jpeg_optimize, encoder=args.jpeg_encoder, qscale=args.qscale))
    if args.root.exists() and not args.root.is_dir():
        die(f"{args.root}: exists and is not a folder (the dataset root must be a folder)")
    try:
        args.root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=args.root, prefix=".write-test-"):
            pass
    except OSError as e:
        die(f"{args.root}: dataset root is not writable ({e.strerror or e})")
    log.info("converting %d videos from %s into %s with %d worker(s)", len(jobs), args.videos, args.root, workers)

    tqdm.monitor_interval = 0  # no monitor thread in a process that forks
    counts = {"converted": 0, "skipped": 0, "failed": 0}
    start = time.perf_counter()
    if args.dask:
        from tools.convert_dask import run_jobs_dask
        try:
            results = run_jobs_dask(jobs, args.dask, timeout=args.dask_timeout)
            first_result = [next(results)] if jobs else []
        except RuntimeError as e:
            die(str(e))
        results = iter([*first_result, *results])
    else:
        results = run_jobs(jobs, workers)
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        with logging_redirect_tqdm(), tqdm(total=len(jobs), unit="video", desc="convert",
                                           dynamic_ncols=True) as bar:
            _count_results(results, bar, counts, failures, start)
    except (KeyboardInterrupt, Stopped) as e:
        signum = e.signum if isinstance(e, Stopped) else signal.SIGINT
        done = counts["converted"] + counts["skipped"]
        print(f"interrupted by {signal.Signals(signum).name}: {done} of {len(jobs)} videos finished, nothing half-"
              f"written is marked complete; run the same command again to resume (finished videos are skipped)",
              file=sys.stderr, flush=True)
        return 128 + int(signum)
    finally:
        signal.signal(signal.SIGTERM, previous)
    frames, nbytes = counts.pop("frames"), counts.pop("bytes")
    seconds = time.perf_counter() - start

    summary = {"converted": counts["converted"], "skipped": counts["skipped"], "frames": frames, "bytes": nbytes,
               "seconds": round(seconds, 3)}
    if num_shards > 1:
        write_shard_report(args.root, num_shards, shard_index, failures, summary)
        report = None
        if not missing_shards(args.root, num_shards):
            log.info("all %d shards have finished: merging", num_shards)
            report, _ = merge_shards(args.root, args.val_fraction, args.seed, num_shards)
        elif failures:
            report = args.root / "shards"
    else:
        report = finish_root(args.root, failures, args.val_fraction, args.seed)
    log.info("summary: %d videos converted, %d skipped (complete), %d failed; %d frames in %.1f s = %.0f frames/s; "
             "%d bytes (%.1f MB) written", counts["converted"], counts["skipped"], len(failures), frames, seconds,
             frames / max(seconds, 1e-9), nbytes, nbytes / 1e6)
    if report:
        log.error("%d video(s) failed; see %s", len(failures), report)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
