"""Moments in Time: header-less ``filename,label,n_positive,n_negative`` rows of ``trainingSet.csv`` (train) and
``validationSet.csv`` (val); the class is the file's folder and must equal the label column; video id = file name
without extension; class order follows ``moments_categories.txt``.
"""
from __future__ import annotations

import logging
from pathlib import Path

from data.labels import LabelError, Sample, check_name
from tools.labels.common import find_file, plain_csv_rows

log = logging.getLogger(__name__)

__all__ = ["read_moments_categories", "moments_samples"]


def read_moments_categories(path: Path) -> list[str]:
    """``moments_categories.txt`` (``category,index`` lines) -> categories in index order (indices 0..N-1)."""
    by_index: dict[int, str] = {}
    seen: dict[str, int] = {}
    for number, where, row in plain_csv_rows(path):
        if len(row) != 2 or not row[1].strip().isdigit():
            raise LabelError(f"{where}: expected 'category,index', got {','.join(row)!r}")
        name, index = check_name(row[0].strip(), "class", where), int(row[1])
        if name in seen:
            raise LabelError(f"{where}: category {name!r} listed twice (line {seen[name]})")
        if index in by_index:
            raise LabelError(f"{where}: index {index} already used by {by_index[index]!r}")
        seen[name], by_index[index] = number, name
    if not by_index:
        raise LabelError(f"{path}: no categories")
    if sorted(by_index) != list(range(len(by_index))):
        raise LabelError(f"{path}: category indices are not 0..{len(by_index) - 1}")
    return [by_index[i] for i in range(len(by_index))]


def moments_samples(annotations: str | Path) -> tuple[list[Sample], list[str]]:
    """Samples of ``trainingSet.csv`` (train) and ``validationSet.csv`` (val) in the folder `annotations`."""
    annotations = Path(annotations)
    classes = read_moments_categories(find_file(annotations, "moments_categories.txt"))
    known = set(classes)
    samples: list[Sample] = []
    for name, split in (("trainingSet.csv", "train"), ("validationSet.csv", "val")):
        path = find_file(annotations, name)
        seen: dict[tuple[str, str], int] = {}
        for number, where, row in plain_csv_rows(path):
            if number == 1 and row[0].strip().lower() in ("filename", "file", "video"):
                log.info("%s: skipping a header line (the official files have none)", where)
                continue
            if len(row) < 2:
                raise LabelError(f"{where}: expected 'filename,label,n_positive,n_negative', got {row!r}")
            parts = row[0].strip().replace("\\", "/").split("/")
            if len(parts) != 2:
                raise LabelError(f"{where}: expected '<class>/<video file>', got {row[0]!r}")
            label = check_name(parts[0], "class", where)
            video_id = check_name(Path(parts[1]).stem, "video id", where)
            if row[1].strip() != label:
                raise LabelError(f"{where}: label column {row[1]!r} differs from the folder {label!r}")
            if label not in known:
                raise LabelError(f"{where}: class {label!r} is not in moments_categories.txt")
            if (label, video_id) in seen:
                raise LabelError(f"{where}: video {label}/{video_id} already listed at line "
                                 f"{seen[(label, video_id)]}")
            seen[(label, video_id)] = number
            samples.append(Sample(video_id, label, split))
    return samples, classes
