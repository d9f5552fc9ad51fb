"""The dataset index: one SQLite database ``<root>/index.db`` describing every complete video of a frame store.

Table ``videos(label, video_id, n_frames, height, width, fps, bytes, source_mtime, db_mtime)`` has one row per
complete video (``n_frames`` marker written; a legacy ``dataset2database`` database needs no marker), table
``classes(label, dir_mtime)`` the modification time of every class folder when it was last indexed. Opening a
dataset reads the label CSV and this one file, plus one ``stat`` per class folder: a class folder whose mtime
changed since indexing (a video folder was added or removed there by something that did not update the index)
marks that class stale, and only its videos fall back to their ``n_frames`` files.

Writers (`refresh_index`, the converter) hold `root_lock` (an ``fcntl.flock`` on ``<root>/.lock``) and change
the index in one SQLite transaction, so readers see the old or the new index, never a mix. `refresh_index`
stats each ``frames.db`` and re-reads only those whose size or mtime changed. Readers open the index read-only
and copy it into numpy arrays at once (`load_index`).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import sqlite3
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from data.store import DB_NAME, N_FRAMES_NAME, TMP_NAME, FrameStoreError, VideoReader

log = logging.getLogger(__name__)

__all__ = ["INDEX_NAME", "LOCK_NAME", "IndexEntry", "IndexTable", "RefreshStats", "root_lock", "video_lock", "read_entry", "add_entries",
           "refresh_index", "load_index", "index_path", "stale_classes"]

INDEX_NAME = "index.db"
LOCK_NAME = ".lock"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS videos(label TEXT NOT NULL, video_id TEXT NOT NULL, n_frames INTEGER NOT NULL,
    height INTEGER, width INTEGER, fps REAL, bytes INTEGER NOT NULL, source_mtime INTEGER, db_mtime INTEGER NOT NULL,
    marker INTEGER NOT NULL,
    PRIMARY KEY(label, video_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS classes(label TEXT PRIMARY KEY, dir_mtime INTEGER NOT NULL) WITHOUT ROWID;
"""
_COLUMNS = "label, video_id, n_frames, height, width, fps, bytes, source_mtime, db_mtime, marker"


@dataclass(frozen=True)
class IndexEntry:
    """One complete video of the store as the index records it."""

    label: str
    video_id: str
    n_frames: int
    height: int | None
    width: int | None
    fps: float | None
    bytes: int
    source_mtime: int | None
    db_mtime: int
    marker: bool  # an n_frames marker was there (always, except for legacy databases made without one)


@dataclass(frozen=True)
class RefreshStats:
    """What `refresh_index` did: videos kept unchanged, (re)read, removed, and folders skipped as incomplete."""

    kept: int
    read: int
    removed: int
    incomplete: int

    @property
    def total(self) -> int:
        return self.kept + self.read


def index_path(root: str | os.PathLike) -> Path:
    return Path(root) / INDEX_NAME


@contextlib.contextmanager
def root_lock(root: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive write lock of a dataset root (blocks until free; released on exit or process death)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise OSError(f"{root}: read-only ({e.strerror}): the index and label caches are written there; "
                          "index a writable copy") from None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the flock


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text not in (None, "") else None
    except ValueError:
        return None


def _float_or_none(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def read_entry(video_dir: str | os.PathLike, label: str, video_id: str) -> IndexEntry | None:
    """The index row of one video folder, or None when it is not complete (no marker on our format, a temp file
    of a running conversion, no database). Raises FrameStoreError for a database that cannot be read."""
    video_dir = Path(video_dir)
    db = video_dir / DB_NAME
    try:
        st = db.stat()
    except FileNotFoundError:
        return None
    has_marker = (video_dir / N_FRAMES_NAME).is_file()
    with VideoReader(video_dir, immutable=False, mmap_size=0) as reader:
        if not reader.legacy and not has_marker:
            return None  # our format without its completion marker: being written, or killed mid-way
        meta = reader.meta
        n = len(reader)
        height, width = _int_or_none(meta.get("height")), _int_or_none(meta.get("width"))
        if height is None or width is None:
            height, width = reader.frame_size
    return IndexEntry(label, video_id, int(n), height, width, _float_or_none(meta.get("fps")), int(st.st_size),
                      _int_or_none(meta.get("source_mtime")), int(st.st_mtime_ns), has_marker)


def _connect_rw(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    conn.executescript(_SCHEMA)
    return conn


def _scan(jpg: Path) -> Iterator[tuple[str, str, Path]]:
    for class_dir in sorted(p for p in jpg.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for video_dir in sorted(p for p in class_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            yield class_dir.name, video_dir.name, video_dir


def refresh_index(root: str | os.PathLike, rebuild: bool = False, progress: bool = False) -> RefreshStats:
    """Bring ``<root>/index.db`` up to date with the store on disk (every video folder under ``jpg/``).

    A row is kept when its ``frames.db`` has the recorded size and mtime, else the video is read again; rows of
    folders that are gone or incomplete are removed. `rebuild` re-reads everything. Holds `root_lock`.
    Raises FrameStoreError naming the database that cannot be read.
    """
    root = Path(root)
    jpg = root / "jpg"
    if not jpg.is_dir():
        raise FrameStoreError(f"{root}: not a dataset root (no jpg/ folder)")
    with root_lock(root):
        conn = _connect_rw(index_path(root))
        try:
            old = {} if rebuild else {(r[0], r[1]): (r[2], r[3], bool(r[4])) for r in conn.execute(
                "SELECT label, video_id, bytes, db_mtime, marker FROM videos")}
            # Class folder mtimes before the scan: a folder added during the scan then shows as stale later.
            class_mtimes = {p.name: p.stat().st_mtime_ns for p in jpg.iterdir()
                            if p.is_dir() and not p.name.startswith(".")}
            fresh: list[IndexEntry] = []
            seen: set[tuple[str, str]] = set()
            kept = incomplete = 0
            for label, video_id, video_dir in tqdm(_scan(jpg), desc="index", unit="video", disable=not progress):
                key = (label, video_id)
                try:
                    st = (video_dir / DB_NAME).stat()
                except FileNotFoundError:
                    incomplete += 1
                    continue
                marker = (video_dir / N_FRAMES_NAME).is_file()
                if (video_dir / TMP_NAME).exists() and not marker:
                    incomplete += 1
                    continue
                # The marker counts too: one removed since indexing (a failed reconversion) means not complete.
                if old.get(key) == (st.st_size, st.st_mtime_ns, marker):
                    seen.add(key)
                    kept += 1
                    continue
                try:
                    entry = read_entry(video_dir, label, video_id)
                except FrameStoreError as e:
                    # One broken database must not stop indexing a million others; it stays out of the index.
                    log.warning("not indexed: %s", e)
                    entry = None
                if entry is None:
                    incomplete += 1
                    continue
                seen.add(key)
                fresh.append(entry)
            gone = [k for k in old if k not in seen]
            conn.execute("BEGIN IMMEDIATE")
            if rebuild:
                conn.execute("DELETE FROM videos")
            conn.executemany("DELETE FROM videos WHERE label = ? AND video_id = ?", gone)
            conn.executemany(f"INSERT OR REPLACE INTO videos({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             [tuple(e.__dict__.values()) for e in fresh])
            conn.execute("DELETE FROM classes")
            conn.executemany("INSERT INTO classes(label, dir_mtime) VALUES (?, ?)", sorted(class_mtimes.items()))
            conn.execute("COMMIT")
        finally:
            conn.close()
    stats = RefreshStats(kept=kept, read=len(fresh), removed=len(gone), incomplete=incomplete)
    log.info("%s: %d videos indexed (%d unchanged, %d read, %d removed, %d incomplete folders skipped)",
             index_path(root), stats.total, stats.kept, stats.read, stats.removed, stats.incomplete)
    return stats


@dataclass(frozen=True)
class IndexTable:
    """What a dataset needs from the index: frame counts by ``"label/video_id"`` and the class folders' mtimes.

    The mapping is meant to be joined with a label file and dropped, not kept per sample.
    """

    frame_counts: dict[str, int]
    class_mtimes: dict[str, int]


def stale_classes(root: str | os.PathLike, class_mtimes: dict[str, int], labels: list[str]) -> set[str]:
    """Classes among `labels` whose folder mtime differs from `class_mtimes` (recorded when indexing) or that
    were never indexed. One ``stat`` per class."""
    jpg = Path(root) / "jpg"
    stale = set()
    for label in labels:
        try:
            mtime = (jpg / label).stat().st_mtime_ns
        except OSError:
            continue  # no folder: its videos are missing, reported by the caller
        if class_mtimes.get(label) != mtime:
            stale.add(label)
    return stale


def load_index(root: str | os.PathLike) -> IndexTable | None:
    """Read ``<root>/index.db`` read-only into an `IndexTable`; None when the root has no index.

    Raises FrameStoreError when the file is not a readable index.
    """
    path = index_path(root)
    if not path.is_file():
        return None
    uri = "file:" + urllib.parse.quote(str(path.absolute())) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=60)
        try:
            counts = dict(conn.execute("SELECT label || '/' || video_id, n_frames FROM videos"))
            class_mtimes = dict(conn.execute("SELECT label, dir_mtime FROM classes"))
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise FrameStoreError(f"{path}: cannot read the dataset index ({e}); rebuild it with "
                              f"`python -m tools.index {root} --rebuild`") from e
    return IndexTable(counts, class_mtimes)


def read_all(root: str | os.PathLike) -> list[IndexEntry]:
    """Every row of the index, sorted by (label, video id); empty when there is no index."""
    path = index_path(root)
    if not path.is_file():
        return []
    conn = sqlite3.connect(path, timeout=60)
    try:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM videos ORDER BY label, video_id").fetchall()
    finally:
        conn.close()
    return [IndexEntry(*r[:-1], bool(r[-1])) for r in rows]


@contextlib.contextmanager
def video_lock(video_dir: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive ``flock`` on a video folder (created if needed) while its database is written.

    A lock on the folder itself adds no file per video; a second converter on the same video waits here and then
    finds it complete. (Local filesystems and NFSv4; a filesystem without flock support raises OSError.)
    """
    video_dir = Path(video_dir)
    video_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(video_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def add_entries(root: str | os.PathLike, entries: list[IndexEntry]) -> None:
    """Insert or replace rows and record the current mtime of their class folders (holds `root_lock`).

    For writers that know their videos are complete (a tool generating a layout); `refresh_index` is the
    general way to bring the index in line with the disk.
    """
    root = Path(root)
    with root_lock(root):
        conn = _connect_rw(index_path(root))
        try:
            labels = sorted({e.label for e in entries})
            mtimes = [(lb, (root / "jpg" / lb).stat().st_mtime_ns) for lb in labels]
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(f"INSERT OR REPLACE INTO videos({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             [tuple(e.__dict__.values()) for e in entries])
            conn.executemany("INSERT OR REPLACE INTO classes(label, dir_mtime) VALUES (?, ?)", mtimes)
            conn.execute("COMMIT")
        finally:
            conn.close()
