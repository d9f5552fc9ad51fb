"""Evaluate a trained checkpoint on a split of a dataset: clip@1/5, video@1/5, per-class accuracy, confusion matrix.

    python -m tools.evaluate --checkpoint runs/demo/mict_resnet18/mict_resnet18_best.pth \\
        --dataset demo_data/store --clips-per-video 5
    python -m tools.evaluate --weights r2plus1d_18-91a641e6.pth --network r2plus1d_18 --dataset kinetics_store
    python -m tools.evaluate --weights srtg_r3d_50_best.pth --network srtg_r3d_50 --dataset hacs_store  # SRTG code

Every video contributes `--clips-per-video` evenly spaced clips (the validation sampler), each seen through
`--crops` spatial views: 1 centre crop, or 3 full-height crops (left/centre/right; top/centre/bottom for portrait
video) of frames resized so that their shorter side is the crop size, the SlowFast/torchvision protocol. Clip accuracy counts
each clip on its own; video accuracy averages the softmax over a video's clips first (R(2+1)D paper). The
preprocessing (clip length, frame interval, resize, crop, normalisation) and class list come from the checkpoint;
a checkpoint of the SRTG or MiCT-Net-PyTorch code gets the reference's preprocessing (`train.reference_checkpoints`)
and the class names of `--classes` or of the dataset's classes.txt. `--clip-length`, `--frame-interval` and
`--crop-size` override the preprocessing.
Writes `eval_<split>.json`, `per_class_<split>.csv` and `confusion_<split>.png` to `--out` (default: the
checkpoint's folder).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from data.atomic import atomic_write, atomic_write_text, save_figure_png
from data.bad_clips import worker_error_text
from data.labels import read_classes
from data.views import CROP_CHOICES
from train.console import die, setup_logging
from train.inference import (
    CLASSES_HELP,
    NETWORK_HELP,
    WEIGHTS_HELP,
    add_device_argument,
    add_preprocess_arguments,
    load_model,
    override_preprocess,
    resolve_device,
)
from train.metrics import EvalResult
from train.multiview import view_transform
from train.precision import PRECISIONS, Precision
from train.size_checks import check_dataset_preprocess_fits
from train.trainer import evaluate

log = logging.getLogger(__name__)


def evaluate_checkpoint(checkpoint: str | os.PathLike, dataset: str | os.PathLike, labels: str | None = None,
                        split: str = "val", clips_per_video: int = 1, batch_size: int = 16, workers: int = 0,
                        device: torch.device | str = "cpu", precision: str = "fp32",
                        max_batches: int | None = None, crops: int = 1,
                        network: str | None = None, classes: Sequence[str] | None = None,
                        clip_length: int | None = None, frame_interval: int | None = None,
                        crop_size: int | None = None) -> tuple[EvalResult, list[str]]:
    """Evaluate `checkpoint` on `split` of `dataset`; returns the result and the class names.

    `network`: `checkpoint` is torchvision's Kinetics-400 weights file of that model (``train.pretrained``), or a
    checkpoint of the SRTG or MiCT-Net-PyTorch code holding that network. `classes`: names for a file that
    carries none (default: the dataset's classes.txt). `clip_length`, `frame_interval`, `crop_size` override the
    model's preprocessing.

    Raises `CheckpointError` / `ValueError` / `OSError` with one-line messages (bad checkpoint, dataset, labels).
    """
    from data import VideoDataset, build_loader

    device = resolve_device(device)
    if classes is None and (Path(dataset) / "classes.txt").is_file():
        classes = read_classes(Path(dataset) / "classes.txt")
    loaded = load_model(checkpoint, device, require_classes=True, network=network, classes=classes)
    loaded = override_preprocess(loaded, clip_length, frame_interval, crop_size)
    model, classes, pre = loaded.model, loaded.classes, loaded.preprocess
    transform = view_transform(pre, crops)
    # The checkpoint's class list fixes the label mapping; labels it does not know are an error.
    ds = VideoDataset(dataset, labels, split=split, clip_length=int(pre["clip_length"]),
                      frame_interval=pre["frame_interval"], transform=transform, clips_per_video=clips_per_video,
                      classes=classes, train=False)
    if crop_size is not None:
        check_dataset_preprocess_fits(ds, pre)
    loader = build_loader(ds, batch_size, train=False, workers=workers)
    log.info("evaluating %s (%s) on %s split %r: %d videos x %d clips x %d crops", checkpoint, loaded.network,
             dataset, split, len(ds.samples), clips_per_video, crops)
    result = evaluate(model, loader, len(ds.samples), len(classes), device, Precision(precision, device),
                      max_batches=max_batches, progress=True)
    return result, classes


def plot_confusion(cm: np.ndarray, classes: Sequence[str], path: str | os.PathLike, title: str = "") -> Path:
    """Confusion matrix (rows: true class, columns: predicted), row-normalised colours, counts written in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    n = len(classes)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, np.maximum(rows, 1), dtype=np.float64)
    size = min(4 + 0.45 * n, 40)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    ticks = np.arange(n)
    show_names = n <= 60
    ax.set_xticks(ticks, classes if show_names else [], rotation=90 if n > 8 else 45, ha="right" if n <= 8 else "center")
    ax.set_yticks(ticks, classes if show_names else [])
    ax.set(xlabel="predicted", ylabel="true", title=title or "Confusion matrix (video level)")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    return save_figure_png(fig, path)


def format_report(result: EvalResult, classes: Sequence[str], clips_per_video: int, crops: int = 1) -> str:
    """Summary and per-class table as text (`clips` counts views: clips x crops)."""
    lines = [
        f"clips: {result.clips}  videos: {result.videos}  clips per video: {clips_per_video}"
        + (f" x {crops} crops" if crops > 1 else ""),
        f"clip@1 {result.clip_top1:6.2f}   clip@5 {result.clip_top5:6.2f}   loss {result.loss:.4f}",
        f"video@1 {result.video_top1:6.2f}  video@5 {result.video_top5:6.2f}",
        "per-class video accuracy:",
    ]
    totals = result.confusion.sum(axis=1)
    width = max((len(c) for c in classes), default=5)
    for i, name in enumerate(classes):
        acc = result.per_class[i]
        text = f"{acc:6.2f}" if np.isfinite(acc) else "   n/a"
        lines.append(f"  {name:<{width}}  {text}  ({int(result.confusion[i, i])}/{int(totals[i])})")
    return "\n".join(lines)


def write_outputs(result: EvalResult, classes: Sequence[str], out_dir: str | os.PathLike, split: str,
                  checkpoint: str | os.PathLike, clips_per_video: int, crops: int = 1) -> dict[str, Path]:
    """`eval_<split>.json`, `per_class_<split>.csv`, `confusion_<split>.png` in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"eval_{split}.json", "csv": out / f"per_class_{split}.csv",
             "png": out / f"confusion_{split}.png"}
    summary = {"checkpoint": str(checkpoint), "split": split, "clips_per_video": clips_per_video, "crops": crops,
               **result.as_dict(),
               "per_class": {c: (None if not np.isfinite(a) else float(a)) for c, a in zip(classes, result.per_class)},
               "confusion": result.confusion.tolist(), "classes": list(classes)}
    atomic_write_text(paths["json"], json.dumps(summary, indent=1) + "\n")
    with atomic_write(paths["csv"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class", "accuracy", "correct", "videos"])
        for i, c in enumerate(classes):
            w.writerow([c, f"{result.per_class[i]:.2f}", int(result.confusion[i, i]), int(result.confusion[i].sum())])
    plot_confusion(result.confusion, classes, paths["png"], title=f"{Path(checkpoint).name}: {split}, "
                   f"video@1 {result.video_top1:.1f}%")
    return paths


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="checkpoint written by the trainer")
    src.add_argument("--weights", type=Path, help=WEIGHTS_HELP)
    p.add_argument("--network", default=None, help=NETWORK_HELP)
    p.add_argument("--classes", type=Path, default=None,
                   help=CLASSES_HELP + "; without it, the dataset's classes.txt")
    add_preprocess_arguments(p)
    p.add_argument("--dataset", type=Path, required=True, help="dataset root (jpg/, labels/)")
    p.add_argument("--labels", default=None, help="label CSV (default ROOT/labels/all.csv)")
    p.add_argument("--split", default="val", help="split of the label CSV to evaluate")
    p.add_argument("--clips-per-video", type=int, default=1, help="evenly spaced clips per video (K)")
    p.add_argument("--crops", type=int, choices=CROP_CHOICES, default=1,
                   help="spatial views per clip: 1 centre crop, or 3 full-height crops (softmax averaged over "
                        "clips x crops)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    add_device_argument(p)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the checkpoint's folder)")
    args = p.parse_args(argv)
    if args.clips_per_video < 1 or args.batch_size < 1 or args.workers < 0:
        p.error("--clips-per-video and --batch-size must be >= 1, --workers >= 0")
    if args.network and not args.weights:
        p.error("--network names the architecture of a --weights file (a checkpoint knows its own)")
    args.checkpoint = args.checkpoint or args.weights
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0; bad input exits 2)."""
    args = parse_args(argv)
    setup_logging()
    try:
        if not args.dataset.is_dir():
            raise FileNotFoundError(f"dataset root {args.dataset} does not exist")
        device = resolve_device(args.device)
        names = read_classes(args.classes) if args.classes else None
        result, classes = evaluate_checkpoint(args.checkpoint, args.dataset, args.labels, args.split,
                                              args.clips_per_video, args.batch_size, args.workers, device,
                                              args.precision, crops=args.crops, network=args.network,
                                              classes=names, clip_length=args.clip_length,
                                              frame_interval=args.frame_interval, crop_size=args.crop_size)
        out_dir = args.out or args.checkpoint.parent
        paths = write_outputs(result, classes, out_dir, args.split, args.checkpoint, args.clips_per_video,
                              args.crops)
    except (ValueError, OSError) as e:  # CheckpointError and FrameStoreError are ValueErrors
        die(worker_error_text(e))
    print(format_report(result, classes, args.clips_per_video, args.crops))
    print(f"wrote {paths['json']}, {paths['csv']} and {paths['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
