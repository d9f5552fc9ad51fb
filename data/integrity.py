"""Deep check of one converted video: SQLite integrity, rows, index continuity, checksums and the marker.

`check_video(video_dir)` reads every row of the database (not just the frames a clip needs, as the reader does)
and returns the problems found, each a one-line string; an empty list means the video is sound. It never
raises for a bad database. `decode=True` also decodes every frame (slower: catches frames of databases that
predate checksums and that libjpeg cannot decode at all).
"""
from __future__ import annotations

import os
import re
import sqlite3
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from data.store import CHECKSUM, DB_NAME, N_FRAMES_NAME, TMP_NAME, frame_checksum

__all__ = ["VideoCheck", "check_video"]

_MAX_LISTED = 5
_LEGACY_NUMBER = re.compile(r"(\d+)\s*$")  # dataset2database ObjIds end in the 1-based frame number


@dataclass(frozen=True)
class VideoCheck:
    """Outcome of `check_video`: problems (empty when sound), frames seen, and whether checksums were verified."""

    video_dir: Path
    problems: tuple[str, ...] = ()
    frames: int = 0
    checksummed: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems


def _frame_problem(index: int, blob: object, crc: object, checksummed: bool, decode: bool) -> str | None:
    if not isinstance(blob, bytes):
        return f"frame {index} is stored as {type(blob).__name__}, not as a JPEG blob"
    if blob[:3] != b"\xff\xd8\xff":
        return f"frame {index} is not JPEG data"
    if checksummed and frame_checksum(blob) != crc:
        return f"frame {index} fails its checksum"
    if blob.rstrip(b"\0")[-2:] != b"\xff\xd9":
        return f"frame {index} is a truncated JPEG (no end marker)"
    if decode and cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR) is None:
        return f"frame {index} cannot be decoded"
    return None


def _marker(video_dir: Path) -> tuple[int | None, str | None]:
    path = video_dir / N_FRAMES_NAME
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as e:
        return None, f"{N_FRAMES_NAME} unreadable ({e})"
    try:
        n = int(text)
    except ValueError:
        return None, f"{N_FRAMES_NAME} holds {text[:40]!r}, not a frame count"
    if n < 1:
        return None, f"{N_FRAMES_NAME} holds {n}, not a positive frame count"
    return n, None


def _rows(conn: sqlite3.Connection, legacy: bool, checksummed: bool):
    """(0-based index, blob, checksum) of every row, in index order."""
    if legacy:
        rows = conn.execute("SELECT ObjId, frames FROM Images").fetchall()
        out = []
        for obj_id, blob in rows:
            m = _LEGACY_NUMBER.search(str(obj_id))
            out.append((int(m.group(1)) - 1 if m else -1, blob, None))
        return sorted(out, key=lambda r: r[0])
    column = CHECKSUM if checksummed else "NULL"
    return conn.execute(f"SELECT idx, jpeg, {column} FROM frames ORDER BY idx")


def check_video(video_dir: str | os.PathLike, decode: bool = False) -> VideoCheck:
    """Every problem of one converted video folder (see the module docstring)."""
    video_dir = Path(video_dir)
    db = video_dir / DB_NAME
    problems: list[str] = []
    notes: list[str] = []
    marker, marker_problem = _marker(video_dir)
    if marker_problem:
        problems.append(marker_problem)
    if (video_dir / TMP_NAME).exists():
        notes.append(f"{TMP_NAME} left by an interrupted conversion")
    if not db.is_file():
        problems.append(f"no {DB_NAME}" if not db.exists() else f"{DB_NAME} is not a regular file")
        return VideoCheck(video_dir, tuple(problems), notes=tuple(notes))
    if marker is None and not marker_problem:
        problems.append(f"no {N_FRAMES_NAME} marker (conversion unfinished)")
    uri = "file:" + urllib.parse.quote(str(db.absolute())) + "?mode=ro"
    frames, checksummed = 0, False
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as e:
        return VideoCheck(video_dir, (*problems, f"cannot open as SQLite database ({e})"), notes=tuple(notes))
    try:
        (status,) = conn.execute("PRAGMA integrity_check(1)").fetchone()
        if status != "ok":
            problems.append(f"SQLite integrity check failed: {status}")
        tables = dict(conn.execute("SELECT name, type FROM sqlite_master").fetchall())
        legacy = tables.get("frames") != "table" and tables.get("Images") == "table"
        if tables.get("frames") != "table" and not legacy:
            problems.append("not a frame store (no 'frames' or 'Images' table)")
            return VideoCheck(video_dir, tuple(problems), notes=tuple(notes))
        meta = {} if legacy or tables.get("meta") != "table" else dict(conn.execute("SELECT key, value FROM meta"))
        checksummed = meta.get("checksum") == CHECKSUM
        if not checksummed:
            notes.append("no checksums (converted before they existed, or legacy data)")
        bad_frames: list[str] = []
        indices: list[int] = []
        for index, blob, crc in _rows(conn, legacy, checksummed):
            if not isinstance(index, int):
                problems.append(f"the frames table holds {type(index).__name__} frame numbers, not integers (not "
                                "written by tools.convert)")
                return VideoCheck(video_dir, tuple(problems), notes=tuple(notes))
            indices.append(index)
            problem = _frame_problem(index, blob, crc, checksummed, decode)
            if problem:
                bad_frames.append(problem)
        frames = len(indices)
        if bad_frames:
            more = f" (and {len(bad_frames) - _MAX_LISTED} more)" if len(bad_frames) > _MAX_LISTED else ""
            problems.append("; ".join(bad_frames[:_MAX_LISTED]) + more)
        problems.extend(_count_problems(indices, meta, marker))
    except sqlite3.DatabaseError as e:
        problems.append(f"unreadable database ({e})")
    finally:
        conn.close()
    return VideoCheck(video_dir, tuple(problems), frames, checksummed, tuple(notes))


def _count_problems(indices: list[int], meta: dict[str, str], marker: int | None) -> list[str]:
    """Index continuity (every 0..n-1 once) and agreement of rows, meta's n_frames and the marker."""
    problems = []
    n = len(indices)
    if n == 0:
        return ["the database holds no frames"]
    have = set(indices)
    if len(have) != n:
        problems.append("a frame index appears twice")
    gaps = [i for i in range(max(n, max(indices) + 1)) if i not in have]
    if gaps or min(indices) < 0:
        problems.append(f"frame indices are not continuous from 0: missing {gaps[:_MAX_LISTED]}")
    if "n_frames" in meta and meta["n_frames"] != str(n):
        problems.append(f"meta says {meta['n_frames']} frames, the database holds {n}")
    if marker is not None and marker != n:
        problems.append(f"{N_FRAMES_NAME} says {marker} frames, the database holds {n}")
    return problems
