"""Synthetic demo videos whose classes differ only in the direction of motion.

    python -m tools.synthetic DATASET_VIDEOS --classes 8 --videos-per-class 40 --seed 0

writes ``DATASET_VIDEOS/<class>/<class>_<i:04d>.mp4`` (H.264 through PyAV; MPEG-4 part 2 if the av wheel has no
libx264) and nothing else: `tools.convert` turns the folder into a frame store with its labels.

Every video shows one textured object on a random textured background, with sensor noise and brightness flicker.
The classes come in time-reversal pairs (move left / right, up / down, rotate clockwise / anticlockwise,
grow / shrink): a video of the second class of a pair is rendered exactly as one of the first class and then
played backwards. The *set* of frames of a video therefore has the same distribution in both classes of a pair,
so a model that averages per-frame features over time cannot beat chance within a pair, while any model that
looks at frame order can. (Across pairs a frame-set model can still tell e.g. a rotating object from a moving
one, so its ceiling is 2/K with K classes, exactly chance for K=2.)
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from data.atomic import atomic_path
from data.fork_safety import fork_context, opencv_single_threaded
from data.index import IndexEntry, add_entries, index_path
from data.labels import Sample, write_classes, write_labels
from train.console import die, setup_logging

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MotionClass:
    name: str
    motion: str  # "x", "y", "rotate", "scale": what changes over time
    reverse: bool  # rendered as its pair partner, then played backwards


# Order matters: --classes K takes the first K, so any even K is made of whole reversal pairs.
CLASSES: tuple[MotionClass, ...] = (
    MotionClass("move_right", "x", False),
    MotionClass("move_left", "x", True),
    MotionClass("move_down", "y", False),
    MotionClass("move_up", "y", True),
    MotionClass("rotate_clockwise", "rotate", False),
    MotionClass("rotate_anticlockwise", "rotate", True),
    MotionClass("grow", "scale", False),
    MotionClass("shrink", "scale", True),
)
CLASS_NAMES = tuple(c.name for c in CLASSES)
_BY_NAME = {c.name: c for c in CLASSES}

DEFAULT_CLASSES = 8
DEFAULT_VIDEOS_PER_CLASS = 40
DEFAULT_FRAMES = 32
DEFAULT_SIZE = (128, 160)  # (H, W): holds a 112 crop at resize_short 128, and 64 crops after resizing
DEFAULT_FPS = 25


def _smooth_texture(rng: np.random.Generator, h: int, w: int, cells: int, contrast: float,
                    base: np.ndarray) -> np.ndarray:
    """Random colour texture: coarse uniform noise upsampled (bicubic), around colour `base`, float32 (h, w, 3)."""
    gh = max(2, round(cells * h / max(h, w)))
    gw = max(2, round(cells * w / max(h, w)))
    grid = rng.uniform(-1.0, 1.0, size=(gh, gw, 3)).astype(np.float32)
    tex = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return base.astype(np.float32) + contrast * tex


def _object_patch(rng: np.random.Generator, side: int) -> tuple[np.ndarray, np.ndarray]:
    """A high-contrast blocky texture (RGB float32) and an asymmetric shape mask (float32 0..1), both side x side."""
    cells = int(rng.integers(3, 6))
    grid = rng.uniform(0, 255, size=(cells, cells, 3)).astype(np.float32)
    patch = cv2.resize(grid, (side, side), interpolation=cv2.INTER_NEAREST)
    # A few thin stripes so that rotation and scale are visible at every position, not only at block edges.
    stripe = (np.arange(side) // max(2, side // 10)) % 2
    patch *= (0.75 + 0.25 * stripe)[None, :, None].astype(np.float32)
    mask = np.zeros((side, side), np.uint8)
    c = side / 2
    shape = rng.integers(0, 3)
    if shape == 0:  # ellipse, off-centre notch keeps it asymmetric under rotation
        axes = (int(side * 0.48), int(side * rng.uniform(0.3, 0.42)))
        cv2.ellipse(mask, (int(c), int(c)), axes, 0, 0, 360, 255, -1)
        cv2.circle(mask, (int(c + axes[0] * 0.6), int(c)), max(2, side // 8), 0, -1)
    elif shape == 1:  # irregular quadrilateral
        # Corners roughly a quarter turn apart, so that the shape is never a sliver.
        angles = rng.uniform(0, 2 * np.pi) + np.arange(4) * (np.pi / 2) + rng.uniform(-0.45, 0.45, 4)
        pts = [(c + r * np.cos(a), c + r * np.sin(a)) for a, r in zip(angles, rng.uniform(0.38, 0.5, 4) * side)]
        cv2.fillPoly(mask, [np.round(np.array(pts)).astype(np.int32)], 255)
    else:  # triangle
        pts = [(c + 0.48 * side * np.cos(a), c + 0.48 * side * np.sin(a))
               for a in (0.0, rng.uniform(1.6, 2.4), rng.uniform(3.8, 4.6))]
        cv2.fillPoly(mask, [np.round(np.array(pts)).astype(np.int32)], 255)
    return patch, mask.astype(np.float32) / 255.0


def render_video(class_name: str, rng: np.random.Generator, frames: int = DEFAULT_FRAMES,
                 size: tuple[int, int] = DEFAULT_SIZE) -> np.ndarray:
    """Render one video of `class_name` as uint8 RGB (T, H, W, 3), drawing every random choice from `rng`.

    For a reversal pair (A, B), ``render_video(B, rng) == render_video(A, rng')[::-1]`` when `rng` and `rng'`
    are in the same state: B is A played backwards, so both classes have the same distribution of frame sets.
    """
    if class_name not in _BY_NAME:
        raise ValueError(f"unknown class {class_name!r}; known: {', '.join(CLASS_NAMES)}")
    if frames < 2:
        raise ValueError(f"frames must be >= 2, got {frames}")
    spec = _BY_NAME[class_name]
    h, w = size
    short = min(h, w)
    t = np.arange(frames, dtype=np.float64)  # speeds are per frame, so longer videos do not move slower

    bg_colour = rng.uniform(40, 215, size=3)
    background = _smooth_texture(rng, h, w, int(rng.integers(4, 12)), rng.uniform(15, 45), bg_colour)
    side = max(8, int(round(rng.uniform(0.35, 0.5) * short)))
    patch, mask = _object_patch(rng, side)

    # Static pose, then the one quantity that changes along `t` (the others stay fixed for the video).
    angle = np.full(frames, rng.uniform(0, 360))
    scale = np.full(frames, rng.uniform(0.85, 1.15))
    lo_x, hi_x, lo_y, hi_y = 0.2 * w, 0.8 * w, 0.2 * h, 0.8 * h
    cx = np.full(frames, rng.uniform(lo_x, hi_x))
    cy = np.full(frames, rng.uniform(lo_y, hi_y))
    if spec.motion in ("x", "y"):
        lo, hi = (lo_x, hi_x) if spec.motion == "x" else (lo_y, hi_y)
        speed = min(rng.uniform(0.011, 0.018) * short, (hi - lo) / (frames - 1))  # pixels per frame
        start = lo + rng.uniform(0.0, max(0.0, hi - lo - speed * (frames - 1)))
        track = start + speed * t
        if spec.motion == "x":
            cx = track
        else:
            cy = track
    elif spec.motion == "rotate":
        # Image y points down, so a decreasing OpenCV angle (counter-clockwise positive) turns clockwise on screen.
        angle = angle[0] - rng.uniform(6.0, 10.0) * t  # degrees per frame
    else:  # scale: log-linear growth keeps the apparent speed even
        log_lo, log_hi = np.log(0.4), np.log(1.5)
        log_speed = min(rng.uniform(0.028, 0.04), (log_hi - log_lo) / (frames - 1))  # 2.8-4% per frame
        log_start = log_lo + rng.uniform(0.0, max(0.0, log_hi - log_lo - log_speed * (frames - 1)))
        scale = np.exp(log_start + log_speed * t)
        # Keep the whole object in view however large it gets.
        cx = np.full(frames, rng.uniform(0.35 * w, 0.65 * w))
        cy = np.full(frames, rng.uniform(0.35 * h, 0.65 * h))

    noise_sigma = rng.uniform(2.0, 7.0)
    flicker = rng.normal(0.0, 3.0, size=frames).astype(np.float32)
    video = np.empty((frames, h, w, 3), np.uint8)
    for i in range(frames):
        m = cv2.getRotationMatrix2D((side / 2, side / 2), float(angle[i]), float(scale[i]))
        m[:, 2] += (cx[i] - side / 2, cy[i] - side / 2)
        obj = cv2.warpAffine(patch, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        alpha = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)[..., None]
        frame = background * (1.0 - alpha) + obj * alpha
        frame += rng.standard_normal((h, w, 3), dtype=np.float32) * noise_sigma + flicker[i]
        np.clip(frame, 0, 255, out=frame)
        video[i] = frame.astype(np.uint8)
    return np.ascontiguousarray(video[::-1]) if spec.reverse else video


def video_rng(seed: int, class_index: int, video_index: int) -> np.random.Generator:
    """The generator of one video: depends only on (seed, class, index), not on K, N or worker scheduling."""
    return np.random.default_rng([seed, class_index, video_index])


@cache
def pick_codec() -> str:
    """``libx264`` when the av wheel has it, else ``mpeg4`` (always built into FFmpeg)."""
    import av

    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # noqa: BLE001 - any failure means: not usable here
        return "mpeg4"


def encode_video(path: str | os.PathLike, video: np.ndarray, fps: int = DEFAULT_FPS, codec: str | None = None) -> None:
    """Encode uint8 RGB (T, H, W, 3) into an mp4 at `path` (atomically: a temporary file, then renamed).

    H.264 uses CRF 20 without macroblock-tree, single-threaded (same bytes every run), yuv420p, or yuv444p when
    H or W is odd.
    """
    import av

    codec = codec or pick_codec()
    path = Path(path)
    t, h, w, _ = video.shape
    odd = h % 2 or w % 2
    if odd and codec != "libx264":
        raise ValueError(f"{path}: {codec} needs an even frame size, got {h}x{w}")
    # A file name, not a Python file object: FFmpeg then does its own I/O, also in forked worker processes.
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv444p" if odd else "yuv420p"
        if codec == "libx264":
            # mbtree off: with it x264 gave different bytes run to run here, and it moves quality towards the
            # frames others reference (a time asymmetry we do not want in reversal pairs).
            stream.options = {"crf": "20", "preset": "veryfast", "threads": "1", "x264-params": "mbtree=0"}
        else:
            stream.options = {"qmin": "2", "qmax": "4", "threads": "1"}  # near-constant high quality
        stream.codec_context.thread_count = 1
        for index, frame in enumerate(video):
            av_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            av_frame.pts = index
            av_frame.time_base = Fraction(1, fps)
            for packet in stream.encode(av_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _make_one(task: tuple) -> str:
    out_dir, class_index, video_index, seed, frames, size, fps, codec = task
    name = CLASSES[class_index].name
    video = render_video(name, video_rng(seed, class_index, video_index), frames, size)
    path = Path(out_dir) / name / f"{name}_{video_index:04d}.mp4"
    encode_video(path, video, fps, codec)
    return str(path)


def generate(out_dir: str | os.PathLike, classes: int = DEFAULT_CLASSES,
             videos_per_class: int = DEFAULT_VIDEOS_PER_CLASS, seed: int = 0, frames: int = DEFAULT_FRAMES,
             size: tuple[int, int] = DEFAULT_SIZE, fps: int = DEFAULT_FPS, workers: int | None = None,
             overwrite: bool = False, progress: bool = True) -> list[Path]:
    """Write ``classes * videos_per_class`` videos under `out_dir` and return their paths (sorted).

    Raises `ValueError` for bad arguments and `FileExistsError` if `out_dir` already holds files and not
    `overwrite` (then only the class folders this writes are replaced).
    """
    if not 1 <= classes <= len(CLASSES):
        raise ValueError(f"--classes must be between 1 and {len(CLASSES)}, got {classes}")
    if videos_per_class < 1:
        raise ValueError(f"--videos-per-class must be >= 1, got {videos_per_class}")
    if frames < 2:
        raise ValueError(f"--frames must be >= 2, got {frames}")
    if min(size) < 16:
        raise ValueError(f"--size must be at least 16x16, got {size[0]}x{size[1]}")
    if fps < 1:
        raise ValueError(f"--fps must be >= 1, got {fps}")
    codec = pick_codec()
    if codec != "libx264" and (size[0] % 2 or size[1] % 2):
        raise ValueError(f"--size {size[0]}x{size[1]}: {codec} needs even sizes (this av wheel has no libx264)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out}: folder is not empty (use --overwrite to replace the demo videos)")
        for c in CLASSES:
            if (out / c.name).is_dir():
                shutil.rmtree(out / c.name)
    names = [c.name for c in CLASSES[:classes]]
    for name in names:
        (out / name).mkdir(parents=True, exist_ok=True)
    tasks = [(str(out), ci, vi, seed, frames, tuple(size), fps, codec)
             for ci in range(classes) for vi in range(videos_per_class)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    bar = tqdm(total=len(tasks), unit="video", desc="synthetic", disable=not progress)
    paths: list[str] = []
    if workers == 1:
        for task in tasks:
            paths.append(_make_one(task))
            bar.update()
    else:
        # Each worker renders and encodes whole videos; cv2 threads would only fight over the cores. The
        # workers' cv2.setNumThreads(1) would deadlock on a pool inherited from here (data.fork_safety).
        with opencv_single_threaded(), (fork_context() or get_context()).Pool(
                workers, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
            for p in pool.imap_unordered(_make_one, tasks, chunksize=4):
                paths.append(p)
                bar.update()
    bar.close()
    return sorted(Path(p) for p in paths)


def build_layout(root: Path, n_videos: int, n_classes: int, seed: int = 0) -> None:
    """A markers-only frame store of `n_videos` videos (an ``n_frames`` marker each, no frames: opening a dataset
    needs none), its labels, classes and index; skipped if already complete."""
    done = root / ".layout_complete"
    if done.is_file() and done.read_text() == f"{n_videos} {n_classes} {seed}\n":
        return
    rng = np.random.default_rng(seed)
    classes = [f"class {c:03d} (synthetic)" for c in range(n_classes)]
    counts = rng.integers(30, 301, size=n_videos)
    samples, entries = [], []
    for i in tqdm(range(n_videos), desc=f"layout {n_videos}", unit="video", mininterval=5):
        label = classes[i % n_classes]
        video_id = f"yt{i:09d}_{i % 97:06d}_{i % 97 + 10:06d}"  # Kinetics-like ids
        d = root / "jpg" / label / video_id
        d.mkdir(parents=True, exist_ok=True)
        (d / "n_frames").write_text(f"{counts[i]}\n")
        split = "val" if i % 10 == 0 else "train"
        samples.append(Sample(video_id, label, split))
        entries.append(IndexEntry(label, video_id, int(counts[i]), 256, 340, 30.0, 0, None, 0, True))
    write_labels(root / "labels" / "all.csv", samples)
    write_classes(root / "classes.txt", classes)
    index_path(root).unlink(missing_ok=True)
    add_entries(root, entries)
    done.write_text(f"{n_videos} {n_classes} {seed}\n")


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 128x160 (HxW), got {text!r}") from None
    return h, w


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0; bad input exits 2)."""
    parser = argparse.ArgumentParser(prog="python -m tools.synthetic", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("out_dir", metavar="DATASET_VIDEOS", help="output folder (<class>/<video>.mp4)")
    parser.add_argument("--classes", type=int, default=DEFAULT_CLASSES,
                        help=f"number of classes, the first K of: {', '.join(CLASS_NAMES)}")
    parser.add_argument("--videos-per-class", type=int, default=DEFAULT_VIDEOS_PER_CLASS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="frames per video")
    parser.add_argument("--size", type=_parse_size, default=DEFAULT_SIZE, metavar="HxW",
                        help="frame size, e.g. 128x160 (odd sizes are encoded yuv444p)")
    parser.add_argument("--fps", type=int, default=DEFAULT_FPS)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--overwrite", action="store_true", help="replace the class folders of an earlier run")
    args = parser.parse_args(argv)
    setup_logging()
    start = time.perf_counter()
    try:
        paths = generate(args.out_dir, args.classes, args.videos_per_class, args.seed, args.frames, args.size,
                         args.fps, args.workers, args.overwrite)
    except (ValueError, OSError) as e:
        die(str(e))
    seconds = time.perf_counter() - start
    size_bytes = sum(p.stat().st_size for p in paths)
    log.info("wrote %d videos (%d classes, %d frames of %dx%d, %s) to %s in %.1f s, %.1f MB",
             len(paths), args.classes, args.frames, args.size[0], args.size[1], pick_codec(), args.out_dir,
             seconds, size_bytes / 1e6)
    return 0


if __name__ == "__main__":
    sys.exit(main())
