"""Speed/accuracy trade-off of ``tools.predict --frames N``: video@1 and clips/s for a few N on a labelled split.

    python -m tools.bench.frames --checkpoint demo_runs/mict_resnet18/mict_resnet18_best.pth \\
        --dataset demo_data/store --labels demo.csv --split test --frames 2 4 8

Every video of the split is predicted as ``tools.predict`` does (``--clips`` evenly spaced clips, softmax
averaged) with N frames per clip spread over the span of the model's clip; the table gives video top-1 accuracy
and end-to-end clips/s (decode + transform + forward, the predictor's own timing summed over the videos).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from tqdm import tqdm

from data.labels import read_labels, safe_video_dir
from tools.inference.video_source import open_source
from tools.predict import Predictor
from train.console import add_process_options, die, start_process
from train.inference import add_device_argument, load_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FramesRow:
    """One N of the sweep."""

    frames: int
    frame_interval: int
    videos: int
    video_top1: float
    clips_per_s: float


def sweep(checkpoint: str, dataset: str, frames: Sequence[int], labels: str | None = None, split: str = "test",
          clips: int = 1, device: str = "cpu", network: str | None = None, progress: bool = True) -> list[FramesRow]:
    """Predict every video of `split` once per N in `frames`; one row per N."""
    from pathlib import Path

    loaded = load_model(checkpoint, device, network=network)
    root = Path(dataset)
    csv = Path(labels) if labels and Path(labels).is_file() else root / "labels" / (labels or "all.csv")
    samples = [s for s in read_labels(csv) if split in (None, "all") or s.split == split]
    if not samples:
        raise ValueError(f"{csv}: no videos in split {split!r}")
    index = {c: i for i, c in enumerate(loaded.classes)}
    rows = []
    for n in frames:
        predictor = Predictor(loaded, frames=n)
        correct, clip_count, seconds = 0, 0, 0.0
        for s in tqdm(samples, desc=f"{n} frames", unit="video", disable=not progress):
            with open_source(safe_video_dir(root, s.label, s.video_id), predictor.transform.min_short_side) as src:
                result = predictor.predict(src, clips=clips, topk=1)
            correct += int(result["top"][0]["index"] == index.get(s.label, -1))
            clip_count += clips
            seconds += clips / result["clips_per_s"] if result["clips_per_s"] else 0.0
        rows.append(FramesRow(n, predictor.frame_interval, len(samples), 100.0 * correct / len(samples),
                              clip_count / seconds if seconds > 0 else float("nan")))
        log.info("%s", rows[-1])
    return rows


def format_table(rows: Sequence[FramesRow]) -> str:
    """Markdown table of a sweep (speed also relative to the first row)."""
    base = rows[0].clips_per_s if rows else float("nan")
    lines = ["| frames per clip | frame interval | videos | video@1 (%) | clips/s | speed vs first row |",
             "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.frames} | {r.frame_interval} | {r.videos} | {r.video_top1:.1f} | {r.clips_per_s:.1f} | "
              f"{r.clips_per_s / base:.2f}x |" for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0; bad input exits 2)."""
    p = argparse.ArgumentParser(prog="python -m tools.bench.frames", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint")
    src.add_argument("--weights", help="torchvision Kinetics-400 weights file")
    p.add_argument("--network", default=None, help="architecture of --weights")
    p.add_argument("--dataset", required=True, help="dataset root (jpg/, labels/)")
    p.add_argument("--labels", default=None, help="label CSV (path or name under <root>/labels/)")
    p.add_argument("--split", default="test")
    p.add_argument("--frames", type=int, nargs="+", required=True, help="frames per clip to compare")
    p.add_argument("--clips", type=int, default=1, help="clips per video")
    p.add_argument("--json", action="store_true")
    add_device_argument(p, default="cpu")
    add_process_options(p)
    args = p.parse_args(argv)
    start_process(args)
    if min(args.frames) < 1 or args.clips < 1:
        die("--frames and --clips must be >= 1")
    try:
        rows = sweep(args.checkpoint or args.weights, args.dataset, args.frames, args.labels, args.split,
                     args.clips, args.device, args.network)
    except (ValueError, OSError) as e:
        die(str(e))
    print(json.dumps([asdict(r) for r in rows], indent=1) if args.json else format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
