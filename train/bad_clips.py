"""What a training run does with videos it cannot read: the options, the record in the run folder and the stop.

``--bad-clips skip`` (the default): the training set replaces such an item by another video drawn from the item's
seed (`data.dataset.VideoDataset`), so the run, and an exact resume of it, stays reproducible. The main process
records every such video once in ``<run>/bad_videos.csv`` (``video,path,problem,epoch``, written atomically by
rank 0) with a warning, and stops the run with one line when more than ``--max-bad-share`` of the training videos
were bad in one epoch (checked after every batch on one process; at the end of the epoch when distributed, where
every rank must stop together). A single bad video never stops a run unless the share is 0: the stop is there for
a store that is failing, and on a dataset of fewer than 1/share videos the share would otherwise mean "none".
``--bad-clips fail``: the first bad clip ends the run with one line naming the video, the frame and the repair
command. Validation never skips.
"""
from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path
from typing import Any

from data.atomic import atomic_write
from data.bad_clips import BAD_CLIP_POLICIES, repair_command
from data.dataset import VideoDataset
from data.integrity import check_video
from train.callbacks import Callback
from train.distributed import all_reduce_max

__all__ = ["BAD_VIDEOS_NAME", "DEFAULT_MAX_BAD_SHARE", "BadClipMonitor", "TooManyBadVideos", "add_bad_clip_arguments",
           "bad_clip_callbacks"]

log = logging.getLogger(__name__)

BAD_VIDEOS_NAME = "bad_videos.csv"
DEFAULT_MAX_BAD_SHARE = 0.001
_FIELDS = ("video", "path", "problem", "epoch")


class TooManyBadVideos(RuntimeError):
    """More than the allowed share of an epoch's training videos could not be read."""


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1], got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1], got {text!r}")
    return value


def add_bad_clip_arguments(group: argparse._ArgumentGroup) -> None:
    """``--bad-clips`` and ``--max-bad-share``."""
    group.add_argument("--bad-clips", choices=BAD_CLIP_POLICIES, default="skip",
                       help="a training clip that cannot be read: skip it (replaced by another video drawn from its "
                            "seed, recorded in MODEL_DIR/bad_videos.csv) or fail with the repair command; "
                            "validation always fails")
    group.add_argument("--max-bad-share", type=_share, default=DEFAULT_MAX_BAD_SHARE, metavar="SHARE",
                       help="with --bad-clips skip: stop when more than this share of an epoch's training videos "
                            "could not be read (one bad video is tolerated unless SHARE is 0)")


class BadClipMonitor(Callback):
    """Records the training set's skipped videos in ``<run>/bad_videos.csv`` and stops a run with too many."""

    def __init__(self, dataset: VideoDataset, model_dir: str | Path, max_share: float) -> None:
        if dataset.bad_video_flags is None:
            raise ValueError("BadClipMonitor needs a training set made with bad_clips='skip'")
        self.dataset = dataset
        self.flags = dataset.bad_video_flags
        self.path = Path(model_dir) / BAD_VIDEOS_NAME
        self.max_share = float(max_share)
        self.rows: list[dict[str, str]] = []
        self.recorded: set[str] = set()

    def _name(self, video: int) -> str:
        sample = self.dataset.samples[video]
        return f"{sample.label}/{sample.video_id}"

    def on_train_begin(self, trainer: Any, logs: dict[str, Any]) -> None:
        # A resumed run keeps what earlier epochs recorded; a fresh one starts a new record.
        keep = trainer.start_epoch
        if keep > 1 and self.path.is_file():
            with self.path.open(newline="", encoding="utf-8") as f:
                self.rows = [r for r in csv.DictReader(f) if r.get("epoch", "").isdigit() and int(r["epoch"]) < keep]
        self.recorded = {r["video"] for r in self.rows}
        if trainer.dist.is_main and (self.rows or self.path.exists()):
            self._write()

    def on_batch_end(self, trainer: Any, batch: int, logs: dict[str, Any]) -> None:
        self._record(trainer, trainer.epoch)
        if not trainer.dist.distributed:  # ranks stop together, so only at the end of the epoch
            self._check(trainer.epoch)

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, Any]) -> None:
        if trainer.dist.distributed:
            self.flags.merge(all_reduce_max(self.flags.tensor, trainer.dist))
        self._record(trainer, epoch)
        self._check(epoch)

    def _record(self, trainer: Any, epoch: int) -> None:
        new = [v for v in self.flags.ever() if self._name(v) not in self.recorded]
        if not new:
            return
        for video in new:
            name = self._name(video)
            self.recorded.add(name)
            if not trainer.dist.is_main:
                continue
            video_dir = self.dataset.video_dirs[video]
            problems = check_video(video_dir, decode=True).problems
            problem = "; ".join(problems) or "could not be read while training (sound when checked again)"
            self.rows.append({"video": name, "path": str(video_dir), "problem": problem, "epoch": str(epoch)})
            log.warning("epoch %d: training video %s cannot be read (%s): its items are replaced by other videos; "
                        "recorded in %s", epoch, name, problem, self.path)
        if trainer.dist.is_main:
            self._write()

    def _write(self) -> None:
        with atomic_write(self.path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=_FIELDS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.rows)

    def limit(self) -> float:
        """The most bad videos an epoch may have: the share of the training set, at least one unless it is 0."""
        allowed = self.max_share * len(self.flags)
        return max(allowed, 1.0) if self.max_share > 0 else allowed

    def _check(self, epoch: int) -> None:
        bad = len(self.flags.in_epoch(epoch))
        total = len(self.flags)
        if bad > self.limit():
            raise TooManyBadVideos(
                f"epoch {epoch}: {bad} of {total} training videos could not be read, more than --max-bad-share "
                f"{self.max_share:g}; they are listed in {self.path}; repair: {repair_command(self.dataset.root)}, "
                "or allow more with --max-bad-share")


def bad_clip_callbacks(args: argparse.Namespace, dataset: VideoDataset) -> list[Callback]:
    """The monitor of a run that skips bad clips (none with ``--bad-clips fail``)."""
    if dataset.bad_video_flags is None:
        return []
    return [BadClipMonitor(dataset, args.model_dir, args.max_bad_share)]
