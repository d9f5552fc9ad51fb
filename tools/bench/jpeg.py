"""Bytes at scale, side by side in one run: ``python -m tools.bench.jpeg [--sources DIR] [--synthetic]``.

Sources: ``--sources DIR`` (any folder of videos; each sub-folder is a group reported on its own, e.g.
``camera/`` and ``animation/``), else, or also with ``--synthetic``, generated clips (`tools.synthetic`, textured
objects with sensor noise). ``dataset2database`` always runs ``ffmpeg -vf scale=-1:360``, so every source is first
rewritten at exactly 360 px tall (aspect kept, even width) as a lossless file (`tools.bench.lossless_sources`, checked
frame by frame): that file is the input of every store and the PSNR reference (RGB), so both scalers are an
identity and PSNR measures only the JPEG step. Small clips upscaled to 360 px (176x144 -> 440x360) are smoother
than footage filmed at 360 px and compress better with any encoder.

Per group and over all sources, in one process: the legacy ``dataset2database`` (PyPI; it runs the ``ffmpeg``
binary, here the one of ``imageio-ffmpeg``, to write JPEG files, then packs them into ``frames.db``) and this
converter AT THE MATCHED SETTING: the smallest integer ``--quality`` (OpenCV) and the largest ``--qscale``
(``--jpeg-encoder mjpeg``) whose PSNR, found by encoding exactly what the converter encodes, is at or above
``dataset2database``'s, then a real conversion at each.
Both with ``--workers`` processes (``dataset2database`` uses a ``Pool()`` of all CPUs: equal on a 2-core machine).
Rows: bytes per frame, PSNR, conversion frames/s; then this converter at ``--quality`` with and without optimised
Huffman tables, and random clip reads (16 frames, interval 2) from the stores and, through ``decord``, from the
original source videos: clips/s. ``dataset2database``, ``imageio-ffmpeg`` and ``decord`` are only needed here.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Stats:
    """What one store holds for a set of videos: JPEG bytes, frames, PSNR per video (dB), conversion seconds."""

    bytes: int
    frames: int
    psnrs: tuple[float, ...]
    seconds: float = 0.0

    @property
    def bytes_per_frame(self) -> float:
        return self.bytes / max(self.frames, 1)

    @property
    def psnr(self) -> float:
        """Mean over videos (each video weighs the same, as in the quality search)."""
        return float(np.mean(self.psnrs))

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else float("nan")

    def __add__(self, other: Stats) -> Stats:
        return Stats(self.bytes + other.bytes, self.frames + other.frames, self.psnrs + other.psnrs,
                     self.seconds + other.seconds)


def store_stats(video_dirs: list[Path], refs: dict[str, np.ndarray], seconds: float = 0.0) -> Stats:
    """Bytes, frames and PSNR of the databases in `video_dirs` (ours or legacy), each against ``refs[dir name]``."""
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
        if len(ref) != len(frames) or ref.shape[1:] != frames.shape[1:]:
            die(f"{d}: {len(frames)} frames of {frames.shape[1:]}, the source has {len(ref)} of {ref.shape[1:]}", 1)
        total_frames += len(frames)
        psnrs.append(_psnr(frames, ref))
    return Stats(total_bytes, total_frames, tuple(psnrs), seconds)


def opencv_stats(refs: dict[str, np.ndarray], quality: int) -> Stats:
    """OpenCV JPEG with optimised tables at `quality` on the reference frames (what the converter would store)."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_OPTIMIZE, 1]
    nbytes = nframes = 0
    psnrs = []
    for frames in refs.values():
        dec = np.empty_like(frames)
        for k, rgb in enumerate(frames):
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
            nbytes += len(buf)
            dec[k] = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        nframes += len(frames)
        psnrs.append(_psnr(dec, frames))
    return Stats(nbytes, nframes, tuple(psnrs))


def mjpeg_stats(sources: dict[str, Path], refs: dict[str, np.ndarray], qscale: int) -> Stats:
    """FFmpeg's mjpeg (`tools.ingest.jpeg_encoders`) at `qscale` on the decoded YUV frames of `sources`, as the converter
    with ``--jpeg-encoder mjpeg`` encodes them; PSNR against `refs` (RGB)."""
    import av

    from tools.ingest.jpeg_encoders import MjpegEncoder, yuvj420p_planes

    nbytes = nframes = 0
    psnrs = []
    for name, path in sources.items():
        ref = refs[name]
        dec = np.empty_like(ref)
        with av.open(str(path)) as c:
            for k, frame in enumerate(c.decode(video=0)):
                if k == 0:
                    enc = MjpegEncoder(frame.width, frame.height, qscale)
                jpeg = enc.encode(yuvj420p_planes(frame, frame.width, frame.height))
                nbytes += len(jpeg)
                dec[k] = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        nframes += len(ref)
        psnrs.append(_psnr(dec, ref))
    return Stats(nbytes, nframes, tuple(psnrs))


def least_reaching(evaluate: Callable[[int], Stats], settings: Sequence[int],
                   target_psnr: float) -> tuple[int, Stats] | None:
    """The first of `settings` (ordered from the lowest quality to the highest) whose PSNR is at or above
    `target_psnr`, with its stats (None if even the last is below); a bisection, since PSNR grows along them."""
    cache: dict[int, Stats] = {}

    def stats(i: int) -> Stats:
        if i not in cache:
            cache[i] = evaluate(settings[i])
        return cache[i]

    if stats(len(settings) - 1).psnr < target_psnr:
        return None
    lo, hi = 0, len(settings) - 1  # invariant: settings[hi] reaches the target
    while lo < hi:
        mid = (lo + hi) // 2
        if stats(mid).psnr >= target_psnr:
            hi = mid
        else:
            lo = mid + 1
    return settings[hi], stats(hi)


def matched_quality(refs: dict[str, np.ndarray], target_psnr: float) -> tuple[int, Stats] | None:
    """The smallest integer OpenCV quality whose PSNR is at or above `target_psnr`."""
    return least_reaching(lambda q: opencv_stats(refs, q), list(range(1, 101)), target_psnr)


def matched_qscale(sources: dict[str, Path], refs: dict[str, np.ndarray],
                   target_psnr: float) -> tuple[int, Stats] | None:
    """The largest mjpeg qscale whose PSNR is at or above `target_psnr`."""
    from tools.ingest.jpeg_encoders import MAX_QSCALE, MIN_QSCALE

    return least_reaching(lambda q: mjpeg_stats(sources, refs, q), list(range(MAX_QSCALE, MIN_QSCALE - 1, -1)),
                          target_psnr)


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
    p = argparse.ArgumentParser(prog="python -m tools.bench.jpeg", description=__doc__.split("\n\n")[0])
    p.add_argument("--sources", type=Path, default=None,
                   help="folder of videos, one group per sub-folder (default: generated synthetic clips)")
    p.add_argument("--synthetic", action="store_true", help="with --sources: add the synthetic clips as a group")
    p.add_argument("--dir", type=Path, default=Path("bench_data/jpeg"), help="work folder (replaced)")
    p.add_argument("--videos-per-class", type=int, default=3, help="synthetic clips per class (2 classes)")
    p.add_argument("--frames", type=int, default=64, help="frames per synthetic clip")
    p.add_argument("--quality", type=int, default=90, help="quality of the fixed-quality rows")
    p.add_argument("--workers", type=int, default=2, help="converter processes (dataset2database uses all CPUs)")
    p.add_argument("--clips", type=int, default=200)
    return p.parse_args(argv)


def _synthetic_group(work: Path, videos_per_class: int, frames: int) -> dict[str, Path]:
    from tools import synthetic

    out = work / "synthetic"
    if not out.is_dir():
        synthetic.generate(out, classes=2, videos_per_class=videos_per_class, frames=frames, size=(360, 480),
                           progress=False)
    return {f"{p.parent.name}_{p.stem}": p for p in sorted(out.glob("*/*.mp4"))}


def _convert(videos: Path, root: Path, quality: int, workers: int, extra: Sequence[str] = ()) -> float:
    """Seconds for this converter to convert `videos` (``<class>/<video>``) into `root` (added to it)."""
    from tools import convert

    start = time.perf_counter()
    code = convert.main([str(videos), str(root), "--workers", str(workers), "--quality", str(quality),
                         "--overwrite", *extra])
    if code != 0:
        die(f"conversion of {videos} into {root} failed", 1)
    return time.perf_counter() - start


def _ours(prep: Path, groups: Sequence[str], refs: dict[str, dict[str, np.ndarray]], root: Path, quality: int,
          workers: int, extra: Sequence[str] = ()) -> dict[str, Stats]:
    """Per group: this converter's store at `quality` (groups converted one after the other into `root`)."""
    out = {}
    for g in groups:
        seconds = _convert(prep / g, root, quality, workers, extra)
        out[g] = store_stats(sorted((root / "jpg" / g).iterdir()), refs[g], seconds)
    return out


def _d2d(prep: Path, group: str, refs: dict[str, np.ndarray], out: Path) -> Stats:
    seconds = run_dataset2database(prep / group, out)
    dirs = sorted(p for p in (out / group).glob("*") if (p / "frames.db").is_file())
    if len(dirs) != len(refs):
        die(f"dataset2database wrote {len(dirs)} of {len(refs)} databases under {out / group}", 1)
    return store_stats(dirs, refs, seconds)


def _total(stats: dict[str, Stats]) -> Stats:
    items = list(stats.values())
    total = items[0]
    for s in items[1:]:
        total = total + s
    return total


OPENCV, MJPEG = "ours, OpenCV, matched quality", "ours, mjpeg, matched qscale"


def _row(name: str, s: Stats, quality: str = "-") -> str:
    return f"{name:<34} {quality:>7} {s.bytes_per_frame:>11.0f} {s.psnr:>8.2f} {s.fps:>17.1f}"


def _comparison(title: str, d2d: Stats, ours: Sequence[tuple[str, tuple[int, Stats] | None, Stats | None]]) -> list[str]:
    """Lines of one table: dataset2database, then each of ours as (name, (setting, predicted stats), stats)."""
    lines = [title, f"{'store':<34} {'setting':>7} {'bytes/frame':>11} {'PSNR dB':>8} {'convert frames/s':>17}",
             _row("dataset2database (ffmpeg)", d2d)]
    for name, matched, stats in ours:
        if matched is None or stats is None:
            lines.append(f"{name}: its best setting stays below dataset2database's PSNR")
            continue
        setting, predicted = matched
        lines += [_row(name, stats, f"{'q' if 'OpenCV' in name else 'qs'}{setting}"),
                  f"  bytes {stats.bytes_per_frame / d2d.bytes_per_frame:.3f}x dataset2database, "
                  f"PSNR {stats.psnr - d2d.psnr:+.2f} dB (search predicted {predicted.psnr:.2f} dB, "
                  f"{predicted.bytes_per_frame:.0f} B), speed {stats.fps / d2d.fps:.2f}x"]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: prints per-group and overall tables of bytes, PSNR, frames/s, then clips/s."""
    args = parse_args(argv)
    setup_logging()
    try:
        import dataset2database  # noqa: F401
        import decord
        import imageio_ffmpeg  # noqa: F401
    except ImportError as e:
        die(f"this benchmark needs dataset2database, imageio-ffmpeg and decord ({e})")
    from data.store import get_reader
    from tools.bench.lossless_sources import find_sources, write_lossless

    sources: dict[str, dict[str, Path]] = {}
    if args.sources is not None:
        if not args.sources.is_dir():
            die(f"{args.sources}: no such folder")
        sources = find_sources(args.sources)
        if not sources:
            die(f"{args.sources}: no videos found")
    if args.sources is None or args.synthetic:
        sources["synthetic"] = _synthetic_group(args.dir, args.videos_per_class, args.frames)
    prep = args.dir / "prepared"
    for old in (prep, args.dir / "stores"):
        if old.exists():
            shutil.rmtree(old)
    refs: dict[str, dict[str, np.ndarray]] = {}
    sizes: dict[str, set[str]] = {}
    suffix: dict[str, dict[str, str]] = {}
    for g, videos in sources.items():
        for name, path in videos.items():
            try:
                item = write_lossless(path, prep / g / g / name, 360)
            except ValueError as e:
                die(str(e), 1)
            refs.setdefault(g, {})[name] = reference_frames(item.path)
            sizes.setdefault(g, set()).add(f"{item.width}x{item.height}")
            suffix.setdefault(g, {})[name] = item.path.suffix
            log.info("%s: lossless %s copy %s, %dx%d, %d frames", path, item.codec, item.path, item.width,
                     item.height, item.frames)
    groups = list(refs)
    stores = args.dir / "stores"
    inputs = {g: {n: prep / g / g / f"{n}{suffix[g][n]}" for n in refs[g]} for g in groups}
    d2d, matched, ours, matched_mj, ours_mj = {}, {}, {}, {}, {}
    with ffmpeg_on_path(args.dir):
        for g in groups:  # side by side: dataset2database, then ours at its PSNR, group by group
            d2d[g] = _d2d(prep, g, refs[g], stores / "d2d")
            matched[g] = matched_quality(refs[g], d2d[g].psnr)
            if matched[g] is not None:
                ours.update(_ours(prep, [g], refs, stores / f"matched_{g}", matched[g][0], args.workers))
            matched_mj[g] = matched_qscale(inputs[g], refs[g], d2d[g].psnr)
            if matched_mj[g] is not None:
                ours_mj.update(_ours(prep, [g], refs, stores / f"mjpeg_{g}", args.quality, args.workers,
                                     ("--jpeg-encoder", "mjpeg", "--qscale", str(matched_mj[g][0]))))
    all_refs = {f"{g}/{n}": r for g in groups for n, r in refs[g].items()}
    all_inputs = {f"{g}/{n}": p for g in groups for n, p in inputs[g].items()}
    d2d_all = _total(d2d)
    matched_all = matched_quality(all_refs, d2d_all.psnr)
    ours_all = None
    if matched_all is not None:
        ours_all = _total(_ours(prep, groups, refs, stores / "matched_all", matched_all[0], args.workers))
    matched_mj_all = matched_qscale(all_inputs, all_refs, d2d_all.psnr)
    ours_mj_all = None
    if matched_mj_all is not None:
        ours_mj_all = _total(_ours(prep, groups, refs, stores / "mjpeg_all", args.quality, args.workers,
                                   ("--jpeg-encoder", "mjpeg", "--qscale", str(matched_mj_all[0]))))
    fixed = {}
    for name, sub, extra in ((f"ours q{args.quality}, optimised Huffman", "fixed_opt", ()),
                             (f"ours q{args.quality}, standard Huffman", "fixed_std", ("--no-jpeg-optimize",))):
        fixed[name] = _total(_ours(prep, groups, refs, stores / sub, args.quality, args.workers, extra))

    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"
    print(f"load average {load}, {args.workers} converter process(es), {os.cpu_count()} CPUs")
    for g in groups:
        n = len(refs[g])
        title = (f"== {g}: {n} video(s), {d2d[g].frames} frames, {', '.join(sorted(sizes[g]))} (lossless 360 px "
                 f"copies)")
        print("\n".join(_comparison(title, d2d[g], [(OPENCV, matched[g], ours.get(g)),
                                                    (MJPEG, matched_mj[g], ours_mj.get(g))])))
    title = f"== all sources: {len(all_refs)} videos, {d2d_all.frames} frames, one setting for every video"
    print("\n".join(_comparison(title, d2d_all, [(OPENCV, matched_all, ours_all),
                                                 (MJPEG, matched_mj_all, ours_mj_all)])))
    for name, per in ((OPENCV, ours), (MJPEG, ours_mj)):
        if set(per) == set(groups):
            mine, theirs = _total(per), d2d_all
            print(f"  {name}, each group at its own matched setting: {mine.bytes_per_frame:.0f} vs "
                  f"{theirs.bytes_per_frame:.0f} bytes/frame = {mine.bytes_per_frame / theirs.bytes_per_frame:.3f}x, "
                  f"speed {mine.fps / theirs.fps:.2f}x")
    print("== fixed quality, all sources")
    for name, s in fixed.items():
        print(_row(name, s, f"q{args.quality}"))

    def dirs_of(root: Path) -> list[Path]:
        return sorted(p for p in root.glob("jpg/*/*") if p.is_dir())

    readers_of = {f"ours q{args.quality} (optimised)": dirs_of(stores / "fixed_opt")}
    if matched_all is not None:
        readers_of[f"ours OpenCV q{matched_all[0]} (matched)"] = dirs_of(stores / "matched_all")
    if matched_mj_all is not None:
        readers_of[f"ours mjpeg qs{matched_mj_all[0]} (matched)"] = dirs_of(stores / "mjpeg_all")
    readers_of["dataset2database (ffmpeg)"] = sorted(p for p in (stores / "d2d").glob("*/*")
                                                     if (p / "frames.db").is_file())
    print(f"{'reader':<34} {'clips/s (16 frames)':>20}")
    for name, dirs in readers_of.items():
        readers = [get_reader(d) for d in dirs]
        n_frames = [len(r) for r in readers]
        print(f"{name:<34} {clip_reads(lambda v, i, rs=readers: rs[v].read(i), n_frames, args.clips):>20.1f}")
    originals = [p for g in groups for p in sources[g].values()]
    decoders = [decord.VideoReader(str(p), num_threads=1) for p in originals]
    n_frames = [len(d) for d in decoders]
    print(f"{'decord (original sources)':<34} "
          f"{clip_reads(lambda v, i: decoders[v].get_batch(i).asnumpy(), n_frames, args.clips):>20.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
