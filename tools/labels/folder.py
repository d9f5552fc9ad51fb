"""A folder dataset: its samples are the ``<class>/<video>`` entries of a video folder or a converted store."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from data.labels import LabelError, Sample, check_name
from tools.ingest.video_folder import VIDEO_EXTENSIONS, assign_val_split, scan_folder

__all__ = ["folder_samples"]


def folder_samples(path: str | os.PathLike, val_fraction: float = 0.0, seed: int = 0,
                   extensions: Iterable[str] = VIDEO_EXTENSIONS) -> list[Sample]:
    """Samples of a folder dataset, sorted by (label, video_id), split by `assign_val_split`.

    `path` is either a video folder ``<path>/<class>/<video file>`` or a dataset root with
    ``<path>/jpg/<class>/<video_id>/``. Raises `LabelError` if no video is found or two files of a class share
    a stem.
    """
    path = Path(path)
    if not path.is_dir():
        raise LabelError(f"{path}: not a folder")
    from_store = (path / "jpg").is_dir()
    top = path / "jpg" if from_store else path
    found, problems = scan_folder(top, folders=from_store, extensions=extensions)
    if problems:
        raise LabelError(f"{problems[0][0]}: {problems[0][1]}")
    for video in found:
        check_name(video.label, "label", str(video.path))
        check_name(video.video_id, "video id", str(video.path))
    if not found:
        exts = sorted({e.lower() if e.startswith(".") else "." + e.lower() for e in extensions})
        kind = "<class>/<video_id>/ folders" if from_store else f"<class>/<video> files ({', '.join(exts)})"
        raise LabelError(f"{top}: no videos found (expected {kind})")
    return assign_val_split([Sample(v.video_id, v.label, "train") for v in found], val_fraction, seed)
