"""Segment-cutting benchmark: HACS-like clips cut out of one long untrimmed video, four ways.

    python -m tools.bench.segments [--minutes 3] [--size 320x240] [--fps 30] [--keyint 150] [--clips 15.5,80,150]

Generates (once, under ``--work``) an h264 video with a moving textured pattern (so the codec does real work),
then times ``tools.ingest.segments.convert_source`` cutting 2-second clips from it:

- (a) all clips in one pass, seeking over long gaps (the converter's default);
- (b) all clips in one pass, decoding every frame up to the last clip (no seeking);
- (c) one pass per clip, seeking (what cutting each clip on its own, e.g. ``ffmpeg -ss`` per clip, costs);
- (d) one pass per clip from the start of the video, no seeking.

Reports process CPU seconds (``time.process_time``: other jobs on the machine do not count), wall seconds, source
frames decoded and containers opened; prints a markdown table.
"""
from __future__ import annotations

import argparse
import logging
import math
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tools.ingest import segments as convert_segments
from tools.ingest.jobs import Job
from tools.ingest.segments import SourceJob, convert_source
from train.console import die, setup_logging

log = logging.getLogger(__name__)


def make_video(path: Path, seconds: float, size: tuple[int, int], fps: int, keyint: int, seed: int = 0) -> Path:
    """An h264 mp4 of a drifting random texture (`size` is width x height)."""
    import av

    width, height = size
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (height * 2, width * 2, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "g": str(keyint), "keyint_min": str(keyint), "sc_threshold": "0"}
        for i in range(int(seconds * fps)):
            x, y = (3 * i) % width, (2 * i) % height
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(texture[y:y + height, x:x + width]),
                                               format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _run(video: Path, out: Path, starts: list[float], per_clip: bool, seek_gap: float) -> dict[str, float]:
    shutil.rmtree(out, ignore_errors=True)
    clips = [(Job(str(video), "a", f"c{k}", str(out / f"c{k}"), threads=1), (s, s + 2.0)) for k, s in enumerate(starts)]
    groups = [[c] for c in clips] if per_clip else [clips]
    old = convert_segments.SEEK_GAP
    convert_segments.SEEK_GAP = seek_gap
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        decoded = opens = frames = 0
        for group in groups:
            res = convert_source(SourceJob(str(video), tuple(j for j, _ in group), tuple(t for _, t in group)))
            bad = [r for r in res.results if r.status != "converted"]
            if bad:
                raise RuntimeError(f"{video}: {bad[0].reason}")
            decoded, opens = decoded + res.decoded, opens + res.opens
            frames += sum(r.frames for r in res.results)
        return {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall, "decoded": decoded,
                "opens": opens, "frames": frames}
    finally:
        convert_segments.SEEK_GAP = old


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints the table and returns 0."""
    p = argparse.ArgumentParser(prog="python -m tools.bench.segments", description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("bench_data/segments"), help="scratch folder")
    p.add_argument("--minutes", type=float, default=3.0, help="length of the untrimmed video")
    p.add_argument("--size", default="320x240", help="WIDTHxHEIGHT")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--keyint", type=int, default=150, help="frames between keyframes (YouTube: ~2-5 s)")
    p.add_argument("--clips", default="15.5,80,150", help="start seconds of the 2-second clips")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per way (the median is reported)")
    args = p.parse_args(argv)
    setup_logging()
    try:
        size = tuple(int(v) for v in args.size.lower().split("x"))
        starts = sorted(float(v) for v in args.clips.split(","))
    except ValueError:
        die(f"--size must be WIDTHxHEIGHT and --clips numbers, got {args.size!r}, {args.clips!r}")
    if len(size) != 2 or min(size) < 16 or not starts or starts[-1] + 2 > args.minutes * 60 or starts[0] < 0:
        die("each clip must lie inside the video (--clips, --minutes), and --size be at least 16x16")
    video = args.work / f"untrimmed_{args.size}_{args.fps}fps_{args.minutes:g}min_k{args.keyint}.mp4"
    if not video.is_file():
        log.info("generating %s", video)
        make_video(video, args.minutes * 60, size, args.fps, args.keyint)
    ways = [("(a) one pass, seeking (default)", False, convert_segments.SEEK_GAP),
            ("(b) one pass, no seeking", False, math.inf),
            ("(c) one pass per clip, seeking", True, convert_segments.SEEK_GAP),
            ("(d) one pass per clip from the start", True, math.inf)]
    rows = []
    for name, per_clip, gap in ways:
        runs = [_run(video, args.work / "out", starts, per_clip, gap) for _ in range(max(1, args.repeats))]
        runs.sort(key=lambda r: r["cpu"])
        rows.append((name, runs[len(runs) // 2]))
    total = int(args.minutes * 60 * args.fps)
    print(f"\n{len(starts)} clips of 2 s from a {args.minutes:g}-min {args.size} {args.fps} fps h264 video "
          f"({total} frames, keyframe every {args.keyint}):\n")
    print("| way | CPU s | wall s | frames decoded | opens | clip frames written |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['cpu']:.2f} | {r['wall']:.2f} | {r['decoded']} | {r['opens']} | {r['frames']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
