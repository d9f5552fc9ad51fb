"""Convert a folder of videos into the SQLite frame store: ``python -m tools.convert VIDEOS DATASET_ROOT``.

VIDEOS is ``<class>/<video file>`` (mp4, avi, mkv, webm, mov, ...; other files are ignored). For every video this
writes ``DATASET_ROOT/jpg/<class>/<video_id>/frames.db`` (+ ``n_frames``), video id = file name without extension,
then the folder dataset's ``DATASET_ROOT/labels/all.csv`` and ``DATASET_ROOT/classes.txt``.

- Decoding uses PyAV (FFmpeg inside the wheel); frames are optionally resized (``--short-side``, aspect kept),
  resampled in time (``--fps``: output frame k shows the source frame on screen at time k/fps, i.e. sample and
  hold: downsampling drops frames, upsampling repeats them)
  and JPEG-encoded at ``--quality`` (default 90) with optimised Huffman tables (``--no-jpeg-optimize``: standard
  tables, same pixels, 1.13x larger files on synthetic clips, docs/BENCHMARKS.md). ``--jpeg-encoder mjpeg
  --qscale Q`` encodes instead with FFmpeg's mjpeg straight from the decoded YUV planes (`tools.ingest.jpeg_encoders`):
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
  sources (``tools.ingest.from_labels``, ``tools.ingest.segments``).
- The label file, ``classes.txt`` and the dataset index (``index.db``, `data.index`) are rebuilt at the end from
  every complete video on disk, under the root's lock: converting a subset into an existing root adds to them.
  Each video is converted under a lock on its folder, so two converters on one root never write the same video.
- Many machines (`tools.ingest.shards`): ``--num-shards N --shard-index I`` (defaults from SLURM array or
  RANK/WORLD_SIZE variables) converts the videos whose path hashes to shard I; the last shard to finish, or
  ``--merge``, writes labels, classes, index and failure report. ``--dask ADDRESS`` runs the per-video work on a
  Dask cluster instead (`tools.ingest.dask_cluster`).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from data.labels import safe_video_dir
from data.store import PAGE_SIZE
from tools.ingest import from_labels
from tools.ingest.jobs import DEFAULT_QUALITY, Job, Result, Stopped, job_settings, run_jobs
from tools.ingest.jpeg_encoders import DEFAULT_ENCODER, DEFAULT_QSCALE, ENCODERS, MAX_QSCALE, MIN_QSCALE
from tools.ingest.shards import (
    ShardError,
    finish_root,
    merge_shards,
    missing_shards,
    resolve_shards,
    shard_of,
    write_shard_report,
)
from tools.ingest.video_folder import VIDEO_EXTENSIONS, scan_folder
from train.console import DefaultsHelpFormatter, die, setup_logging

log = logging.getLogger(__name__)

# Sane ranges: beyond them a typo (--fps 1e6, --short-side 100000) silently writes gigabytes of repeated frames.
MAX_FPS = 1000.0
MIN_SHORT_SIDE, MAX_SHORT_SIDE = 8, 4096


def _warn_stray(videos: Path) -> None:
    """Video files straight in VIDEOS have no class folder: say so instead of ignoring them silently."""
    stray = [p for p in videos.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS]
    if stray:
        log.warning("%d video file(s) directly in %s are ignored (expected <class>/<video>), e.g. %s",
                    len(stray), videos, stray[0].name)


def _raise_stopped(signum: int, frame: object) -> None:
    raise Stopped(signum)


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
        try:
            return from_labels.run(args, workers)
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
    jobs, settings = [], job_settings(args, workers)
    for label, video_id, path in found:
        try:
            out_dir = safe_video_dir(args.root, label, video_id, where=str(path))
        except ValueError as e:
            failures.append((str(path), str(e)))
            continue
        jobs.append(Job(str(path), label, video_id, str(out_dir), **settings))
    if args.root.exists() and not args.root.is_dir():
        die(f"{args.root}: exists and is not a folder (the dataset root must be a folder)")
    try:
        # jpg/ up front: a run in which every video failed (a failing cluster too) still ends with its report.
        (args.root / "jpg").mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=args.root, prefix=".write-test-"):
            pass
    except OSError as e:
        die(f"{args.root}: dataset root is not writable ({e.strerror or e})")
    log.info("converting %d videos from %s into %s with %d worker(s)", len(jobs), args.videos, args.root, workers)

    tqdm.monitor_interval = 0  # no monitor thread in a process that forks
    counts = {"converted": 0, "skipped": 0, "failed": 0}
    start = time.perf_counter()
    if args.dask:
        from tools.ingest.dask_cluster import run_jobs_dask  # distributed is optional

        try:
            results = run_jobs_dask(jobs, args.dask, timeout=args.dask_timeout, videos=args.videos, root=args.root)
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
