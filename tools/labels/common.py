"""What the readers of official annotation files share: finding and reading the files, one CSV header check,
times, and the ``underscore`` class naming. Every problem is a `LabelError` naming the file (and line or entry).
"""
from __future__ import annotations

import csv
import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from data.labels import LabelError, Sample, check_name, safe_label

__all__ = ["find_file", "text_lines", "load_json", "json_entries", "csv_rows", "plain_csv_rows", "parse_time", "underscore_labels"]


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


def text_lines(path: Path) -> Iterable[tuple[int, str]]:
    """(line number, stripped text) of the non-blank lines of a text file; official lists use CRLF and a BOM."""
    if not path.is_file():
        raise LabelError(f"{path}: file not found")
    with open(path, encoding="utf-8-sig", errors="strict") as f:
        try:
            for number, line in enumerate(f, 1):
                text = line.strip()
                if text:
                    yield number, text
        except UnicodeDecodeError as e:
            raise LabelError(f"{path}: not a UTF-8 text file ({e.reason})") from None


def load_json(path: Path) -> Any:
    """The parsed content of a JSON file (a BOM allowed)."""
    if not path.is_file():
        raise LabelError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise LabelError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise LabelError(f"{path}: not a UTF-8 text file ({e.reason})") from None


def json_entries(path: Path, fields: str) -> Iterator[tuple[str, Any]]:
    """``(where, entry)`` for every entry of a JSON list file (`where` names the file and the entry)."""
    entries = load_json(path)
    if not isinstance(entries, list):
        raise LabelError(f"{path}: expected a JSON list of {fields}")
    for i, e in enumerate(entries):
        yield f"{path}: entry {i}", e


def csv_rows(path: Path, required: Sequence[str], expected: str) -> Iterator[tuple[str, dict[str, str]]]:
    """``(where, row)`` for every row of a CSV file with a header (names stripped) holding the `required`
    columns; `expected` describes the header in the message when it does not. A row with a field missing or too
    many fields is an error."""
    if not path.is_file():
        raise LabelError(f"{path}: file not found")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in required if c not in header]
        if missing:
            raise LabelError(f"{path}:1: header lacks {missing}; expected {expected}")
        reader.fieldnames = header
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row or any(row.get(c) is None for c in header):
                raise LabelError(f"{where}: expected {len(header)} fields")
            yield where, row


def plain_csv_rows(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """``(line number, where, fields)`` for every non-blank row of a CSV file without a header."""
    if not path.is_file():
        raise LabelError(f"{path}: file not found")
    with open(path, newline="", encoding="utf-8-sig") as f:
        for number, row in enumerate(csv.reader(f), 1):
            if row and "".join(row).strip():
                yield number, f"{path}:{number}", row


def parse_time(text: str, column: str, where: str) -> float:
    """A finite, non-negative number of seconds from an annotation field; a `LabelError` naming `where` if not."""
    try:
        value = float(text)
    except ValueError:
        raise LabelError(f"{where}: {column} {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise LabelError(f"{where}: {column} {text!r} must be a non-negative number")
    return value


def underscore_labels(samples: list[Sample], classes: list[str]) -> tuple[list[Sample], list[str]]:
    """`safe_label` applied to every label, keeping the class order; two classes that meet are an error."""
    renamed = {c: check_name(safe_label(c), "label", f"class {c!r}") for c in classes}
    if len(set(renamed.values())) != len(classes):
        clash = Counter(renamed.values()).most_common(1)[0][0]
        raise LabelError(f"classes {[c for c in classes if renamed[c] == clash]} all become {clash!r}")
    return [replace(s, label=renamed[s.label]) for s in samples], [renamed[c] for c in classes]
