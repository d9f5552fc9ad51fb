"""Column storage for per-video dataset fields: numpy buffers instead of one Python object per video.

A DataLoader worker forked from the main process shares the parent's memory page by page until it writes to it;
touching a Python object writes its reference count, so a list of 650k objects is copied into every worker as it
is read. Numpy buffers are never written by reads and stay shared.

- `StringColumn`: strings packed as one UTF-8 byte buffer plus an offsets array; indexing decodes one string.
- `IntColumn`: a read-only int array that also behaves like the list it replaces (``==`` with a list, ``int``
  items, iteration) so code written against lists keeps working.
- `read_label_columns`: the label CSV read straight into columns, checked like `data.labels.read_labels` (every
  error names file and line) without building a `Sample` per row.
"""
from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.labels import SPLITS, LabelError, check_name, csv_rows

__all__ = ["StringColumn", "IntColumn", "LabelColumns", "read_label_columns"]

# A name check_name would reject: empty, ".", "..", a separator, NUL, or leading/trailing white space.
_BAD_NAME = re.compile(r"^$|^\.\.?$|[/\\\0]|^\s|\s$", re.M)


class StringColumn(Sequence):
    """Immutable sequence of strings stored as one UTF-8 buffer and int64 offsets."""

    def __init__(self, strings: Iterable[str]):
        encoded = [s.encode("utf-8") for s in strings]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self._offsets[1:])
        self._buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded else np.zeros(0, np.uint8)

    @classmethod
    def from_arrays(cls, buffer: np.ndarray, offsets: np.ndarray) -> StringColumn:
        """A column over an existing UTF-8 `buffer` and its ``len + 1`` `offsets` (no copy)."""
        if offsets.ndim != 1 or len(offsets) < 1 or int(offsets[0]) != 0 or int(offsets[-1]) != len(buffer):
            raise ValueError("offsets must start at 0 and end at the buffer length")
        column = cls.__new__(cls)
        column._buffer, column._offsets = buffer.astype(np.uint8, copy=False), offsets.astype(np.int64, copy=False)
        return column

    @property
    def buffer(self) -> np.ndarray:
        return self._buffer

    @property
    def offsets(self) -> np.ndarray:
        return self._offsets

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {n} strings")
        return self._buffer[self._offsets[i]:self._offsets[i + 1]].tobytes().decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        for i in range(len(self)):
            yield self[i]

    def take(self, positions: np.ndarray) -> StringColumn:
        """A new column with the strings at `positions`."""
        return StringColumn(self[int(p)] for p in positions)

    def select(self, mask: np.ndarray) -> StringColumn:
        """A new column with the strings where the boolean `mask` is true, in order (vectorised: no per-string
        Python work, so it suits splitting a 650k-row column)."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(self),):
            raise ValueError(f"mask of shape {mask.shape} for {len(self)} strings")
        lengths = np.diff(self._offsets)
        offsets = np.zeros(int(mask.sum()) + 1, dtype=np.int64)
        np.cumsum(lengths[mask], out=offsets[1:])
        return StringColumn.from_arrays(self._buffer[np.repeat(mask, lengths)], offsets)

    @property
    def nbytes(self) -> int:
        return int(self._offsets.nbytes + self._buffer.nbytes)


class IntColumn(Sequence):
    """A read-only integer array that compares equal to a list of the same values and yields Python ints."""

    def __init__(self, values: np.ndarray | Sequence[int], dtype=np.int64):
        self.array = np.array(values, dtype=dtype)
        self.array.setflags(write=False)

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.array[i].tolist()
        return int(self.array[i])

    def __iter__(self) -> Iterator[int]:
        return iter(self.array.tolist())

    def __eq__(self, other) -> bool:
        if isinstance(other, IntColumn):
            other = other.array
        try:
            other = np.asarray(other)
        except (TypeError, ValueError):
            return NotImplemented
        return other.shape == self.array.shape and bool(np.array_equal(self.array, other))

    __hash__ = None  # mutable-looking sequences are unhashable, like lists

    def __array__(self, dtype=None, copy=None):
        return self.array if dtype is None else self.array.astype(dtype)

    def __repr__(self) -> str:
        return f"IntColumn({self.array.tolist()!r})" if len(self) <= 10 else f"IntColumn(len={len(self)})"


@dataclass(frozen=True)
class LabelColumns:
    """The rows of a label CSV as columns: label codes into `label_names`, video ids, split codes into SPLITS."""

    path: Path
    label_names: list[str]
    label_codes: np.ndarray
    video_ids: list[str]
    split_codes: np.ndarray
    lines: np.ndarray  # CSV line number of each row, for messages

    def __len__(self) -> int:
        return len(self.video_ids)


_ASCII_SPACE = " \t\x0b\x0c\x1c\x1d\x1e\x1f"  # what str.isspace accepts in ASCII, besides the line breaks


def _may_have_bad_name(joined: str) -> bool:
    """Whether the newline-joined names contain a name `check_name` would reject (True may be a false alarm).

    Substring tests run at memory speed; the per-line regex takes ~1 s on 650k ids, so it is kept for
    non-ASCII text, where Unicode white space would need it.
    """
    if not joined.isascii():
        return _BAD_NAME.search(joined) is not None or "\r" in joined
    wrapped = f"\n{joined}\n"
    if any(c in joined for c in "/\\\0\r") or "\n\n" in wrapped or "\n.\n" in wrapped or "\n..\n" in wrapped:
        return True
    return any(f"\n{c}" in wrapped or f"{c}\n" in wrapped for c in _ASCII_SPACE)


def _find_bad(names: list[str], what: str, path: Path, lines: np.ndarray) -> None:
    """Raise the `LabelError` of the first bad name (only called once the joined check found one)."""
    for name, line in zip(names, lines):
        check_name(name, what, f"{path}:{int(line)}")


def read_label_columns(csv_path: str | os.PathLike, data: bytes | None = None) -> LabelColumns:
    """Read a label CSV (``label,video_id,time_start,time_end,split``) into columns, validating every row.

    `data`: the file's bytes when the caller has read them already (they are parsed instead of the file, so
    that what was hashed is what was parsed). Times are checked by `data.labels.read_labels` semantics only as
    far as the dataset needs: they are unused for loading, so they are not parsed here.
    """
    path = Path(csv_path)
    if data is None:
        if not path.is_file():
            raise LabelError(f"{path}: label file not found")
        data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark (spreadsheets write one) is not part of the header
    except UnicodeDecodeError as e:
        raise LabelError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); save it as "
                         "UTF-8") from None
    with io.StringIO(text, newline="") as f:
        reader = csv.reader(f)
        rows = csv_rows(reader, path, counted=True)
        header = [h.strip() for h in next(rows, [])]
        missing = [c for c in ("label", "video_id", "split") if c not in header]
        if missing:
            hint = " (an official Kinetics csv? convert it with `python -m tools.make_labels kinetics`)" \
                if "youtube_id" in header else ""
            raise LabelError(f"{path}:1: header {header} lacks column(s) {missing}; "
                             f"expected label,video_id,time_start,time_end,split{hint}")
        li, vi, si, width = header.index("label"), header.index("video_id"), header.index("split"), len(header)
        labels: list[str] = []
        video_ids: list[str] = []
        splits: list[str] = []
        lines: list[int] = []
        for row in rows:
            if not row:
                continue  # csv.DictReader skips blank lines too
            if len(row) != width:
                raise LabelError(f"{path}:{reader.line_num}: expected {width} fields, got {len(row)}")
            labels.append(row[li])
            video_ids.append(row[vi])
            splits.append(row[si].strip())
            lines.append(reader.line_num)
    line_arr = np.asarray(lines, dtype=np.int64)
    label_names = sorted(set(labels))
    for name in label_names:
        if _BAD_NAME.search(name) or "\n" in name or "\r" in name:
            _find_bad(labels, "label", path, line_arr)
    # One regex pass over all ids joined by newlines instead of a Python call per row; ids with a line break
    # would split in two here and are caught because the count of joined lines changes.
    joined = "\n".join(video_ids)
    if _may_have_bad_name(joined) or joined.count("\n") != max(len(video_ids) - 1, 0):
        _find_bad(video_ids, "video id", path, line_arr)
    split_names = set(splits)
    for bad in split_names - set(SPLITS):
        line = lines[splits.index(bad)]
        raise LabelError(f"{path}:{line}: split {bad!r} is not one of {', '.join(SPLITS)}")
    label_pos = {n: i for i, n in enumerate(label_names)}
    split_pos = {n: i for i, n in enumerate(SPLITS)}
    return LabelColumns(path, label_names, np.fromiter((label_pos[x] for x in labels), np.int32, len(labels)),
                        video_ids, np.fromiter((split_pos[x] for x in splits), np.int8, len(splits)), line_arr)


class LazySequence(Sequence):
    """A read-only sequence whose items are built on access by `getter(i)` (no object kept per item)."""

    def __init__(self, n: int, getter):
        self._n, self._getter = int(n), getter

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._getter(j) for j in range(*i.indices(self._n))]
        i = int(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"index {i} out of range for {self._n} items")
        return self._getter(i)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(other) == self._n and all(a == b for a, b in zip(self, other))

    __hash__ = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(len={self._n})"
