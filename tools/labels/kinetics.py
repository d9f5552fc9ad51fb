"""Kinetics-200/400/600/700: the official csv files (``label,youtube_id,time_start,time_end,split[,is_cc]``).

Video id ``<youtube_id>_<time_start:06d>_<time_end:06d>``; labels are kept verbatim as folder names by default,
or mapped by `data.labels.safe_label` (``underscore``). Rows without a label (an unlabelled test csv) are skipped
with a warning.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from data.labels import LabelError, Sample, check_name, classes_of, safe_label, segment_id
from tools.labels.common import csv_rows, text_lines

log = logging.getLogger(__name__)

__all__ = ["KINETICS_SPLITS", "kinetics_samples", "read_id_list"]

KINETICS_SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
                   "validation": "val", "test": "test", "testing": "test"}


def kinetics_samples(csv_paths: Sequence[str | Path], label_names: str = "keep",
                     ids: set[str] | None = None) -> tuple[list[Sample], list[str]]:
    """Samples of the official Kinetics csv files (``label,youtube_id,time_start,time_end,split[,is_cc]``; the
    test csv may lack ``label``). Unlabelled rows are skipped with a warning; `ids` keeps only those youtube ids
    (e.g. the Mini-Kinetics-200 lists); a repeated clip keeps its first row."""
    if label_names not in ("keep", "underscore"):
        raise ValueError(f"label_names must be 'keep' or 'underscore', got {label_names!r}")
    samples: list[Sample] = []
    seen: dict[str, tuple[str, str]] = {}
    unlabelled = repeated = 0
    renamed: dict[str, str] = {}
    for csv_path in csv_paths:
        rows = csv_rows(Path(csv_path), ("youtube_id", "time_start", "time_end", "split"),
                        "label,youtube_id,time_start,time_end,split[,is_cc]")
        for where, row in rows:
            youtube_id = row["youtube_id"].strip()
            check_name(youtube_id, "youtube id", where)
            try:
                start, end = float(row["time_start"]), float(row["time_end"])
            except ValueError:
                raise LabelError(f"{where}: time_start/time_end {row['time_start']!r}, {row['time_end']!r} "
                                 "are not numbers") from None
            if not 0 <= start < end:
                raise LabelError(f"{where}: need 0 <= time_start < time_end, got {start}, {end}")
            split = KINETICS_SPLITS.get(row["split"].strip().lower())
            if split is None:
                raise LabelError(f"{where}: unknown split {row['split']!r}")
            if ids is not None and youtube_id not in ids:
                continue
            raw = (row.get("label") or "").strip()
            if not raw:
                unlabelled += 1
                continue
            label = raw if label_names == "keep" else safe_label(raw)
            check_name(label, "label", where)
            if renamed.setdefault(label, raw) != raw:
                raise LabelError(f"{where}: labels {raw!r} and {renamed[label]!r} both become {label!r}")
            video_id = segment_id(youtube_id, start, end)
            if video_id in seen:
                repeated += 1
                if seen[video_id][0] != label:
                    log.warning("%s: clip %s is labelled %r here and %r at %s; keeping the first",
                                where, video_id, label, *seen[video_id])
                continue
            seen[video_id] = (label, where)
            samples.append(Sample(video_id, label, split, start, end))
    if unlabelled:
        log.warning("skipped %d rows without a label (no class folder to put them in)", unlabelled)
    if repeated:
        log.warning("skipped %d repeated clips", repeated)
    if not samples:
        raise LabelError(f"{', '.join(map(str, csv_paths))}: no labelled clips")
    return samples, classes_of(samples)


def read_id_list(path: str | Path) -> set[str]:
    """One youtube id per line (the first whitespace-separated field; a csv row's first column also works)."""
    return {text.split()[0].split(",")[0] for _, text in text_lines(Path(path))}
