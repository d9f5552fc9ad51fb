"""The SQLite frame store: one `frames.db` per video, holding its frames as JPEG blobs.

Layout::

    <root>/jpg/<class>/<video_id>/frames.db    # frames(idx, jpeg), meta(key, value), view Images(ObjId, frames)
    <root>/jpg/<class>/<video_id>/n_frames     # "<count>\\n", written last: the "complete" marker

Reading opens read-only URI connections (``mode=ro``, plus ``immutable=1`` by default: no locking, no change
detection; never open a database that is being rewritten that way), memory-maps the file (``PRAGMA mmap_size``:
measured 1.6x faster blob fetches on a cached connection, though JPEG decoding dominates a clip), fetches the
distinct frames of a clip with one indexed ``WHERE idx IN (...)`` query, decodes each once (RGB straight from
libjpeg-turbo on OpenCV >= 4.10) into its slot of one preallocated ``(T, H, W, 3)`` uint8 array and copies repeated
indices. Reduced-scale decoding (``reduce=2|4|8``) uses libjpeg-turbo's DCT-domain scaling through
``cv2.IMREAD_REDUCED_COLOR_N``: the output is ``ceil(H/r) x ceil(W/r)``. Corrupt frames raise, naming file and
frame (a JPEG without its end marker counts as corrupt: libjpeg would fill the missing part with grey; so do a
blob that is not JPEG data, e.g. PNG, and a value stored as TEXT).

Checksums: the converter stores the CRC-32 of every JPEG blob in ``frames.crc32`` (and ``checksum=crc32`` in
``meta``); readers verify each blob they fetch, so bytes changed after conversion (which libjpeg would often
decode "successfully" into a damaged frame) raise instead. The extra column leaves the ``Images`` view, and so
legacy readers, unchanged; databases without it are read unverified.

The legacy ``dataset2database`` format (a table ``Images(ObjId, frames[, size])`` without index, ObjId
``<video>/frame_%05d``, 1-based) is read unchanged: the frame number is parsed from the ObjId suffix, frames are
ordered by that number (never by string) and an index -> rowid map is built once per open.

Frame count, decided as follows: our format stores ``n_frames`` in ``meta`` in the same transaction as the frames,
so the database alone is authoritative; the ``n_frames`` file next to it is the converter's completion marker and
a cheap count for dataset indexing (``read_n_frames``). Complete means every index ``0..n_frames-1`` is stored. When the file is missing the reader falls back to the
database (meta, else the number of rows) and logs a warning. A database with fewer rows than ``n_frames`` (from
meta or from the file) is refused; a file smaller than the database wins (the dataset indexed that many frames).

Connections are never used across ``fork()``: a reader notices a changed ``os.getpid()`` and reopens, parking the
inherited connection unclosed (SQLite forbids even closing it in the child). ``ReaderCache`` keeps a bounded LRU of
open readers per process.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import stat
import urllib.parse
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from data.atomic import atomic_write_text, replace_durably
from data.bad_clips import with_repair
from data.rank_logging import SAME_ON_EVERY_RANK

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DB_NAME = "frames.db"
TMP_NAME = "frames.db.tmp"
N_FRAMES_NAME = "n_frames"
# sqlite.org's blob study suggests 8-16 KiB pages for large blobs, but measured here on 128x171 q90 frames (48
# videos, 14.19 MB of JPEG) read speed is the same for 4, 8, 16 and 32 KiB pages, warm or cold, while the files
# take 1.17x the JPEG bytes at 4 KiB vs 1.58x at 8 KiB and 1.45x at 16 KiB: the default page size wins.
PAGE_SIZE = 4096
# Memory-map up to this many bytes of each database: blobs are then copied straight from the page cache.
MMAP_SIZE = 256 * 1024 * 1024
REDUCE_FACTORS = (1, 2, 4, 8)
_MAX_VARS = 900  # bound parameters per query (SQLite builds before 3.32 allow 999)

# Decode flags per reduce factor. OpenCV >= 4.10 can decode straight to RGB; older ones decode BGR and the
# channel swap is done by cvtColor while copying into the output array.
DECODES_RGB = hasattr(cv2, "IMREAD_COLOR_RGB")
_REDUCED_BIT = {1: 0, 2: 16, 4: 32, 8: 64}  # the IMREAD_REDUCED_* bits without the colour bit


def decode_flag(reduce: int) -> int:
    """The ``cv2.imdecode`` flags of a frame at `reduce`: RGB output where OpenCV can (`DECODES_RGB`), else BGR."""
    colour = cv2.IMREAD_COLOR_RGB if DECODES_RGB else cv2.IMREAD_COLOR
    return _REDUCED_BIT[reduce] | colour | cv2.IMREAD_IGNORE_ORIENTATION


_DECODE_FLAGS = {r: decode_flag(r) for r in REDUCE_FACTORS}
_LEGACY_NUMBER = re.compile(r"(\d+)\s*$")

# Connections inherited through fork(): kept referenced so that they are never closed in the child.
_INHERITED: list[sqlite3.Connection] = []
_WARNED: set[str] = set()
# While `collect_missing_markers` is active: the databases opened without an n_frames marker (one summary line).
_NO_MARKER: list[list[str]] = []
# `meta` value naming the per-frame checksum column of `frames`; databases without it are read unverified.
CHECKSUM = "crc32"


class FrameStoreError(ValueError):
    """A frame store that is missing, not a database, incomplete or corrupt (the message names the file)."""


def _with_repair(message: str, db: Path) -> str:
    """`message` with the repair command of the dataset `db` belongs to (``ROOT/jpg/<class>/<video>/frames.db``)."""
    if db.parent.parent.parent.name != "jpg":
        return f"{message}; convert the video again"
    return with_repair(message, db.parents[3])


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """Encode one `(H, W, 3)` uint8 RGB frame as a baseline JPEG of the given quality (1-100)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"encode_jpeg expects an (H, W, 3) uint8 RGB array, got {rgb.shape} {rgb.dtype}")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def frame_checksum(blob: bytes) -> int:
    """The checksum stored next to every frame: CRC-32 of the blob (about 1% of a JPEG decode's time)."""
    return zlib.crc32(blob)


def _truncated_jpeg(blob: bytes) -> bool:
    """A JPEG (SOI marker first) whose end-of-image marker is missing, allowing zero padding after it."""
    if blob[:2] != b"\xff\xd8":
        return False
    return blob[-2:] != b"\xff\xd9" and blob.rstrip(b"\0")[-2:] != b"\xff\xd9"


def reduce_for(frame_size: tuple[int, int], min_short_side: int | None) -> int:
    """The largest reduce factor (1, 2, 4, 8) whose decoded short side is still >= `min_short_side`."""
    if not min_short_side:
        return 1
    short = min(frame_size)
    for r in reversed(REDUCE_FACTORS):
        if -(-short // r) >= min_short_side:
            return r
    return 1


def _db_path(path: str | os.PathLike) -> Path:
    """`frames.db` for a video folder or a database path; raises FrameStoreError when it is not a usable file."""
    p = Path(path)
    try:
        st = os.stat(p)
        if stat.S_ISDIR(st.st_mode):
            p = p / DB_NAME
            st = os.stat(p)
    except FileNotFoundError:
        raise FrameStoreError(f"{p}: no such frame store") from None
    except OSError as e:
        raise FrameStoreError(f"{p}: cannot access ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise FrameStoreError(f"{p}: not a file")
    if st.st_size == 0:
        raise FrameStoreError(f"{p}: empty file (0 bytes), not a frame store")
    return p


def _connect_ro(db: Path, immutable: bool, mmap_size: int) -> sqlite3.Connection:
    uri = "file:" + urllib.parse.quote(str(db.absolute())) + "?mode=ro" + ("&immutable=1" if immutable else "")
    try:
        conn = sqlite3.connect(uri, uri=True)
        if mmap_size:
            conn.execute(f"PRAGMA mmap_size={int(mmap_size)}")
    except sqlite3.Error as e:
        raise FrameStoreError(f"{db}: cannot open as SQLite database ({e})") from e
    return conn


@contextlib.contextmanager
def collect_missing_markers(where: str) -> Iterator[None]:
    """Within this block, databases without an `n_frames` marker are not warned about one by one: a single
    summary line naming `where` is logged at the end (a legacy dataset would otherwise log a line per video)."""
    _NO_MARKER.append([])
    try:
        yield
    finally:
        found = _NO_MARKER.pop()
        if found:
            log.warning("%s: %d database(s) have no %s file (legacy dataset2database data or an unfinished "
                        "conversion), e.g. %s; their frame counts come from the databases", where, len(found),
                        N_FRAMES_NAME, found[0], extra=SAME_ON_EVERY_RANK)


def _parse_count(text: str, where: Path) -> int:
    """A frame count read from a marker: a positive integer, else FrameStoreError naming the file."""
    try:
        n = int(text)
    except ValueError:
        raise FrameStoreError(f"{where}: expected one integer, got {text[:40]!r}") from None
    if n < 1:
        raise FrameStoreError(f"{where}: frame count {n} (must be a positive integer)")
    return n


def read_n_frames(video_dir: str | os.PathLike) -> int:
    """Frame count of a converted video: its `n_frames` file, else the database (with a warning)."""
    video_dir = Path(video_dir)
    marker = video_dir / N_FRAMES_NAME
    try:
        text = marker.read_text().strip()
    except FileNotFoundError:
        pass
    else:
        return _parse_count(text, marker)
    reader = open_video(video_dir)
    try:
        return len(reader)
    finally:
        reader.close()


class VideoReader:
    """Random access to the frames of one video stored as `frames.db` (our format or the legacy one).

    Use `open_video` (or `get_reader` for a cached one). `len(v)` frames, `v.read(indices, reduce=1)` returns a
    `(T, H, W, 3)` uint8 RGB array in the order asked (repeats kept), `v.frame_size` is `(H, W)` at full scale.
    """

    def __init__(self, path: str | os.PathLike, immutable: bool = True, mmap_size: int = MMAP_SIZE):
        self.path = _db_path(path)
        self.immutable = immutable
        self.mmap_size = mmap_size
        self._pid = os.getpid()
        self._conn: sqlite3.Connection | None = _connect_ro(self.path, immutable, mmap_size)
        try:
            self._inspect()
        except BaseException:
            self.close()
            raise

    # -- opening -------------------------------------------------------------------------------------------
    def _inspect(self) -> None:
        """Detect the format, read meta and the frame count; build the legacy index map."""
        self._rowids: np.ndarray | None = None
        self.legacy = False
        try:
            # Fast path (one query fewer per open): our format always has a meta table.
            self.meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.OperationalError:
            self.meta = self._inspect_other()
        except sqlite3.DatabaseError as e:
            raise FrameStoreError(f"{self.path}: not an SQLite database ({e})") from e
        # Databases written before checksums existed (or by other tools) are read unverified.
        self.checksummed = not self.legacy and self.meta.get("checksum") == CHECKSUM
        if not self.legacy:
            self._n = self._count_ours()
        if self._n == 0:
            raise FrameStoreError(f"{self.path}: frame store holds no frames")
        self._check_marker()
        self._size: tuple[int, int] | None = None
        if "width" in self.meta and "height" in self.meta:
            self._size = (int(self.meta["height"]), int(self.meta["width"]))

    def _inspect_other(self) -> dict[str, str]:
        """No meta table: a hand-made `frames` table or the legacy `Images` table; else not a frame store."""
        try:
            tables = dict(self._conn.execute("SELECT name, type FROM sqlite_master").fetchall())
        except sqlite3.DatabaseError as e:
            raise FrameStoreError(f"{self.path}: not an SQLite database ({e})") from e
        if tables.get("frames") == "table":
            return {}
        if tables.get("Images") == "table":
            self.legacy = True
            self._n = self._index_legacy()
            return {"format": "legacy-dataset2database"}
        raise FrameStoreError(f"{self.path}: not a frame store (no 'frames' or 'Images' table)")

    def _count_ours(self) -> int:
        try:
            lo, hi = self._conn.execute("SELECT min(idx), max(idx) FROM frames").fetchone()
        except sqlite3.DatabaseError as e:
            raise FrameStoreError(f"{self.path}: unreadable frames table ({e})") from e
        if not all(v is None or isinstance(v, int) for v in (lo, hi)):
            raise FrameStoreError(f"{self.path}: frames table holds {type(hi).__name__} frame numbers, not integers "
                                  "(not written by tools.convert)")
        rows_span = 0 if hi is None else hi + 1
        if lo is not None and lo < 0:
            raise FrameStoreError(f"{self.path}: negative frame index {lo}")
        if "n_frames" not in self.meta:
            # Never written by our converter (meta goes in the same transaction); a hand-made database.
            (count,) = self._conn.execute("SELECT count(*) FROM frames").fetchone()
            if count != rows_span:
                raise FrameStoreError(f"{self.path}: frames table has {count} rows for indices 0..{rows_span - 1}")
            log.warning("%s: no n_frames in meta; counted %d rows", self.path, count)
            return count
        n = _parse_count(self.meta["n_frames"], self.path)
        if rows_span < n:
            raise FrameStoreError(f"{self.path}: incomplete, {rows_span} frames stored but n_frames is {n}")
        # Complete means every index 0..n-1 is there: a deleted row leaves max(idx) alone but not the count.
        (present,) = self._conn.execute("SELECT count(*) FROM frames WHERE idx < ?", (n,)).fetchone()
        if present != n:
            have = {i for (i,) in self._conn.execute("SELECT idx FROM frames WHERE idx < ?", (n,))}
            gaps = [i for i in range(n) if i not in have][:5]
            raise FrameStoreError(f"{self.path}: incomplete, {n - present} of frames 0..{n - 1} missing "
                                  f"(first: {gaps})")
        return n

    def _index_legacy(self) -> int:
        """Map frame index -> rowid, ordering the ObjId suffixes numerically."""
        try:
            rows = self._conn.execute("SELECT rowid, ObjId FROM Images").fetchall()
        except sqlite3.DatabaseError as e:
            raise FrameStoreError(f"{self.path}: unreadable Images table ({e})") from e
        numbers, rowids = [], []
        for rowid, obj_id in rows:
            m = _LEGACY_NUMBER.search(str(obj_id))
            if m is None:
                raise FrameStoreError(f"{self.path}: ObjId {obj_id!r} has no frame number suffix")
            numbers.append(int(m.group(1)))
            rowids.append(rowid)
        order = np.argsort(np.asarray(numbers, dtype=np.int64), kind="stable")
        sorted_numbers = np.asarray(numbers, dtype=np.int64)[order]
        if len(sorted_numbers) > 1 and np.any(np.diff(sorted_numbers) == 0):
            dup = int(sorted_numbers[np.flatnonzero(np.diff(sorted_numbers) == 0)[0]])
            raise FrameStoreError(f"{self.path}: frame number {dup} appears twice in Images")
        self._rowids = np.asarray(rowids, dtype=np.int64)[order]
        return len(rows)

    def _check_marker(self) -> None:
        marker = self.path.parent / N_FRAMES_NAME
        try:
            text = marker.read_text().strip()
        except FileNotFoundError:
            if _NO_MARKER:
                _NO_MARKER[-1].append(str(self.path))
                return
            # Once per file and process: a dataset without markers would otherwise log on every reopen.
            level = logging.DEBUG if str(self.path) in _WARNED else logging.WARNING
            _WARNED.add(str(self.path))
            log.log(level, "%s: no %s file next to it (conversion unfinished or legacy data); using the "
                    "database's own count (%d)", self.path, N_FRAMES_NAME, self._n)
            return
        except OSError as e:
            raise FrameStoreError(f"{marker}: unreadable ({e})") from e
        expected = _parse_count(text, marker)
        if expected > self._n:
            raise FrameStoreError(f"{self.path}: incomplete, {self._n} frames stored but {marker} says {expected}")
        # A marker smaller than the database means the marker wins: never hand out frames the dataset did not count.
        self._n = expected

    # -- connection ----------------------------------------------------------------------------------------
    @property
    def _connection(self) -> sqlite3.Connection:
        if self._pid != os.getpid():
            # Inherited through fork: never use (nor close) the parent's connection here.
            if self._conn is not None:
                _INHERITED.append(self._conn)
            self._conn = None
            self._pid = os.getpid()
        if self._conn is None:
            self._conn = _connect_ro(self.path, self.immutable, self.mmap_size)
        return self._conn

    def close(self) -> None:
        """Close the connection (only in the process that opened it)."""
        if self._conn is not None:
            if self._pid == os.getpid():
                self._conn.close()
            else:
                _INHERITED.append(self._conn)
            self._conn = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"VideoReader({str(self.path)!r}, n_frames={self._n}, legacy={self.legacy})"

    @property
    def frame_size(self) -> tuple[int, int]:
        """(H, W) of the stored frames at full scale."""
        if self._size is None:
            first = self._fetch([0])[0]
            img = self._decode(first[1], 0, 1)
            self._size = img.shape[:2]
        return self._size

    def _fetch(self, unique: list[int]) -> list[tuple[int, bytes]]:
        """(frame index, blob) rows for sorted unique frame indices, in one indexed query (chunked if huge)."""
        conn = self._connection
        rows: list[tuple[int, bytes]] = []
        for start in range(0, len(unique), _MAX_VARS):
            chunk = unique[start:start + _MAX_VARS]
            marks = ",".join("?" * len(chunk))
            try:
                if self.checksummed:
                    got = self._verified(conn.execute(
                        f"SELECT idx, jpeg, {CHECKSUM} FROM frames WHERE idx IN ({marks})", chunk).fetchall())
                elif self._rowids is None:
                    got = conn.execute(f"SELECT idx, jpeg FROM frames WHERE idx IN ({marks})", chunk).fetchall()
                else:
                    keys = self._rowids[chunk].tolist()
                    back = dict(zip(keys, chunk))
                    got = [(back[r], blob) for r, blob in conn.execute(
                        f"SELECT rowid, frames FROM Images WHERE rowid IN ({marks})", keys).fetchall()]
            except sqlite3.DatabaseError as e:
                raise FrameStoreError(f"{self.path}: read failed ({e})") from e
            rows.extend(got)
        if len(rows) != len(unique):
            missing = sorted(set(unique) - {i for i, _ in rows})
            raise FrameStoreError(f"{self.path}: frame(s) {missing[:5]} missing from the database")
        return rows

    def _verified(self, rows: list[tuple[int, Any, Any]]) -> list[tuple[int, Any]]:
        """(idx, blob) rows whose blob matches its stored checksum; FrameStoreError naming the first that does not."""
        for index, blob, crc in rows:
            if isinstance(blob, bytes) and frame_checksum(blob) != crc:
                raise FrameStoreError(_with_repair(f"{self.path}: frame {index} fails its checksum (the stored JPEG "
                                                   "bytes were changed after conversion)", self.path))
        return [(index, blob) for index, blob, _ in rows]

    def _decode(self, blob: bytes | None, index: int, reduce: int) -> np.ndarray:
        img = None
        if blob is not None and not isinstance(blob, bytes):
            raise FrameStoreError(f"{self.path}: frame {index} is stored as {type(blob).__name__}, not as a JPEG "
                                  "blob")
        if blob and blob[:3] != b"\xff\xd8\xff":
            kind = "a PNG image" if blob[:8] == b"\x89PNG\r\n\x1a\n" else "not JPEG data"
            raise FrameStoreError(f"{self.path}: frame {index} is {kind}; frame stores hold JPEG frames only")
        if blob and _truncated_jpeg(blob):
            # libjpeg fills a cut-off scan with grey and only warns: refuse it rather than return a bad frame.
            raise FrameStoreError(f"{self.path}: frame {index} is a truncated JPEG (no end marker; corrupt blob)")
        if blob:
            img = cv2.imdecode(np.frombuffer(blob, dtype=np.uint8), _DECODE_FLAGS[reduce])
        if img is None or img.ndim != 3:
            raise FrameStoreError(f"{self.path}: frame {index} is not a decodable image (corrupt blob)")
        return img

    def read(self, indices: Sequence[int] | np.ndarray, reduce: int = 1) -> np.ndarray:
        """Frames at `indices` (any order, repeats kept) as a `(T, H, W, 3)` uint8 RGB array.

        `reduce` in (1, 2, 4, 8) decodes at 1/reduce scale in the DCT domain: `(ceil(H/r), ceil(W/r))`.
        """
        if reduce not in _DECODE_FLAGS:
            raise ValueError(f"reduce must be one of {REDUCE_FACTORS}, got {reduce}")
        idx = np.asarray(indices, dtype=np.int64).reshape(-1).tolist()
        if not idx:
            raise ValueError("read() needs at least one frame index")
        lo, hi = min(idx), max(idx)
        if lo < 0 or hi >= self._n:
            raise FrameStoreError(f"{self.path}: frame index {lo if lo < 0 else hi} out of range [0, {self._n})")
        # First output position of every distinct frame: each is fetched and decoded once, repeats are copies.
        first: dict[int, int] = {}
        for pos, frame in enumerate(idx):
            first.setdefault(frame, pos)
        rows = self._fetch(sorted(first))
        h, w = self.frame_size
        oh, ow = -(-h // reduce), -(-w // reduce)
        out = np.empty((len(idx), oh, ow, 3), dtype=np.uint8)
        for frame, blob in rows:
            img = self._decode(blob, frame, reduce)
            if img.shape[0] != oh or img.shape[1] != ow:
                raise FrameStoreError(f"{self.path}: frame {frame} is {img.shape[1]}x{img.shape[0]}, expected "
                                      f"{ow}x{oh} (reduce={reduce})")
            if DECODES_RGB:
                out[first[frame]] = img
            else:
                cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=out[first[frame]])
        if len(first) != len(idx):
            for pos, frame in enumerate(idx):
                if first[frame] != pos:
                    out[pos] = out[first[frame]]
        return out


def open_video(path: str | os.PathLike, immutable: bool = True) -> VideoReader:
    """Open a video folder (or its `frames.db`) for reading. Raises FrameStoreError on bad input."""
    return VideoReader(path, immutable=immutable)


class ReaderCache:
    """Per-process LRU of open readers keyed by path; after a fork it starts afresh (never reuses a connection)."""

    def __init__(self, max_open: int = 64, immutable: bool = True):
        if max_open < 1:
            raise ValueError("max_open must be >= 1")
        self.max_open = max_open
        self.immutable = immutable
        self._pid = os.getpid()
        self._readers: OrderedDict[str, VideoReader] = OrderedDict()

    def get(self, path: str | os.PathLike) -> VideoReader:
        """The cached reader for `path`, opening it on first use in this process."""
        if self._pid != os.getpid():
            for reader in self._readers.values():
                reader.close()  # parks the inherited connection without closing it
            self._readers = OrderedDict()
            self._pid = os.getpid()
        key = os.fspath(path)
        reader = self._readers.get(key)
        if reader is not None:
            self._readers.move_to_end(key)
            return reader
        reader = open_video(path, immutable=self.immutable)
        self._readers[key] = reader
        while len(self._readers) > self.max_open:
            _, old = self._readers.popitem(last=False)
            old.close()
        return reader

    def clear(self) -> None:
        """Close every reader this process opened."""
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def __len__(self) -> int:
        return len(self._readers)


_DEFAULT_CACHE = ReaderCache()


def get_reader(path: str | os.PathLike) -> VideoReader:
    """A reader from the module's default per-process cache (64 open databases)."""
    return _DEFAULT_CACHE.get(path)


def close_cached_readers() -> None:
    """Close every reader of the default per-process cache (the next read opens and maps the file again)."""
    _DEFAULT_CACHE.clear()


# -- writing ---------------------------------------------------------------------------------------------------
def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def write_frames_db(video_dir: str | os.PathLike, jpeg_frames: Iterable[bytes], meta: dict[str, Any],
                    page_size: int | None = None) -> int:
    """Write `video_dir/frames.db` atomically from encoded frames; returns the frame count.

    The frames go into `frames.db.tmp` in one transaction; the row count is verified, the file renamed into
    place, and the `n_frames` marker written last. Any previous marker is removed first, so a run killed at any
    point never leaves a video that looks complete. `meta` values are stored as text; `format_version`,
    `n_frames`, `video_id` (and `width`/`height` if absent, from the first frame) are filled in here.
    `page_size` defaults to `PAGE_SIZE`.
    """
    page_size = int(page_size or PAGE_SIZE)
    if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        raise ValueError(f"page_size must be a power of two in 512..65536, got {page_size}")
    video_dir = Path(video_dir)
    video_dir.mkdir(parents=True, exist_ok=True)
    final, tmp, marker = video_dir / DB_NAME, video_dir / TMP_NAME, video_dir / N_FRAMES_NAME
    _remove(marker)
    _remove(tmp)
    video_id = str(meta.get("video_id", video_dir.name))
    quoted_id = video_id.replace("'", "''")
    renamed = False
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        # Set before any table exists; journal off because a half-written temp file is discarded anyway.
        conn.execute(f"PRAGMA page_size={page_size}")
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        conn.execute(f"CREATE TABLE frames(idx INTEGER PRIMARY KEY, jpeg BLOB NOT NULL, {CHECKSUM} INTEGER NOT NULL)")
        conn.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)")
        conn.execute(f"CREATE VIEW Images(ObjId, frames) AS SELECT '{quoted_id}' || printf('/frame_%05d', idx + 1), "
                     "jpeg FROM frames")
        first: list[bytes] = []

        def rows():
            for i, blob in enumerate(jpeg_frames):
                if not blob:
                    raise FrameStoreError(f"{final}: frame {i} is empty")
                if i == 0:
                    first.append(bytes(blob))
                yield i, blob, frame_checksum(blob)

        conn.executemany(f"INSERT INTO frames(idx, jpeg, {CHECKSUM}) VALUES (?, ?, ?)", rows())
        count, top = conn.execute("SELECT count(*), max(idx) FROM frames").fetchone()
        if count == 0:
            raise FrameStoreError(f"{final}: no frames to write")
        if top != count - 1:
            raise FrameStoreError(f"{final}: verification failed, {count} rows but last index {top}")
        full = {str(k): str(v) for k, v in meta.items()}
        if "width" not in full or "height" not in full:
            img = cv2.imdecode(np.frombuffer(first[0], dtype=np.uint8), cv2.IMREAD_COLOR)
            if img is None:
                raise FrameStoreError(f"{final}: frame 0 is not a decodable image")
            full.setdefault("height", str(img.shape[0]))
            full.setdefault("width", str(img.shape[1]))
        full.update(format_version=str(FORMAT_VERSION), video_id=video_id, checksum=CHECKSUM)
        full.pop("n_frames", None)
        conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", sorted(full.items()))
        conn.execute("INSERT INTO meta(key, value) VALUES ('n_frames', ?)", (str(count),))
        conn.execute("COMMIT")
        conn.close()
        replace_durably(tmp, final)
        renamed = True
        atomic_write_text(marker, f"{count}\n")
        return count
    finally:
        conn.close()
        if not renamed:
            _remove(tmp)
