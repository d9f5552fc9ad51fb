"""Writing a dataset's label files (``labels/<name>.csv``, ``classes.txt``) and checking them against its store."""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from data.labels import SPLITS, LabelError, Sample, read_classes, safe_video_dir, write_classes, write_labels

log = logging.getLogger(__name__)

__all__ = ["video_present", "missing_videos", "write_dataset", "check_and_filter"]


def video_present(root: Path, sample: Sample) -> bool:
    """Whether the frame store holds the video (a ``frames.db`` in its folder)."""
    return (safe_video_dir(root, sample.label, sample.video_id) / "frames.db").is_file()


def missing_videos(root: str | Path, samples: Iterable[Sample]) -> list[Sample]:
    """The samples whose ``<root>/jpg/<label>/<video_id>/frames.db`` does not exist."""
    root = Path(root)
    if not (root / "jpg").is_dir():
        raise LabelError(f"{root}: no frame store (expected {root / 'jpg'}; run tools.convert first)")
    return [s for s in samples if not video_present(root, s)]


def write_dataset(root: str | Path, name: str, samples: list[Sample], classes: list[str]) -> Path:
    """Write ``<root>/labels/<name>.csv`` and ``<root>/classes.txt`` (warning when an existing list differs)."""
    root = Path(root)
    for s in samples:
        safe_video_dir(root, s.label, s.video_id, where=f"{name}.csv video {s.label}/{s.video_id}")
    unknown = sorted({s.label for s in samples} - set(classes))
    if unknown:
        raise LabelError(f"labels {unknown[:5]} are not in the class list")
    class_file = root / "classes.txt"
    if class_file.is_file():
        try:
            old = read_classes(class_file)
        except LabelError:
            old = None
        if old is not None and old != classes:
            log.warning("%s: replacing a different class list (%d classes, now %d)", class_file, len(old),
                        len(classes))
    write_classes(class_file, classes)
    csv_path = root / "labels" / f"{name}.csv"
    write_labels(csv_path, samples)
    counts = Counter(s.split for s in samples)
    log.info("%s: %d videos (%s), %d classes", csv_path, len(samples),
             ", ".join(f"{counts[k]} {k}" for k in SPLITS if counts[k]), len(classes))
    return csv_path


def check_and_filter(root: Path, samples: list[Sample], check: bool, drop: bool) -> tuple[list[Sample], int]:
    """(`samples`, 0) as they are; with `check` also the count of videos the store lacks (logged); with `drop`
    the samples without those videos."""
    if not (check or drop):
        return samples, 0
    missing = missing_videos(root, samples)
    if missing:
        shown = ", ".join(f"{s.label}/{s.video_id}" for s in missing[:10])
        log.warning("%d of %d videos are not in %s/jpg: %s%s", len(missing), len(samples), root, shown,
                    " ..." if len(missing) > 10 else "")
    if drop:
        gone = {(s.label, s.video_id) for s in missing}
        return [s for s in samples if (s.label, s.video_id) not in gone], 0
    return samples, len(missing)
