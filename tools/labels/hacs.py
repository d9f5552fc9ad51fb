"""Label builders for HACS, Moments in Time, Diving-48 and Something-Something v2 (the CLI is ``tools.make_labels``).

Each builder reads the official annotation files and returns ``(samples, classes)``; class order follows the
dataset's own index file where it has one (``moments_categories.txt``, ``Diving48_vocab.json``, the SSv2 labels
json), so that class i means what the dataset means; HACS has none and uses the sorted class names.

- HACS: positive clips only (``label`` 1; negatives are counted and skipped); video id
  ``<youtube_id>_<int(start):06d>_<int(end):06d>`` with the clip's times. Two different clips of one video that
  share those integer seconds get ``_2``, ``_3``, ... (ordered by exact start, end) and a warning naming both rows:
  never silently merged. An exact repeat of a row is skipped with a warning.
- Moments in Time: header-less ``filename,label,n_positive,n_negative`` rows; the class is the file's folder and
  must equal the label column; video id = file name without extension.
- Diving-48: ``vid_name`` is the video id; the class name joins the four vocabulary words with ``_``; the test
  list is ``val`` (as published numbers use it).
- Something-Something v2: video id = ``id``; the class is the template without ``[`` and ``]``.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from data.labels import LabelError, Sample, check_name

log = logging.getLogger(__name__)

__all__ = ["HACS_SUBSETS", "hacs_samples", "hacs_video_id", "moments_samples", "diving48_samples",
           "sthv2_samples", "find_file", "SEGMENT_ID", "safe_label", "underscore_labels"]

HACS_SUBSETS = {"training": "train", "train": "train", "validation": "val", "val": "val", "testing": "test",
                "test": "test"}
# A clip id that carries its times: <source id>_<start:06d>_<end:06d>[_<n>] (n: made unique by a builder).
SEGMENT_ID = re.compile(r"^(?P<source>.+)_(?P<start>\d{6})_(?P<end>\d{6})(?:_(?P<n>\d+))?$")


def find_file(directory: Path, name: str) -> Path:
    """`name` in `directory` or one folder below; a missing file raises a `LabelError` naming the expected path."""
    if directory.is_file() and directory.name == name:
        return directory
    if not directory.is_dir():
        raise LabelError(f"{directory}: annotation folder not found")
    direct = directory / name
    if direct.is_file():
        return direct
    nested = sorted(directory.glob(f"*/{name}"))
    if nested:
        return nested[0]
    raise LabelError(f"{direct}: file not found")


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise LabelError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise LabelError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise LabelError(f"{path}: not a UTF-8 text file ({e.reason})") from None


def safe_label(label: str) -> str:
    """``underscore`` naming: each run of characters other than [A-Za-z0-9_-] becomes one ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", label).strip("_")


def underscore_labels(samples: list[Sample], classes: list[str]) -> tuple[list[Sample], list[str]]:
    """`safe_label` applied to every label, keeping the class order; two classes that meet are an error."""
    renamed = {c: check_name(safe_label(c), "label", f"class {c!r}") for c in classes}
    if len(set(renamed.values())) != len(classes):
        clash = Counter(renamed.values()).most_common(1)[0][0]
        raise LabelError(f"classes {[c for c in classes if renamed[c] == clash]} all become {clash!r}")
    return [replace(s, label=renamed[s.label]) for s in samples], [renamed[c] for c in classes]


def _time(text: str, column: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LabelError(f"{where}: {column} {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise LabelError(f"{where}: {column} {text!r} must be a non-negative number")
    return value


# ----------------------------------------------------------------------------------------------------------------
# HACS


def hacs_video_id(youtube_id: str, start: float, end: float) -> str:
    """The SRTG clip id ``<youtube_id>_<int(start):06d>_<int(end):06d>``."""
    return f"{youtube_id}_{int(start):06d}_{int(end):06d}"


def hacs_samples(csv_path: str | Path) -> tuple[list[Sample], list[str]]:
    """Positive clips of ``HACS_clips_v1.1.1.csv`` (``classname,youtube_id,subset,start,end,label``)."""
    path = Path(csv_path)
    if not path.is_file():
        raise LabelError(f"{path}: file not found")
    rows: list[tuple[str, str, str, float, float, str]] = []  # label, youtube id, split, start, end, where
    negatives = 0
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        expected = ("classname", "youtube_id", "subset", "start", "end", "label")
        missing = [c for c in expected if c not in header]
        if missing:
            raise LabelError(f"{path}:1: header lacks {missing}; expected {','.join(expected)}")
        reader.fieldnames = header
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row or any(row.get(c) is None for c in expected):
                raise LabelError(f"{where}: expected {len(header)} fields")
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
            start, end = _time(row["start"], "start", where), _time(row["end"], "end", where)
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
        groups.setdefault(hacs_video_id(r[1], r[3], r[4]), []).append(r)
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


# ----------------------------------------------------------------------------------------------------------------
# Moments in Time


def read_moments_categories(path: Path) -> list[str]:
    """``moments_categories.txt`` (``category,index`` lines) -> categories in index order (indices 0..N-1)."""
    if not path.is_file():
        raise LabelError(f"{path}: file not found")
    by_index: dict[int, str] = {}
    seen: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        for number, row in enumerate(csv.reader(f), 1):
            if not row or not "".join(row).strip():
                continue
            where = f"{path}:{number}"
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
        with open(path, newline="", encoding="utf-8-sig") as f:
            for number, row in enumerate(csv.reader(f), 1):
                if not row or not "".join(row).strip():
                    continue
                where = f"{path}:{number}"
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


# ----------------------------------------------------------------------------------------------------------------
# Diving-48


def read_diving48_vocab(path: Path) -> list[str]:
    """``Diving48_vocab.json`` (lists of takeoff, somersault, twist, flight) -> class names, words joined by ``_``."""
    vocab = _load_json(path)
    if not isinstance(vocab, list) or not vocab:
        raise LabelError(f"{path}: expected a JSON list of [takeoff, somersault, twist, flight] lists")
    classes: list[str] = []
    for i, words in enumerate(vocab):
        where = f"{path}: entry {i}"
        if not isinstance(words, list) or len(words) != 4 or not all(isinstance(w, str) and w.strip() for w in words):
            raise LabelError(f"{where}: expected 4 words (takeoff, somersault, twist, flight), got {words!r}")
        name = check_name("_".join(re.sub(r"\s+", "-", w.strip()) for w in words), "class", where)
        if name in classes:
            raise LabelError(f"{where}: class {name!r} repeats entry {classes.index(name)}")
        classes.append(name)
    return classes


def _json_entries(path: Path, fields: str) -> Iterator[tuple[str, Any]]:
    """``(where, entry)`` for every entry of a JSON list file (`where` names the file and the entry)."""
    entries = _load_json(path)
    if not isinstance(entries, list):
        raise LabelError(f"{path}: expected a JSON list of {fields}")
    for i, e in enumerate(entries):
        yield f"{path}: entry {i}", e


def diving48_samples(annotations: str | Path, test_as: str = "val") -> tuple[list[Sample], list[str]]:
    """Samples of ``Diving48_V2_train.json`` (train) and ``Diving48_V2_test.json`` (`test_as`)."""
    annotations = Path(annotations)
    classes = read_diving48_vocab(find_file(annotations, "Diving48_vocab.json"))
    samples: list[Sample] = []
    seen: dict[str, str] = {}
    for name, split in (("Diving48_V2_train.json", "train"), ("Diving48_V2_test.json", test_as)):
        for where, e in _json_entries(find_file(annotations, name), "{vid_name, label, start_frame, end_frame}"):
            if not isinstance(e, dict) or "vid_name" not in e or "label" not in e:
                raise LabelError(f"{where}: expected an object with vid_name and label, got {e!r}"[:300])
            video_id = check_name(str(e["vid_name"]).strip(), "video id", where)
            index = e["label"]
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(classes):
                raise LabelError(f"{where} ({video_id}): label {index!r} is not a class index 0..{len(classes) - 1} "
                                 "of Diving48_vocab.json")
            if video_id in seen:
                raise LabelError(f"{where}: video {video_id} already listed at {seen[video_id]}")
            seen[video_id] = where
            samples.append(Sample(video_id, classes[index], split))
    return samples, classes


# ----------------------------------------------------------------------------------------------------------------
# Something-Something v2


def sthv2_class(template: str) -> str:
    """A template without its brackets: ``Holding [something] next to [something]`` -> ``Holding something next to
    something``."""
    return template.replace("[", "").replace("]", "").strip()


def read_sthv2_labels(path: Path) -> list[str]:
    """``something-something-v2-labels.json`` ({template: "index"}) -> class names in index order."""
    table = _load_json(path)
    if not isinstance(table, dict) or not table:
        raise LabelError(f"{path}: expected a JSON object {{template: index}}")
    by_index: dict[int, str] = {}
    for template, index in table.items():
        where = f"{path}: {template!r}"
        try:
            i = int(index)
        except (TypeError, ValueError):
            raise LabelError(f"{where}: index {index!r} is not a number") from None
        name = check_name(sthv2_class(template), "class", where)
        if i in by_index:
            raise LabelError(f"{where}: index {i} already used by {by_index[i]!r}")
        by_index[i] = name
    if sorted(by_index) != list(range(len(by_index))):
        raise LabelError(f"{path}: class indices are not 0..{len(by_index) - 1}")
    classes = [by_index[i] for i in range(len(by_index))]
    if len(set(classes)) != len(classes):
        raise LabelError(f"{path}: two templates give the same class name")
    return classes


def sthv2_samples(annotations: str | Path) -> tuple[list[Sample], list[str]]:
    """Samples of ``something-something-v2-train.json`` (train) and ``-validation.json`` (val)."""
    annotations = Path(annotations)
    classes = read_sthv2_labels(find_file(annotations, "something-something-v2-labels.json"))
    known = set(classes)
    samples: list[Sample] = []
    seen: dict[str, str] = {}
    for name, split in (("something-something-v2-train.json", "train"),
                        ("something-something-v2-validation.json", "val")):
        for where, e in _json_entries(find_file(annotations, name), "{id, label, template, placeholders}"):
            if not isinstance(e, dict) or "id" not in e or not isinstance(e.get("template"), str):
                raise LabelError(f"{where}: expected an object with id and template, got {e!r}"[:300])
            video_id = check_name(str(e["id"]).strip(), "video id", where)
            label = sthv2_class(e["template"])
            if label not in known:
                raise LabelError(f"{where} (id {video_id}): class {label!r} is not in "
                                 "something-something-v2-labels.json")
            if video_id in seen:
                raise LabelError(f"{where}: id {video_id} already listed at {seen[video_id]}")
            seen[video_id] = where
            samples.append(Sample(video_id, label, split))
    return samples, classes

