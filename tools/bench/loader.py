"""Loader benchmark: clips/s of the SQLite frame store against the usual alternatives, on the same videos.

    python -m tools.bench.loader [--videos 48] [--clips 400] [--workers 0,2] [--quick] [--out FILE]

In one run, on generated videos (``tools.synthetic``, 128x171 by default), converted once into the frame store:

- (a) the SQL reader (`data.store`): cached connections with and without ``mmap``, without checksum
  verification, a new connection per clip, ``reduce=2`` (half-size DCT decoding), and
  `data.dataset.VideoDataset` (+ its normalisation) where available;
- (b) a one-JPEG-file-per-frame folder holding the very same JPEG bytes;
- (c) PyAV opening, seeking and decoding the source videos (a new container per clip, as video loaders do);
- (d) the bound: decoding the same JPEG bytes held in memory, no I/O at all.

Every loader decodes into one ``(T, H, W, 3)`` uint8 RGB array per clip, with the same clip list (random starts,
``--clip-length`` frames every ``--interval``), through a `torch.utils.data.DataLoader` (``--batch-size``) at each
``--workers`` count, with the page cache warm and then cold. "Cold" evicts the files of the loader from the page
cache with ``posix_fadvise(DONTNEED)`` before each timed pass (no privileges needed, other files untouched);
``--drop-caches`` writes ``/proc/sys/vm/drop_caches`` instead when allowed. A virtual machine's host may still
cache the disk. Figures are the median of ``--repeats`` passes, timed at the consumer after a first batch that
absorbs worker start-up.

It also times the converter (videos -> frame store, and the same decode + encode writing a JPEG folder),
reports bytes on disk of each, and the cost of the per-frame checksum against decoding. Prints a markdown
table; ``--out`` also writes it to a file.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data import store
from data.atomic import atomic_write_text
from data.fork_safety import fork_context, opencv_single_threaded
from data.sampling import clip_span
from tools import convert
from tools.bench.loader_readers import ClipSet, FolderReader, MemoryReader, PyAVReader, SqlReader
from tools.ingest.failures import FAILURES_NAME
from tools.ingest.jobs import Job, decode_frames, init_worker
from tools.ingest.video_folder import scan_folder
from train.console import die, setup_logging

log = logging.getLogger(__name__)


# -- data preparation ------------------------------------------------------------------------------------------
def generate_videos(out: Path, n_videos: int, frames: int, size: tuple[int, int], seed: int, workers: int) -> None:
    """Synthetic videos via `tools.synthetic` (4 classes), or the test helper when that tool is absent."""
    classes = 4
    per_class = max(1, -(-n_videos // classes))
    try:
        import tools.synthetic  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.videos_util import make_video
        for c in range(classes):
            for i in range(per_class):
                make_video(out / f"class{c}" / f"v{i:04d}.mp4", frames, size[0], size[1], codec="h264")
        return
    cmd = [sys.executable, "-m", "tools.synthetic", str(out), "--classes", str(classes), "--videos-per-class",
           str(per_class), "--seed", str(seed), "--frames", str(frames), "--size", f"{size[0]}x{size[1]}",
           "--workers", str(workers)]
    log.info("generating videos: %s", shlex.join(cmd))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def _folder_job(job: Job) -> int:
    """The converter's decode + encode, writing one JPEG file per frame instead of a database."""
    out = Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, job.quality]
    n = 0
    for n, bgr in enumerate(decode_frames(job, {"warnings": []}), 1):
        ok, buf = cv2.imencode(".jpg", bgr, params)
        (out / f"frame_{n:05d}.jpg").write_bytes(buf.tobytes())
    return n


def convert_both(videos: Path, root: Path, folder_root: Path, workers: int) -> dict[str, dict]:
    """Convert into the frame store (the real CLI) and into a JPEG folder; frames/s and bytes of each."""
    out: dict[str, dict] = {}
    t = time.perf_counter()
    code = convert.main([str(videos), str(root), "--workers", str(workers), "--val-fraction", "0"])
    seconds = time.perf_counter() - t
    if code != 0:
        die(f"conversion of {videos} failed (see {root / FAILURES_NAME})", 1)
    dbs = sorted((root / "jpg").glob("*/*/frames.db"))
    frames = sum(int((d.parent / "n_frames").read_text()) for d in dbs)
    out["SQLite frame store"] = {"seconds": seconds, "frames": frames, **_disk_usage(
        [p for d in dbs for p in (d, d.parent / "n_frames")])}

    found, _ = scan_folder(videos)
    jobs = [Job(str(p), label, vid, str(folder_root / label / vid)) for label, vid, p in found]
    t = time.perf_counter()
    # Like the converter's own pool: forked, and no OpenCV pool here for init_worker to deadlock on.
    with opencv_single_threaded(), ProcessPoolExecutor(workers, mp_context=fork_context(),
                                                       initializer=init_worker) as pool:
        frames_f = sum(pool.map(_folder_job, jobs, chunksize=1))
    seconds_f = time.perf_counter() - t
    files = sorted(folder_root.glob("*/*/*.jpg"))
    out["JPEG folder"] = {"seconds": seconds_f, "frames": frames_f, **_disk_usage(files)}
    out["source videos"] = {"seconds": None, "frames": frames, **_disk_usage([p for _, _, p in found])}
    return out


def _disk_usage(files: list[Path]) -> dict:
    sts = [f.stat() for f in files]
    return {"files": len(files), "bytes": sum(s.st_size for s in sts), "allocated": sum(s.st_blocks * 512 for s in sts)}


# -- timing ----------------------------------------------------------------------------------------------------
def evict(files: list[Path], drop_caches: bool) -> None:
    """Push `files` out of the page cache (see the module docstring)."""
    if drop_caches:
        os.sync()
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            return
        except OSError as e:
            log.warning("cannot drop the page cache (%s); evicting the benchmark's files instead", e)
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def time_loader(dataset: Dataset, workers: int, batch_size: int, sampler=None) -> tuple[float, float]:
    """(clips/s, clips per CPU-second of this process) of one pass through a DataLoader, after a first untimed
    batch. The CPU figure only means something with 0 workers, where it shrugs off other load on the machine."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, sampler=sampler,
                        worker_init_fn=_worker_init, multiprocessing_context="fork" if workers else None)
    # The workers are forked at iter(); _worker_init's cv2.setNumThreads must not meet an inherited OpenCV pool.
    with opencv_single_threaded() if workers else contextlib.nullcontext():
        it = iter(loader)
        next(it)
        start, cpu, count = time.perf_counter(), time.process_time(), 0
        for batch in it:
            count += len(batch[0]) if isinstance(batch, (list, tuple)) else len(batch)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        del it
    if count == 0:
        raise ValueError("too few clips for one timed batch; raise --clips")
    return count / seconds, count / max(cpu, 1e-9)


def _worker_init(_: int) -> None:
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


# -- main ------------------------------------------------------------------------------------------------------
def checksum_cost(blobs: list[list[bytes]]) -> tuple[float, float]:
    """Microseconds per frame of the read-time checksum and of decoding the same JPEG (one thread, warm)."""
    flat = [b for frames in blobs for b in frames]
    crc, dec = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        for b in flat:
            store.frame_checksum(b)
        t1 = time.perf_counter()
        for b in flat:
            cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)
        t2 = time.perf_counter()
        crc.append((t1 - t0) / len(flat) * 1e6)
        dec.append((t2 - t1) / len(flat) * 1e6)
    return statistics.median(crc), statistics.median(dec)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.bench.loader", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("bench_data"), help="working folder (videos, stores)")
    p.add_argument("--videos", type=int, default=48, help="number of generated videos")
    p.add_argument("--frames", type=int, default=64, help="frames per generated video")
    p.add_argument("--size", default="128x171", help="frame size HxW")
    p.add_argument("--clips", type=int, default=400, help="clips per timed pass (PyAV gets a quarter)")
    p.add_argument("--clip-length", type=int, default=16)
    p.add_argument("--interval", type=int, default=2, help="frame step inside a clip")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", default="0,2", help="comma-separated DataLoader worker counts")
    p.add_argument("--convert-workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=3, help="timed passes per figure (median)")
    p.add_argument("--no-cold", action="store_true", help="skip the cold page-cache passes")
    p.add_argument("--drop-caches", action="store_true", help="cold = drop the whole page cache (needs root)")
    p.add_argument("--quick", action="store_true", help="small run: 16 videos, 96 clips, one pass, no cold")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = p.parse_args(argv)
    if args.quick:
        args.videos, args.clips, args.repeats, args.no_cold = min(args.videos, 16), min(args.clips, 96), 1, True
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0; bad input exits 2)."""
    args = parse_args(argv)
    setup_logging()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        h, w = (int(x) for x in args.size.lower().split("x"))
        workers_list = [int(x) for x in args.workers.split(",")]
    except ValueError:
        die(f"bad --size {args.size!r} or --workers {args.workers!r}")
    span = clip_span(args.clip_length, args.interval)
    if span > args.frames:
        die(f"a clip spans {span} frames but videos have --frames {args.frames}")
    data = args.data
    videos, root, folder = data / "videos", data / "store", data / "jpeg_folder"
    stamp, params = videos / ".bench_params", f"videos={args.videos} frames={args.frames} size={h}x{w} seed={args.seed}"
    if stamp.is_file() and stamp.read_text() != params:
        shutil.rmtree(videos)  # generated by an earlier run with other parameters
    if not videos.is_dir():
        generate_videos(videos, args.videos, args.frames, (h, w), args.seed, args.convert_workers)
        atomic_write_text(stamp, params)
    else:
        log.info("using the videos already in %s", videos)
    for old in (root, folder):  # outputs of an earlier run: converted afresh (and timed) every time
        shutil.rmtree(old, ignore_errors=True)
    storage = convert_both(videos, root, folder, args.convert_workers)

    found, _ = scan_folder(videos)
    paths = [p for _, _, p in found]
    dirs = [root / "jpg" / label / vid for label, vid, _ in found]
    fdirs = [folder / label / vid for label, vid, _ in found]
    blobs = []
    for d in dirs:
        conn = sqlite3.connect(d / "frames.db")
        blobs.append([b for (b,) in conn.execute("SELECT jpeg FROM frames ORDER BY idx")])
        conn.close()
    if (fdirs[0] / "frame_00001.jpg").read_bytes() != blobs[0][0]:
        log.warning("JPEG folder bytes differ from the database's: rewriting the folder from the database")
        for d, frames in zip(fdirs, blobs):
            for i, b in enumerate(frames, 1):
                (d / f"frame_{i:05d}.jpg").write_bytes(b)
    size = store.open_video(dirs[0]).frame_size
    rng = np.random.default_rng(args.seed)
    clips = []
    for _ in range(args.clips):
        v = int(rng.integers(len(dirs)))
        start = int(rng.integers(0, len(blobs[v]) - span + 1))
        clips.append((v, start + args.interval * np.arange(args.clip_length)))

    db_files = [d / "frames.db" for d in dirs]
    jpg_files = [f for d in fdirs for f in sorted(d.glob("*.jpg"))]
    sql = {m: SqlReader(dirs, m) for m in ("cached", "no-mmap", "per-clip", "reduce2", "unverified")}
    loaders: list[tuple[str, str, Dataset, list[Path] | None, Callable | None, object]] = [
        ("(a) SQL, cached connection + mmap", "a", ClipSet(clips, sql["cached"]), db_files, sql["cached"].reset, None),
        ("(a) SQL, cached + mmap, checksums not verified", "a-nocrc", ClipSet(clips, sql["unverified"]), db_files,
         sql["unverified"].reset, None),
        ("(a) SQL, cached connection, no mmap", "a-nommap", ClipSet(clips, sql["no-mmap"]), db_files,
         sql["no-mmap"].reset, None),
        ("(a) SQL, new connection per clip", "a-open", ClipSet(clips, sql["per-clip"]), db_files, None, None),
        ("(a) SQL, reduce=2 (half-size decode)", "a-r2", ClipSet(clips, sql["reduce2"]), db_files,
         sql["reduce2"].reset, None),
    ]
    try:
        from data.dataset import VideoDataset
        ds = VideoDataset(root, split=None, clip_length=args.clip_length, frame_interval=args.interval, train=True)
        loaders.append(("(a) SQL via VideoDataset (+ToTensorNormalize)", "a-ds", ds, db_files, sql["cached"].reset,
                        [i % len(ds) for i in range(args.clips)]))
    except ImportError as e:
        log.warning("data.dataset not usable (%s): VideoDataset row skipped", e)
    loaders += [
        ("(b) JPEG file per frame", "b", ClipSet(clips, FolderReader(fdirs, size)), jpg_files, None, None),
        ("(c) PyAV decode + seek of the videos", "c", ClipSet(clips[: max(args.batch_size * 3, args.clips // 4)],
                                                             PyAVReader(paths, size)), paths, None, None),
        ("(d) bound: same JPEGs decoded from memory", "d", ClipSet(clips, MemoryReader(blobs, size)), None, None,
         None),
    ]

    results: dict[tuple[str, int, str], float] = {}
    cpu_rates: dict[str, float] = {}
    caches = ["warm"] + ([] if args.no_cold else ["cold"])
    for workers in workers_list:
        for cache in caches:
            runs: dict[str, list[tuple[float, float]]] = {key: [] for _, key, *_ in loaders}
            if cache == "warm":  # one untimed pass each fills the page cache and opens the readers
                for _, _, dataset, _, _, sampler in loaders:
                    time_loader(dataset, workers, args.batch_size, sampler)
            # Passes interleave the loaders, so that a burst of other load on the machine hits them all alike.
            for _ in range(args.repeats):
                for _name, key, dataset, files, reset, sampler in loaders:
                    if cache == "cold":
                        if files is None:
                            continue
                        if reset:
                            reset()
                        evict(files, args.drop_caches)
                    runs[key].append(time_loader(dataset, workers, args.batch_size, sampler))
            for name, key, *_ in loaders:
                if runs[key]:
                    rate = statistics.median(r for r, _ in runs[key])
                    results[(key, workers, cache)] = rate
                    if workers == 0 and cache == "warm":
                        cpu_rates[key] = statistics.median(c for _, c in runs[key])
                    log.info("%-48s workers=%d %s: %8.1f clips/s", name, workers, cache, rate)

    text = report(args, argv, loaders, results, cpu_rates, workers_list, caches, storage, len(dirs), size)
    crc_us, decode_us = checksum_cost(blobs)
    text += (f"\n\nPer-frame checksum (CRC-32, verified on every read): {crc_us:.2f} us per frame against "
             f"{decode_us:.0f} us to decode it ({100 * crc_us / decode_us:.2f}% of the decode), median of 5 passes "
             f"over all {sum(map(len, blobs))} stored frames.")
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, text + "\n")
        log.info("wrote %s", args.out)
    return 0


def report(args, argv, loaders, results, cpu_rates, workers_list, caches, storage, n_videos, size) -> str:
    cmd = "python -m tools.bench.loader " + shlex.join(sys.argv[1:] if argv is None else argv)
    lines = [f"Command: `{cmd.strip()}`", "",
             f"{n_videos} videos, clips of {args.clip_length} frames every {args.interval} at {size[0]}x{size[1]}, "
             f"batch {args.batch_size}, median of {args.repeats} pass(es); {os.cpu_count()} CPU(s), load average "
             f"{os.getloadavg()[0]:.1f} at the end; Python {platform.python_version()}, SQLite "
             f"{sqlite3.sqlite_version}, OpenCV {cv2.__version__}, torch {torch.__version__}. Cold: "
             f"{'/proc/sys/vm/drop_caches' if args.drop_caches else 'posix_fadvise(DONTNEED) on the loader files'}"
             f"{'' if 'cold' in caches else ' (not run)'}.", ""]
    cpu_col = bool(cpu_rates)
    header = "| loader | " + " | ".join(f"{w} workers, {c}" for w in workers_list for c in caches)
    header += " | 0 workers, warm, per CPU-second |" if cpu_col else " |"
    lines += [header, "|---" * (1 + len(workers_list) * len(caches) + cpu_col) + "|"]
    for name, key, *_ in loaders:
        cells = []
        for w in workers_list:
            for c in caches:
                r = results.get((key, w, c))
                bound = results.get(("d", w, "warm"))
                cells.append("n/a" if r is None else f"{r:.0f}" + (f" ({r / bound:.2f}x d)" if bound else ""))
        if cpu_col:
            r, bound = cpu_rates.get(key), cpu_rates.get("d")
            cells.append("n/a" if r is None else f"{r:.0f}" + (f" ({r / bound:.2f}x d)" if bound else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Clips/s (wall clock at the consumer); in brackets the ratio to the in-memory bound (d) at the same "
              "worker count, warm. The last column divides by the CPU time of the loading process instead (0 "
              "workers only): it is insensitive to other load on a shared machine.", ""]
    for w in workers_list:
        a, b, c, d = (results.get((k, w, "warm")) for k in ("a", "b", "c", "d"))
        if a and b and c and d:
            lines.append(f"- {w} workers, warm: (a)/(d) = {a / d:.2f} (target >= 0.9), (a)/(c) = {a / c:.1f} "
                         f"(target >= 5), (a)/(b) = {a / b:.2f}.")
    if cpu_rates.get("a") and cpu_rates.get("d"):
        lines.append(f"- 0 workers, warm, per CPU-second: (a)/(d) = {cpu_rates['a'] / cpu_rates['d']:.2f}.")
    lines.append("")
    lines += ["| storage | converter frames/s | frames | files | bytes | allocated on disk |", "|---|---|---|---|---|---|"]
    for name, s in storage.items():
        fps = "-" if not s["seconds"] else f"{s['frames'] / s['seconds']:.0f}"
        lines.append(f"| {name} | {fps} | {s['frames']} | {s['files']} | {s['bytes'] / 1e6:.2f} MB | "
                     f"{s['allocated'] / 1e6:.2f} MB |")
    lines += ["", f"Converters use {args.convert_workers} process(es), the same PyAV decode and JPEG q90 encode; "
              "frames/s includes process start-up."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
