"""Pooled penultimate features of every video of a dataset split, saved as one ``.npz``.

    python -m tools.extract_features --checkpoint runs/r3d_18_best.pth --dataset data/ucf101 --split val \\
        --out feats_val.npz --clips-per-video 5 --per-clip
    python -m tools.extract_features --weights r2plus1d_18-91a641e6.pth --dataset DATA --out f.npz --plot map.png
    python -m tools.extract_features --weights srtg_r3d_50_best.pth --network srtg_r3d_50 --dataset DATA --out f.npz

Each video gives ``clips_per_video`` evenly spaced clips (the validation sampler and transform, with the clip
length, interval, resize and crop of the checkpoint); ``model.forward_features`` pools each clip to a
``num_features`` vector and the video's feature is the mean over its clips.

Arrays in the file:
- ``features`` ``(V, F)`` float32, ``labels`` ``(V,)`` int64 (indices into ``classes``), ``video_ids`` ``(V,)``
  and ``label_names`` ``(V,)`` strings, ``classes`` ``(C,)`` the dataset's class list;
- with ``--per-clip``: ``clip_features`` ``(V*K, F)``, ``clip_video_index`` and ``clip_index`` ``(V*K,)``;
- ``network``, ``checkpoint``, ``split`` and ``preprocess`` (JSON) describe where the features came from.

``--plot map.png`` also draws the feature-space map (`tools.inference.feature_map`): the features projected to 2-D, each
video shown as a thumbnail of its middle frame framed in its label's colour.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data.atomic import atomic_write
from data.bad_clips import worker_error_text
from data.dataset import VideoDataset
from data.labels import read_classes
from data.loader import build_loader
from data.views import CROP_CHOICES
from train.console import add_process_options, die, start_process
from train.inference import (
    CLASSES_HELP,
    NETWORK_HELP,
    WEIGHTS_HELP,
    LoadedModel,
    add_device_argument,
    add_preprocess_arguments,
    build_val_transform,
    load_model,
    override_preprocess,
)
from train.multiview import forward_views, view_transform
from train.size_checks import check_dataset_preprocess_fits

log = logging.getLogger(__name__)


@torch.inference_mode()
def extract_features(loaded: LoadedModel, dataset_root: str | os.PathLike, split: str | None = "val",
                     labels_csv: str | None = None, clips_per_video: int = 1, batch_size: int = 8,
                     workers: int = 0, progress: bool = True, crops: int = 1,
                     limit_upscale: bool = False) -> dict[str, np.ndarray]:
    """Features of every video (and clip) of `split`; returns the arrays written by `save_features`.

    With `crops` 3 a clip's feature is the mean over its three full-height crops (`data.views`). `limit_upscale`
    refuses a preprocessing that upscales the stored frames more than the trainer allows (a ``--crop-size``).
    """
    pre = loaded.preprocess
    transform = view_transform(pre, crops) if crops > 1 else build_val_transform(pre)
    ds = VideoDataset(dataset_root, labels_csv=labels_csv, split=split, clip_length=int(pre["clip_length"]),
                      frame_interval=pre["frame_interval"], transform=transform, clips_per_video=clips_per_video,
                      train=False)
    if limit_upscale:
        check_dataset_preprocess_fits(ds, pre)
    loader = build_loader(ds, batch_size=batch_size, train=False, workers=workers)
    model, device = loaded.model, loaded.device
    n_videos, k = len(ds.samples), clips_per_video
    clip_feats = np.zeros((n_videos * k, model.num_features), dtype=np.float32)
    seen = np.zeros(n_videos * k, dtype=bool)
    pos = 0
    tic = time.perf_counter()
    for clips, _, video_index in tqdm(loader, desc="features", unit="batch", disable=not progress):
        feats = forward_views(lambda v: model.forward_features(v).float(),
                              clips.to(device, non_blocking=True)).cpu().numpy()
        # Evaluation items are ordered: item i is clip i % K of video i // K, and the loader does not shuffle.
        expected = np.arange(pos, pos + len(feats)) // k
        if not np.array_equal(video_index.numpy(), expected):
            raise RuntimeError("the loader did not return clips in dataset order")
        clip_feats[pos:pos + len(feats)] = feats
        seen[pos:pos + len(feats)] = True
        pos += len(feats)
    if not seen.all():
        raise RuntimeError(f"only {int(seen.sum())} of {seen.size} clips came back from the loader")
    elapsed = time.perf_counter() - tic
    log.info("%d clips of %d videos in %.1f s (%.1f clips/s)", pos, n_videos, elapsed, pos / max(elapsed, 1e-9))
    return {
        "features": clip_feats.reshape(n_videos, k, -1).mean(axis=1),
        "labels": np.asarray(ds.labels, dtype=np.int64),
        "video_ids": np.asarray([s.video_id for s in ds.samples]),
        "label_names": np.asarray([s.label for s in ds.samples]),
        "classes": np.asarray(ds.classes),
        "clip_features": clip_feats,
        "clip_video_index": np.repeat(np.arange(n_videos, dtype=np.int64), k),
        "clip_index": np.tile(np.arange(k, dtype=np.int64), n_videos),
    }


def save_features(path: str | os.PathLike, arrays: dict[str, np.ndarray], per_clip: bool,
                  info: dict[str, str]) -> str:
    """Write `arrays` (without the per-clip ones unless `per_clip`) and the `info` strings to a ``.npz``."""
    keep = {k: v for k, v in arrays.items() if per_clip or not k.startswith("clip_")}
    keep.update({k: np.asarray(v) for k, v in info.items()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:  # a file object: np.savez adds no ".npz" to its name
        np.savez(f, **keep)
    return str(path)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.extract_features", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="trained checkpoint (*.pth)")
    src.add_argument("--weights", help=WEIGHTS_HELP)
    p.add_argument("--network", default=None, help=NETWORK_HELP)
    p.add_argument("--classes", default=None, help=CLASSES_HELP)
    add_preprocess_arguments(p)
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="also draw the videos' features in 2-D with a thumbnail of each video (a PNG)")
    p.add_argument("--dataset", required=True, help="dataset root (jpg/, labels/, classes.txt)")
    p.add_argument("--labels", default=None, help="label CSV (path or name under <root>/labels/; default all.csv)")
    p.add_argument("--split", default="val", help="split to extract: train, val, test or 'all'")
    p.add_argument("--out", required=True, help="output .npz file")
    p.add_argument("--per-clip", action="store_true", help="also store the feature of every clip")
    p.add_argument("--clips-per-video", type=int, default=1, help="evenly spaced clips per video (K)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--crops", type=int, choices=CROP_CHOICES, default=1,
                   help="spatial views per clip: 1 centre crop or 3 full-height crops, features averaged")
    add_device_argument(p)
    add_process_options(p)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0; bad input exits 2)."""
    args = parse_args(argv)
    start_process(args)
    if args.clips_per_video < 1 or args.batch_size < 1 or args.workers < 0:
        die("--clips-per-video and --batch-size must be >= 1, --workers >= 0")
    if args.network and not args.weights:
        die("--network names the architecture of a --weights file (a checkpoint knows its own)")
    args.checkpoint = args.checkpoint or args.weights
    try:
        names = read_classes(args.classes) if args.classes else None
        loaded = load_model(args.checkpoint, args.device, network=args.network, classes=names)
        loaded = override_preprocess(loaded, args.clip_length, args.frame_interval, args.crop_size)
    except ValueError as e:  # CheckpointError, a bad --classes file or override, or a --device that is not there
        die(str(e))
    split = None if args.split == "all" else args.split
    try:
        arrays = extract_features(loaded, args.dataset, split=split, labels_csv=args.labels,
                                  clips_per_video=args.clips_per_video, batch_size=args.batch_size,
                                  workers=args.workers, crops=args.crops, limit_upscale=args.crop_size is not None)
    except (ValueError, OSError) as e:  # missing root / labels / videos, corrupt databases
        die(worker_error_text(e))
    info = {"network": loaded.network, "checkpoint": os.path.abspath(args.checkpoint), "split": args.split,
            "preprocess": json.dumps(loaded.preprocess)}
    out = save_features(args.out, arrays, args.per_clip, info)
    f = arrays["features"]
    print(f"{out}: features {f.shape[0]} videos x {f.shape[1]}"
          + (f", clip_features {arrays['clip_features'].shape[0]} clips" if args.per_clip else "")
          + f", {len(arrays['classes'])} classes, split {args.split}")
    if args.plot:
        from tools.inference.feature_map import plot_feature_map

        try:
            summary = plot_feature_map(arrays, args.dataset, args.plot, title=f"{loaded.network}: {args.split}")
        except (ValueError, OSError) as e:
            die(str(e))
        print(f"{summary.path}: {summary.videos} videos in 2-D ({summary.method}"
              f"{f', {summary.explained:.1%} of the variance' if summary.explained is not None else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
