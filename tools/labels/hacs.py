"""HACS clips: ``HACS_clips_v1.1.1.csv`` (``classname,youtube_id,subset,start,end,label``) into samples.

Positive clips only (``label`` 1; negatives are counted and skipped); video id
``<youtube_id>_<int(start):06d>_<int(end):06d>`` with the clip's times. Two different clips of one video that
share those integer seconds get ``_2``, ``_3``, ... (ordered by exact start, end) and a warning naming both rows:
never silently merged. An exact repeat of a row is skipped with a warning. HACS has no class index file: the
classes are the sorted class names.
"""
from __future__ import annotations

import logging
from pathlib import Path

from data.labels import LabelError, Sample, check_name, segment_id
from tools.labels.common import csv_rows, parse_time

log = logging.getLogger(__name__)

__all__ = ["HACS_SUBSETS", "hacs_samples"]

HACS_SUBSETS = {"training": "train", "train": "train", "validation": "val", "val": "val", "testing": "test",
                "test": "test"}


def hacs_samples(csv_path: str | Path) -> tuple[list[Sample], list[str]]:
    """Positive clips of ``HACS_clips_v1.1.1.csv`` (``classname,youtube_id,subset,start,end,label``)."""
    path = Path(csv_path)
    rows: list[tuple[str, str, str, float, float, str]] = []  # label, youtube id, split, start, end, where
    negatives = 0
    expected = ("classname", "youtube_id", "subset", "start", "end", "label")
    for where, row in csv_rows(path, expected, ",".join(expected)):
        flag = row["label"].strip()
        if flag not in ("1", "-1", "1.0", "-1.0"):
            raise LabelError(f"{where}: label {flag!r} is neither 1 (positive) nor -1 (negative)")
        if flag.startswith("-"):
            negatives += 1
            continue
        split = HACS_SUBSETS.get(row["subset"].strip().lower())
        if split is None:
            raise LabelError(f"{where}: unknown subset {row['subset']!r} (training, validation or testing)")
        youtube_id = check_name(row["youtube_id"].strip(), "youtube id", where)
        label = check_name(row["classname"].strip(), "class", where)
        start, end = parse_time(row["start"], "start", where), parse_time(row["end"], "end", where)
        if not start < end:
            raise LabelError(f"{where}: need start < end, got {start}, {end}")
        rows.append((label, youtube_id, split, start, end, where))
    if negatives:
        log.info("%s: skipped %d negative clips (label -1)", path, negatives)
    if not rows:
        raise LabelError(f"{path}: no positive clips")
    return _unique_hacs_ids(rows), sorted({r[0] for r in rows})


def _unique_hacs_ids(rows: list[tuple[str, str, str, float, float, str]]) -> list[Sample]:
    """Samples with ids unique per video: integer-second collisions of different clips get ``_2``, ``_3``, ..."""
    groups: dict[str, list[tuple[str, str, str, float, float, str]]] = {}
    for r in rows:
        groups.setdefault(segment_id(r[1], r[3], r[4]), []).append(r)
    id_of: dict[str, str] = {}  # row location -> id
    repeats = 0
    for base, members in groups.items():
        clips: dict[tuple[float, float], str] = {}  # exact times -> id
        for _, _, _, start, end, where in sorted(members, key=lambda r: (r[3], r[4])):
            key = (start, end)
            if key not in clips:
                clips[key] = base if not clips else f"{base}_{len(clips) + 1}"
                if len(clips) > 1:
                    first = next(m for m in members if (m[3], m[4]) == next(iter(clips)))
                    log.warning("%s: clip %.3f-%.3f s shares the id %s with %s (%.3f-%.3f s); named %s",
                                where, start, end, base, first[5], first[3], first[4], clips[key])
            id_of[where] = clips[key]
    samples: list[Sample] = []
    seen: dict[tuple[str, str], str] = {}
    for label, _, split, start, end, where in rows:
        video_id = id_of[where]
        if (label, video_id) in seen:
            repeats += 1
            log.warning("%s: clip %s/%s repeats %s; skipped", where, label, video_id, seen[(label, video_id)])
            continue
        seen[(label, video_id)] = where
        samples.append(Sample(video_id, label, split, start, end))
    if repeats:
        log.warning("skipped %d repeated clips", repeats)
    return samples
