"""Bytes at scale, side by side in one run: ``python -m tools.bench_jpeg``.

On generated clips (`tools.synthetic`, 360 px tall so that ``dataset2database``'s ``scale=-1:360`` keeps their size)
it converts the same videos with

- this converter with optimised Huffman tables (the default) and without (``--no-jpeg-optimize``);
- the legacy ``dataset2database`` (PyPI), which runs the ``ffmpeg`` binary (here the one of ``imageio-ffmpeg``)
  to write JPEG files and then packs them into ``frames.db``;

and reports bytes per frame, PSNR against the decoded source frames (RGB), conversion frames/s, and this
converter's bytes per frame at the PSNR ``dataset2database`` reaches (a quality sweep, interpolated). It then reads
random clips (16 frames, interval 2) from both stores and, through ``decord``, from the source videos: clips/s.
``dataset2database``, ``imageio-ffmpeg`` and ``decord`` are only needed here (not by the project).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from train.console import die, setup_logging

log = logging.getLogger(__name__)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def reference_frames(video: Path) -> np.ndarray:
    """Every frame of `video` decoded to RGB: the ground truth each store is compared with."""
    import av

    with av.open(str(video)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def store_stats(video_dirs: list[Path], refs: dict[str, np.ndarray]) -> tuple[float, float]:
    """(JPEG bytes per frame, mean PSNR in dB) over the databases of `video_dirs` (ours or legacy)."""
    from data.store import open_video

    total_bytes = total_frames = 0
    psnrs = []
    for d in video_dirs:
        with open_video(d) as reader:
            frames = reader.read(list(range(len(reader))))
        conn = sqlite3.connect(d / "frames.db")
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            query = "SELECT sum(length(jpeg)) FROM frames" if "frames" in tables else \
                "SELECT sum(length(frames)) FROM Images"
            total_bytes += conn.execute(query).fetchone()[0]
        finally:
            conn.close()
        ref = refs[d.name]
        n = min(len(ref), len(frames))
        total_frames += len(frames)
        psnrs.append(_psnr(frames[:n], ref[:n]))
    return total_bytes / total_frames, float(np.mean(psnrs))


def quality_sweep(refs: dict[str, np.ndarray], qualities: Sequence[int]) -> list[tuple[int, float, float]]:
    """(quality, bytes/frame, PSNR) of OpenCV JPEG with optimised tables on the reference frames."""
    out = []
    for q in qualities:
        params = [cv2.IMWRITE_JPEG_QUALITY, q, cv2.IMWRITE_JPEG_OPTIMIZE, 1]
        nbytes = nframes = 0
        psnrs = []
        for frames in refs.values():
            dec = []
            for rgb in frames:
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
                nbytes += len(buf)
                dec.append(cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
            nframes += len(frames)
            psnrs.append(_psnr(np.stack(dec), frames))
        out.append((q, nbytes / nframes, float(np.mean(psnrs))))
    return out


def bytes_at_psnr(sweep: list[tuple[int, float, float]], target: float) -> float:
    """Bytes/frame at PSNR `target`, interpolated linearly between the sweep's neighbouring qualities."""
    pts = sorted((p, b) for _, b, p in sweep)
    psnr, nbytes = zip(*pts)
    return float(np.interp(target, psnr, nbytes))


@contextlib.contextmanager
def ffmpeg_on_path(tmp: Path):
    """Put imageio-ffmpeg's ffmpeg binary on PATH as `ffmpeg` (dataset2database calls it by name)."""
    import imageio_ffmpeg

    bin_dir = tmp / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    link = bin_dir / "ffmpeg"
    if not link.exists():
        link.symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{old}"
    try:
        yield
    finally:
        os.environ["PATH"] = old


def run_dataset2database(videos: Path, out: Path) -> float:
    """Convert with dataset2database; returns seconds. It takes paths relative to the working directory."""
    import dataset2database

    # dataset2database 1.2 calls np.fromstring on bytes, removed in NumPy 2: give it the equivalent frombuffer
    # (its Pool workers are forked and inherit the shim).
    if not hasattr(np, "_bench_fromstring"):
        np._bench_fromstring = np.fromstring
        np.fromstring = lambda data, dtype=float, *a, **k: np.frombuffer(data, dtype=dtype)
    cwd = os.getcwd()
    os.chdir(videos.parent)
    try:
        start = time.perf_counter()
        dataset2database.convert(videos.name + "/", os.path.relpath(out, videos.parent), verbose_lvl=0)
        return time.perf_counter() - start
    finally:
        os.chdir(cwd)


def clip_reads(read_clip, n_frames: list[int], clips: int, seed: int = 0) -> float:
    """Clips per second of `read_clip(video, indices)` over random 16-frame, interval-2 clips."""
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for _ in range(clips):
        v = int(rng.integers(len(n_frames)))
        s = int(rng.integers(max(1, n_frames[v] - 31)))
        read_clip(v, [min(s + 2 * k, n_frames[v] - 1) for k in range(16)])
    return clips / (time.perf_counter() - start)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.bench_jpeg", description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, default=Path("bench_data/jpeg"))
    p.add_argument("--videos-per-class", type=int, default=3)
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--workers", type=int, default=2, help="converter processes (dataset2database uses all CPUs)")
    p.add_argument("--clips", type=int, default=200)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: prints one table of bytes, PSNR, frames/s and clips/s."""
    args = parse_args(argv)
    setup_logging()
    try:
        import dataset2database  # noqa: F401
        import decord
        import imageio_ffmpeg  # noqa: F401
    except ImportError as e:
        die(f"this benchmark needs dataset2database, imageio-ffmpeg and decord ({e})")
    from data.store import get_reader
    from tools import convert, synthetic

    videos = args.dir / "videos"
    if not videos.is_dir():
        synthetic.generate(videos, classes=2, videos_per_class=args.videos_per_class, frames=args.frames,
                           size=(360, 480), progress=False)
    sources = sorted(videos.glob("*/*.mp4"))
    refs = {p.stem: reference_frames(p) for p in sources}
    n_total = sum(len(r) for r in refs.values())
    rows = []
    stores = {}
    for name, extra in (("ours (optimised Huffman)", []), ("ours (standard Huffman)", ["--no-jpeg-optimize"])):
        root = args.dir / ("opt" if not extra else "std")
        start = time.perf_counter()
        code = convert.main([str(videos), str(root), "--workers", str(args.workers), "--quality",
                             str(args.quality), "--overwrite", *extra])
        seconds = time.perf_counter() - start
        if code != 0:
            die(f"conversion into {root} failed", 1)
        dirs = sorted((root / "jpg").glob("*/*"))
        stores[name] = dirs
        rows.append((name, *store_stats(dirs, refs), n_total / seconds))
    d2d = args.dir / "d2d"
    if d2d.exists():
        import shutil

        shutil.rmtree(d2d)
    with ffmpeg_on_path(args.dir):
        seconds = run_dataset2database(videos, d2d)
    d2d_dirs = sorted(p for p in d2d.glob("*/*") if (p / "frames.db").is_file())
    if len(d2d_dirs) != len(sources):
        die(f"dataset2database wrote {len(d2d_dirs)} of {len(sources)} databases under {d2d}", 1)
    stores["dataset2database (ffmpeg)"] = d2d_dirs
    d2d_bytes, d2d_psnr = store_stats(d2d_dirs, refs)
    rows.append(("dataset2database (ffmpeg)", d2d_bytes, d2d_psnr, n_total / seconds))
    sweep = quality_sweep(refs, range(50, 100, 5))
    matched = bytes_at_psnr(sweep, d2d_psnr)

    print(f"{len(sources)} clips, {n_total} frames of 480x360 (synthetic), quality {args.quality}, "
          f"{args.workers} worker(s)")
    print(f"{'store':<28} {'bytes/frame':>11} {'PSNR dB':>8} {'convert frames/s':>17}")
    for name, nbytes, psnr, fps in rows:
        print(f"{name:<28} {nbytes:>11.0f} {psnr:>8.2f} {fps:>17.1f}")
    print(f"ours (optimised) at dataset2database's PSNR {d2d_psnr:.2f} dB: {matched:.0f} bytes/frame "
          f"= {matched / d2d_bytes:.2f}x dataset2database")
    print(f"{'reader':<28} {'clips/s (16 frames)':>20}")
    for name, dirs in stores.items():
        readers = [get_reader(d) for d in dirs]
        n_frames = [len(r) for r in readers]
        print(f"{name:<28} {clip_reads(lambda v, i, rs=readers: rs[v].read(i), n_frames, args.clips):>20.1f}")
    decoders = [decord.VideoReader(str(p), num_threads=1) for p in sources]
    n_frames = [len(d) for d in decoders]
    print(f"{'decord (mp4 source)':<28} "
          f"{clip_reads(lambda v, i: decoders[v].get_batch(i).asnumpy(), n_frames, args.clips):>20.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
