"""Frame-store integrity: per-frame checksums, completeness of 0..n-1, non-JPEG blobs, bad markers, legacy data."""
from __future__ import annotations

import logging
import sqlite3

import cv2
import numpy as np
import pytest

from data import store
from data.store import FrameStoreError, collect_missing_markers, open_video, read_n_frames
from tests.videos_util import make_frames, make_legacy_store, make_store


@pytest.fixture
def video(tmp_path):
    return make_store(tmp_path / "jpg" / "walk" / "v1")


def _blob(video, idx: int) -> bytes:
    with sqlite3.connect(video / "frames.db") as conn:
        return conn.execute("SELECT jpeg FROM frames WHERE idx = ?", (idx,)).fetchone()[0]


def _set_blob(video, idx: int, blob, *, crc: bool = False) -> None:
    conn = sqlite3.connect(video / "frames.db")
    if crc:
        conn.execute("UPDATE frames SET jpeg = ?, crc32 = ? WHERE idx = ?", (blob, store.frame_checksum(blob), idx))
    else:
        conn.execute("UPDATE frames SET jpeg = ? WHERE idx = ?", (blob, idx))
    conn.commit()
    conn.close()


def test_bytes_changed_inside_a_jpeg_fail_the_checksum(video):
    good = _blob(video, 6)
    rng = np.random.default_rng(0)
    middle = len(good) // 2
    bad = good[:middle] + rng.integers(0, 256, 200, dtype=np.uint8).tobytes() + good[middle + 200:]
    assert bad[:2] == b"\xff\xd8" and bad[-2:] == b"\xff\xd9" and len(bad) == len(good)  # markers intact
    # libjpeg alone would hand back a damaged frame here (at most a warning on stderr).
    assert cv2.imdecode(np.frombuffer(bad, np.uint8), cv2.IMREAD_COLOR) is not None
    _set_blob(video, 6, bad)
    v = open_video(video)
    assert v.read([5, 7]).shape[0] == 2  # the other frames still read
    with pytest.raises(FrameStoreError, match=r"v1/frames.db: frame 6 fails its checksum"):
        v.read([5, 6])


def test_database_without_checksums_still_reads(video):
    conn = sqlite3.connect(video / "frames.db")
    conn.execute("DELETE FROM meta WHERE key = 'checksum'")
    conn.execute("ALTER TABLE frames DROP COLUMN crc32")  # as written before checksums existed
    conn.commit()
    conn.close()
    v = open_video(video)
    assert not v.checksummed and v.read([0, 11]).shape == (2, 32, 48, 3)


def test_legacy_reader_sees_the_images_view_unchanged(video):
    conn = sqlite3.connect(video / "frames.db")
    cols = [r[1] for r in conn.execute("PRAGMA table_info(Images)")]
    assert cols == ["ObjId", "frames"]
    (blob,) = conn.execute("SELECT frames FROM Images WHERE ObjId = 'v1/frame_00003'").fetchone()
    assert blob == _blob(video, 2)


def test_png_and_text_blobs_are_rejected_with_the_frame_named(video):
    ok, png = cv2.imencode(".png", make_frames(1, 32, 48)[0])
    _set_blob(video, 2, png.tobytes(), crc=True)
    v = open_video(video)
    with pytest.raises(FrameStoreError, match=r"v1/frames.db: frame 2 is a PNG image; frame stores hold JPEG"):
        v.read([2])
    conn = sqlite3.connect(video / "frames.db")
    conn.execute("UPDATE frames SET jpeg = 'hello' WHERE idx = 3")  # a TEXT value (what a careless script writes)
    conn.commit()
    conn.close()
    with pytest.raises(FrameStoreError, match=r"v1/frames.db: frame 3 is stored as str, not as a JPEG blob"):
        open_video(video).read([3])


def test_a_deleted_row_makes_the_database_incomplete(video):
    conn = sqlite3.connect(video / "frames.db")
    conn.execute("DELETE FROM frames WHERE idx = 5")
    conn.commit()
    conn.close()
    with pytest.raises(FrameStoreError, match=r"incomplete, 1 of frames 0..11 missing \(first: \[5\]\)"):
        open_video(video)


@pytest.mark.parametrize("text", ["-3", "0"])
def test_non_positive_marker_is_a_clear_error(video, text):
    (video / "n_frames").write_text(f"{text}\n")
    with pytest.raises(FrameStoreError, match=rf"v1/n_frames: frame count {text} \(must be a positive integer\)"):
        read_n_frames(video)
    with pytest.raises(FrameStoreError, match="must be a positive integer"):
        open_video(video)


def test_missing_markers_are_summarised_in_one_line(tmp_path, caplog):
    dirs = [make_legacy_store(tmp_path / "jpg" / "c" / f"v{i}", n_frames=3) for i in range(5)]
    for d in dirs:
        (d / "n_frames").unlink()  # as dataset2database leaves them
    with caplog.at_level(logging.DEBUG, logger="data.store"), collect_missing_markers("labels.csv"):
        assert [read_n_frames(d) for d in dirs] == [3] * 5
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("labels.csv: 5 database(s) have no n_frames file") and "v0" in warnings[0]
