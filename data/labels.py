"""Label files of a dataset: the label CSV, ``classes.txt`` and the frame-store path of a video.

A dataset root looks like::

    <root>/jpg/<label>/<video_id>/frames.db
    <root>/labels/<name>.csv        # label,video_id,time_start,time_end,split
    <root>/classes.txt              # one class per line, sorted; class index = line position (0-based)

Labels and video ids are used verbatim as folder names (Kinetics names with spaces, parentheses and
apostrophes are fine on every common filesystem); only names that could leave ``<root>/jpg`` or that no
filesystem accepts (path separators, ``.``/``..``, NUL, empty) are rejected.
"""
from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from data.atomic import atomic_write, atomic_write_text
from data.rank_logging import SAME_ON_EVERY_RANK

log = logging.getLogger(__name__)

COLUMNS = ("label", "video_id", "time_start", "time_end", "split")
SPLITS = ("train", "val", "test")


class LabelError(ValueError):
    """A label file, class list or video id is malformed; the message names the file (and line)."""


@dataclass(frozen=True)
class Sample:
    """One labelled video (or a trimmed part of a source video) of a dataset."""

    video_id: str
    label: str
    split: str
    time_start: float | None = None
    time_end: float | None = None


def check_name(name: str, what: str, where: str = "") -> str:
    """Return `name` if it can be one path component under the root, else raise `LabelError`.

    `what` ("label" or "video id") and `where` ("file.csv:12") only make the message precise.
    """
    prefix = f"{where}: " if where else ""
    if not name or not name.strip():
        raise LabelError(f"{prefix}empty {what}")
    if any(c in name for c in "\n\r"):
        raise LabelError(f"{prefix}{what} {name!r} contains a line break")
    if name in (".", "..") or "/" in name or "\\" in name or "\0" in name or os.path.isabs(name):
        raise LabelError(f"{prefix}{what} {name!r} is not a plain folder name (it would escape the dataset root)")
    if name != name.strip():
        raise LabelError(f"{prefix}{what} {name!r} has leading or trailing spaces")
    return name


def safe_video_dir(root: str | os.PathLike, label: str, video_id: str, where: str = "") -> Path:
    """Path ``<root>/jpg/<label>/<video_id>`` after checking that neither part leaves the root.

    Raises `LabelError` (a `ValueError`) naming `where` (e.g. ``labels/all.csv:7``) for ``..``, absolute
    paths, path separators or empty names.
    """
    check_name(label, "label", where)
    check_name(video_id, "video id", where)
    base = Path(root) / "jpg"
    path = base / label / video_id
    # Belt and braces: the component checks above already exclude every escape we know of.
    if os.path.commonpath([os.path.abspath(base), os.path.abspath(path)]) != os.path.abspath(base):
        raise LabelError(f"{where + ': ' if where else ''}video {label}/{video_id} escapes {base}")
    return path


# A clip id that carries its times: <source id>_<start:06d>_<end:06d>[_<n>] (n: made unique by a label builder).
SEGMENT_ID = re.compile(r"^(?P<source>.+)_(?P<start>\d{6})_(?P<end>\d{6})(?:_(?P<n>\d+))?$")


def segment_id(source_id: str, start: float, end: float) -> str:
    """The id of the clip ``[start, end)`` s of a source video: ``<source_id>_<int(start):06d>_<int(end):06d>``
    (the name the Kinetics download scripts give a clip; SRTG's HACS ids follow it)."""
    return f"{source_id}_{int(start):06d}_{int(end):06d}"


def safe_label(label: str) -> str:
    """``underscore`` naming: each run of characters other than [A-Za-z0-9_-] becomes one ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", label).strip("_")


def _parse_time(text: str, column: str, where: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise LabelError(f"{where}: {column} {text!r} is not a number") from None
    if value != value or value < 0:  # NaN or negative
        raise LabelError(f"{where}: {column} {text!r} must be a non-negative number")
    return value


def _format_time(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def read_labels(csv_path: str | os.PathLike) -> list[Sample]:
    """Read a label CSV (header ``label,video_id,time_start,time_end,split``; times may be empty).

    Every row is checked (known split, safe label and video id, numeric times); errors name ``file:line``.
    A UTF-8 byte-order mark is accepted. Duplicate rows and videos in two splits are warned about (once).
    """
    path = Path(csv_path)
    if not path.is_file():
        raise LabelError(f"{path}: label file not found")
    try:
        samples = _read_label_rows(path)
    except UnicodeDecodeError as e:
        raise LabelError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); save it as "
                         "UTF-8") from None
    _warn_duplicates_and_overlap(path, samples)
    return samples


# Label files already checked for duplicates in this process: (path, size, mtime) -> warned once.
_CHECKED: set[tuple[str, int, int]] = set()


def _warn_duplicates_and_overlap(path: Path, samples: list[Sample]) -> None:
    """Warn (once per file version) about repeated rows and videos in more than one split."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _CHECKED:
        return
    _CHECKED.add(key)
    seen: set[Sample] = set()
    duplicates = [s for s in samples if s in seen or seen.add(s)]
    if duplicates:
        log.warning("%s: %d duplicate row(s), e.g. %s,%s (split %s); each copy is sampled again", path,
                    len(duplicates), duplicates[0].label, duplicates[0].video_id, duplicates[0].split,
                    extra=SAME_ON_EVERY_RANK)
    splits: dict[str, set[str]] = {}
    for s in samples:
        splits.setdefault(s.video_id, set()).add(s.split)
    shared = sorted(v for v, names in splits.items() if len(names) > 1)
    if shared:
        log.warning("%s: %d video(s) appear in more than one split, e.g. %s in %s: an evaluation on them is "
                    "contaminated by training", path, len(shared), shared[0], " and ".join(sorted(splits[shared[0]])),
                    extra=SAME_ON_EVERY_RANK)


def _read_label_rows(path: Path) -> list[Sample]:
    samples: list[Sample] = []
    # utf-8-sig: spreadsheet programs write a byte-order mark, which would otherwise be part of the first column.
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in ("label", "video_id", "split") if c not in header]
        if missing:
            hint = " (an official Kinetics csv? convert it with `python -m tools.make_labels kinetics`)" \
                if "youtube_id" in header else ""
            raise LabelError(f"{path}:1: header {header} lacks column(s) {missing}; expected {','.join(COLUMNS)}{hint}")
        reader.fieldnames = header
        for row in csv_rows(reader, path):
            where = f"{path}:{reader.line_num}"
            if None in row or any(row.get(c) is None for c in ("label", "video_id", "split")):
                raise LabelError(f"{where}: expected {len(header)} fields")
            split = row["split"].strip()
            if split not in SPLITS:
                raise LabelError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
            label, video_id = row["label"], row["video_id"]
            check_name(label, "label", where)
            check_name(video_id, "video id", where)
            samples.append(Sample(
                video_id=video_id, label=label, split=split,
                time_start=_parse_time(row.get("time_start") or "", "time_start", where),
                time_end=_parse_time(row.get("time_end") or "", "time_end", where)))
    return samples


def csv_rows(reader: Iterator, path: Path, counted: bool = False) -> Iterator:
    """The reader's rows; a CSV syntax error (e.g. a field over the csv module's 128 KB limit) names file:line.

    `counted`: the reader's ``line_num`` already counts the failing line when the error comes (a reader over
    an in-memory string; over a file it counts the lines finished before it).
    """
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            line = reader.line_num if counted else reader.line_num + 1
            raise LabelError(f"{path}:{line}: not a valid label CSV row ({e})") from None
        yield row


def write_labels(csv_path: str | os.PathLike, samples: Iterable[Sample]) -> int:
    """Write `samples` as a label CSV (atomically: temp file then rename). Returns the row count."""
    path = Path(csv_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        for s in samples:
            where = f"{path} row {n + 1}"
            check_name(s.label, "label", where)
            check_name(s.video_id, "video id", where)
            if s.split not in SPLITS:
                raise LabelError(f"{where}: split {s.split!r} is not one of {', '.join(SPLITS)}")
            writer.writerow([s.label, s.video_id, _format_time(s.time_start), _format_time(s.time_end), s.split])
            n += 1
    return n


def read_classes(path: str | os.PathLike) -> list[str]:
    """Read ``classes.txt``: one class per line (blank lines ignored); index = position. Duplicates are an error."""
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"{path}: class list not found")
    classes: list[str] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, 1):
            name = line.rstrip("\r\n")
            if not name.strip():
                continue
            check_name(name, "class", f"{path}:{line_no}")
            if name in seen:
                raise LabelError(f"{path}:{line_no}: class {name!r} repeats line {seen[name]}")
            seen[name] = line_no
            classes.append(name)
    if not classes:
        raise LabelError(f"{path}: class list is empty")
    return classes


def write_classes(path: str | os.PathLike, classes: Iterable[str]) -> None:
    """Write ``classes.txt`` in the given order (builders pass ``sorted(...)``), atomically."""
    classes = list(classes)
    if len(set(classes)) != len(classes):
        raise LabelError(f"{path}: duplicate class names")
    for c in classes:
        check_name(c, "class", str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(c + "\n" for c in classes))


def classes_of(samples: Iterable[Sample]) -> list[str]:
    """The sorted list of distinct labels: the class order every run uses."""
    return sorted({s.label for s in samples})
