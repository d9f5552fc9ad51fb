"""HMDB-51: the per-class ``<class>_test_split<N>.txt`` files (``<video>.avi <0|1|2>``) into samples."""
from __future__ import annotations

import re
from pathlib import Path

from data.labels import LabelError, Sample, check_name
from tools.labels.common import text_lines

__all__ = ["hmdb51_samples"]

_HMDB_FILE = re.compile(r"^(?P<label>.+)_test_split(?P<split>\d+)\.txt$")
_HMDB_CODES = {"1": "train", "2": "test", "0": None}


def hmdb51_samples(splits_dir: str | Path, split: int, test_as: str = "val") -> tuple[list[Sample], list[str]]:
    """Samples of official split `split` from the per-class ``<class>_test_split<N>.txt`` files
    (lines ``<video>.avi <0|1|2>``: 1 train, 2 test -> `test_as`, 0 unused)."""
    splits_dir = Path(splits_dir)
    if not splits_dir.is_dir():
        raise LabelError(f"{splits_dir}: annotation folder not found")
    files = {m.group("label"): {} for p in splits_dir.iterdir() if (m := _HMDB_FILE.match(p.name))}
    if not files:
        nested = sorted({p.parent for p in splits_dir.glob("*/*_test_split*.txt")})
        if nested:
            return hmdb51_samples(nested[0], split, test_as)
        raise LabelError(f"{splits_dir}: no '<class>_test_split<N>.txt' files")
    samples: list[Sample] = []
    seen: dict[tuple[str, str], str] = {}
    for label in sorted(files):
        path = splits_dir / f"{label}_test_split{split}.txt"
        check_name(label, "label", str(path))
        for number, text in text_lines(path):
            where = f"{path}:{number}"
            parts = text.split()
            if len(parts) != 2 or parts[1] not in _HMDB_CODES:
                raise LabelError(f"{where}: expected '<video>.avi <0|1|2>', got {text!r}")
            check_name(parts[0], "video file", where)
            split_name = _HMDB_CODES[parts[1]]
            if split_name is None:
                continue
            video_id = check_name(Path(parts[0]).stem, "video id", where)
            key = (label, video_id)
            if key in seen:
                raise LabelError(f"{where}: video {label}/{video_id} already listed at {seen[key]}")
            seen[key] = f"{path.name}:{number}"
            samples.append(Sample(video_id, label, "train" if split_name == "train" else test_as))
    return samples, sorted(files)
