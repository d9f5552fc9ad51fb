"""A label CSV joined with the dataset index, as numpy columns, cached in binary form for fast reopening.

Opening a dataset needs, for every row of its label file, the label, split and video id, and the video's frame
count from the index (`data.index`). Parsing and checking a 650k-row CSV and joining it with a 650k-row index takes
seconds of Python in every process that opens the dataset (each DDP rank, each evaluation). `open_label_table`
does that work once and keeps the result in ``<root>/.cache/labels/<csv name>-<path digest>.npz``; a later open
that finds the same CSV bytes (SHA-1 of the content) and the same index file (size, mtime and SQLite's file
change counter) loads the arrays instead, with no text parsing and no per-row Python object.

The cache is derived data: a changed CSV, a changed index, a damaged or foreign cache file or a root that cannot
be written all mean the slow path, never a wrong table. A changed index alone keeps the parsed CSV and redoes only
the join. Class folders changed since indexing are not judged here: the dataset checks them on every open.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.atomic import atomic_write
from data.columns import LabelColumns, StringColumn, read_label_columns
from data.index import index_path, load_index
from data.labels import LabelError
from data.store import FrameStoreError

log = logging.getLogger(__name__)

__all__ = ["CACHE_DIR", "LabelTable", "cache_path", "open_label_table", "release_freed_memory", "warm_label_caches"]

CACHE_DIR = Path(".cache") / "labels"
_FORMAT = 2
_NO_INDEX = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class LabelTable:
    """Every row of a label CSV as columns, with the index's frame count of each row's video.

    ``label_codes`` index ``label_names`` (sorted), ``split_codes`` index `data.labels.SPLITS`; ``index_counts``
    is 0 where the index has no row for the video and None when the root has no index; ``class_mtimes`` are the
    class folder mtimes the index recorded. ``cached`` says whether the table came from the cache.
    """

    path: Path
    label_names: list[str]
    label_codes: np.ndarray
    split_codes: np.ndarray
    video_ids: StringColumn
    index_counts: np.ndarray | None
    class_mtimes: dict[str, int]
    cached: bool = False

    def __len__(self) -> int:
        return len(self.label_codes)


def cache_path(root: str | os.PathLike, csv_path: str | os.PathLike) -> Path:
    """Where the cache of `csv_path` lives under `root`: named after the CSV's path relative to the root (so a
    copied or moved root keeps its caches), or its absolute path for a CSV outside the root."""
    root, csv_path = Path(root).resolve(), Path(csv_path).resolve()
    try:
        key = csv_path.relative_to(root).as_posix()
    except ValueError:
        key = str(csv_path)
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]
    return root / CACHE_DIR / f"{csv_path.name}-{digest}.npz"


def _index_signature(root: Path) -> np.ndarray | None:
    """(size, mtime, SQLite file change counter) of the index; None when there is none. While it is being
    written (a rollback journal or WAL next to it) the signature matches nothing and nothing is cached against
    it. No inode: a copy that keeps the mtime (``cp -p``, ``rsync -a``) is the same index."""
    path = index_path(root)
    try:
        st = path.stat()
        with open(path, "rb") as f:
            header = f.read(100)
    except FileNotFoundError:
        return None
    if any(path.with_name(path.name + suffix).exists() for suffix in ("-journal", "-wal")):
        return _NO_INDEX  # unstable: compare unequal to every stored signature
    counter = int.from_bytes(header[24:28], "big") if len(header) >= 28 else -1
    return np.array([st.st_size, st.st_mtime_ns, counter], dtype=np.int64)


def _pack(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    column = StringColumn(strings)
    return column.buffer, column.offsets


def _join(cols: LabelColumns | LabelTable, root: Path) -> tuple[np.ndarray | None, dict[str, int]]:
    """Frame counts from the index for every row (0 where it has none), and its class mtimes."""
    table = load_index(root)
    if table is None:
        return None, {}
    lookup, names = table.frame_counts, cols.label_names
    counts = np.fromiter((lookup.get(f"{names[c]}/{v}", 0) for c, v in zip(cols.label_codes.tolist(), cols.video_ids)),
                         np.int64, len(cols.label_codes))
    return counts, dict(table.class_mtimes)


def _load(path: Path, digest: bytes, size: int) -> dict[str, np.ndarray] | None:
    """The cache file's arrays when it is ours and describes these CSV bytes, else None."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        log.debug("%s: unreadable label cache (%s), rebuilding it", path, e)
        return None
    try:
        if int(arrays["format"]) != _FORMAT or arrays["csv_sha1"].tobytes() != digest or \
                int(arrays["csv_size"]) != size:
            return None
    except KeyError:
        return None
    return arrays


def _write(path: Path, table: LabelTable, digest: bytes, size: int, signature: np.ndarray | None) -> None:
    names_buf, names_off = _pack(table.label_names)
    classes = sorted(table.class_mtimes)
    class_buf, class_off = _pack(classes)
    arrays = {
        "format": np.int64(_FORMAT), "csv_sha1": np.frombuffer(digest, np.uint8), "csv_size": np.int64(size),
        "index_signature": _NO_INDEX if signature is None else signature,
        "has_index": np.bool_(table.index_counts is not None),
        "label_names_buffer": names_buf, "label_names_offsets": names_off,
        "label_codes": table.label_codes, "split_codes": table.split_codes,
        "video_ids_buffer": table.video_ids.buffer, "video_ids_offsets": table.video_ids.offsets,
        "index_counts": _NO_INDEX if table.index_counts is None else table.index_counts,
        "class_names_buffer": class_buf, "class_names_offsets": class_off,
        "class_mtimes": np.array([table.class_mtimes[c] for c in classes], dtype=np.int64),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as f:
            np.savez(f, **arrays)
    except OSError as e:  # a read-only root still opens, only without the cache
        log.debug("cannot write the label cache %s (%s)", path, e.strerror or e)


def _from_arrays(csv_path: Path, a: dict[str, np.ndarray]) -> LabelTable:
    names = list(StringColumn.from_arrays(a["label_names_buffer"], a["label_names_offsets"]))
    classes = list(StringColumn.from_arrays(a["class_names_buffer"], a["class_names_offsets"]))
    return LabelTable(csv_path, names, a["label_codes"], a["split_codes"],
                      StringColumn.from_arrays(a["video_ids_buffer"], a["video_ids_offsets"]),
                      a["index_counts"] if bool(a["has_index"]) else None,
                      dict(zip(classes, a["class_mtimes"].tolist())), cached=True)


def release_freed_memory() -> None:
    """Hand the heap that parsing freed back to the OS (glibc ``malloc_trim``; elsewhere nothing).

    The parse allocates millions of short strings and lists, and the table's arrays, once split and dropped,
    are heap blocks too (glibc raises its mmap threshold after the first large free); glibc keeps those pages,
    ~40 MiB of RSS at 650k rows in every process that opened the dataset, inherited by its DataLoader workers.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _read_bytes(csv_path: Path) -> bytes:
    try:
        with open(csv_path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise LabelError(f"{csv_path}: label file not found") from None
    except IsADirectoryError:
        raise LabelError(f"{csv_path}: is a folder, not a label file") from None


def open_label_table(root: str | os.PathLike, csv_path: str | os.PathLike, use_cache: bool = True) -> LabelTable:
    """The rows of `csv_path` joined with ``<root>/index.db`` (see the module docstring).

    Raises `LabelError` naming file and line for a malformed CSV and `FrameStoreError` for an unreadable index,
    exactly as parsing without the cache would.
    """
    root, csv_path = Path(root), Path(csv_path)
    data = _read_bytes(csv_path)
    digest, size = hashlib.sha1(data).digest(), len(data)
    signature = _index_signature(root)
    where = cache_path(root, csv_path)
    arrays = _load(where, digest, size) if use_cache else None
    if arrays is not None:
        table = _from_arrays(csv_path, arrays)
        stored = arrays["index_signature"]
        same_index = (signature is None and not bool(arrays["has_index"])) or (
            signature is not None and len(signature) and np.array_equal(stored, signature))
        if same_index:
            return table
        counts, class_mtimes = _join(table, root)  # the CSV is unchanged: redo only the join
        table = LabelTable(csv_path, table.label_names, table.label_codes, table.split_codes, table.video_ids,
                           counts, class_mtimes)
    else:
        cols = read_label_columns(csv_path, data)
        counts, class_mtimes = _join(cols, root)
        table = LabelTable(csv_path, cols.label_names, cols.label_codes, cols.split_codes,
                           StringColumn(cols.video_ids), counts, class_mtimes)
        del cols
    del data, arrays
    if use_cache and (signature is None or len(signature)):
        _write(where, table, digest, size, signature)
    release_freed_memory()
    return table


def warm_label_caches(root: str | os.PathLike) -> int:
    """Build the cache of every ``<root>/labels/*.csv`` (after a conversion or an index refresh), so that the
    first training run opens the dataset as fast as the later ones. Returns how many were built; a malformed
    label file is skipped with a warning (opening it as a dataset reports it)."""
    root = Path(root)
    built = 0
    for csv_path in sorted((root / "labels").glob("*.csv")):
        try:
            open_label_table(root, csv_path)
            built += 1
        except (LabelError, FrameStoreError) as e:
            log.warning("label cache not built: %s", e)
    return built
