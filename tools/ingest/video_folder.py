"""Folder datasets: scanning ``<class>/<video>`` folders and the stable train/val hold-out.

Two layouts are scanned the same way: raw videos ``<folder>/<class>/<video file>`` (video id = file name without
extension; files with other extensions are ignored) and a converted store ``<root>/jpg/<class>/<video_id>/``.
Hidden entries (a leading ``.``) are ignored in both.

The hold-out picks, per class, the samples (or whole groups of samples, e.g. UCF-101's ``_gNN_`` clips cut from
one long video) ranked first by a hash of (seed, class, group): the choice does not depend on file order, worker
count or platform, and the same seed picks the same videos in the raw folder and in its converted store.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

from data.labels import LabelError, Sample

__all__ = ["VIDEO_EXTENSIONS", "FoundVideo", "scan_folder", "hold_out_val", "assign_val_split"]

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv"})


class FoundVideo(NamedTuple):
    """One video of a scanned folder: its class (the folder name), video id and path."""

    label: str
    video_id: str
    path: Path


def file_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be read as a video file (None when it is a regular file).

    Only regular files are videos: reading a FIFO blocks until some writer appears (forever, usually), and a
    device or socket is never a video. A symlink is followed; one whose target is gone is named as such.
    """
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            return f"dangling symbolic link (its target {os.readlink(path)} does not exist)"
        return "no such file"
    except OSError as e:
        return f"cannot access ({e.strerror or e})"
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    kind = next((name for test, name in kinds if test(mode)), "a special file")
    return f"not a regular file ({kind}); only regular files are read as videos"


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def scan_folder(top: str | os.PathLike, folders: bool = False, extensions: Iterable[str] = VIDEO_EXTENSIONS,
                ) -> tuple[list[FoundVideo], list[tuple[str, str]]]:
    """Every video of ``<top>/<class>/``, sorted by class then entry name; plus ``(path, reason)`` problems.

    `folders` False: video files with one of `extensions` (case-insensitive), video id = stem; True: every
    sub-folder (a converted store's ``jpg/``), video id = folder name. A second entry with the same video id in a
    class is a problem, not a video.
    """
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    found: list[FoundVideo] = []
    problems: list[tuple[str, str]] = []
    for class_dir in sorted(p for p in Path(top).iterdir() if p.is_dir() and _visible(p)):
        seen: dict[str, str] = {}
        for entry in sorted(class_dir.iterdir()):
            if not _visible(entry):
                continue
            if folders:
                if not entry.is_dir():
                    continue
                video_id = entry.name
            elif entry.is_dir() or entry.suffix.lower() not in exts:
                continue
            else:
                video_id = entry.stem
            if video_id in seen:
                problems.append((str(entry), f"video id {video_id!r} also used by {seen[video_id]}"))
                continue
            seen[video_id] = entry.name
            found.append(FoundVideo(class_dir.name, video_id, entry))
    return found, problems


def _stable_rank(seed: int, *parts: str) -> bytes:
    return hashlib.sha1("\0".join([str(seed), *parts]).encode()).digest()


def hold_out_val(samples: Sequence[Sample], fraction: float, seed: int = 0,
                 group_of: Callable[[Sample], str] | None = None) -> list[Sample]:
    """Move ``round(fraction * n)`` (at least one) of every class's ``n`` train samples to ``val``, whole groups
    at a time and never a class's last training group; other samples and the order stay as they are.

    `group_of` names a sample's group (default: its video id, i.e. no grouping). Raises `LabelError` unless
    ``0 <= fraction < 1``.
    """
    if not 0 <= fraction < 1:
        raise LabelError(f"--val-fraction must be in [0, 1), got {fraction}")
    if fraction == 0:
        return list(samples)
    group_of = group_of or (lambda s: s.video_id)
    by_class: dict[str, dict[str, list[Sample]]] = {}
    for s in samples:
        if s.split == "train":
            by_class.setdefault(s.label, {}).setdefault(group_of(s), []).append(s)
    to_val: set[tuple[str, str]] = set()
    for label, groups in by_class.items():
        total = sum(len(v) for v in groups.values())
        target = max(1, round(fraction * total))
        taken = 0
        for group in sorted(groups, key=lambda g: _stable_rank(seed, label, g)):
            if taken >= target:
                break
            if taken + len(groups[group]) >= total:
                continue
            to_val.update((label, s.video_id) for s in groups[group])
            taken += len(groups[group])
    return [replace(s, split="val") if s.split == "train" and (s.label, s.video_id) in to_val else s
            for s in samples]


def assign_val_split(samples: Iterable[Sample], val_fraction: float, seed: int = 0) -> list[Sample]:
    """Every sample as ``train`` except those `hold_out_val` moves to ``val``, sorted by (label, video_id):
    the split of a folder dataset, independent of the input order."""
    ordered = sorted((replace(s, split="train") for s in samples), key=lambda s: (s.label, s.video_id))
    return hold_out_val(ordered, val_fraction, seed)
