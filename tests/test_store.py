"""The SQLite frame store: writer, reader (ours and legacy), reduced decoding, caching across fork, bad input."""
from __future__ import annotations

import logging
import os
import sqlite3

import numpy as np
import pytest

from data import store
from data.store import (
    FrameStoreError,
    ReaderCache,
    VideoReader,
    encode_jpeg,
    get_reader,
    open_video,
    read_n_frames,
    reduce_for,
    write_frames_db,
)
from tests.videos_util import frame_value, frame_values, make_frames, make_legacy_store, make_store


def close_to(values, expected, tol=3):
    return len(values) == len(expected) and all(abs(a - b) <= tol for a, b in zip(values, expected))


@pytest.fixture
def video(tmp_path):
    return make_store(tmp_path / "jpg" / "walk" / "vid one")


def test_roundtrip_order_repeats_and_rgb(video):
    with open_video(video) as v:
        assert len(v) == 12 and v.frame_size == (32, 48) and not v.legacy
        for key in ("format_version", "n_frames", "width", "height", "fps", "codec", "quality", "source"):
            assert key in v.meta
        wanted = [5, 0, 5, 11, 0, 0]
        clip = v.read(wanted)
        assert clip.shape == (6, 32, 48, 3) and clip.dtype == np.uint8 and clip.flags.c_contiguous
        assert close_to(frame_values(clip), [frame_value(i) for i in wanted])
        assert np.array_equal(clip[0], clip[2]) and np.array_equal(clip[1], clip[5])
        # make_frames puts R > G > B: a BGR clip would come out reversed.
        r, g, b = clip[3].reshape(-1, 3).mean(0)
        assert r > g > b
        assert np.array_equal(v.read(np.array([[1, 2]])), v.read([1, 2]))  # any shape of index array


def test_schema_page_size_meta_and_legacy_view(video):
    conn = sqlite3.connect(video / "frames.db")
    assert conn.execute("PRAGMA page_size").fetchone()[0] == store.PAGE_SIZE
    cols = [(r[1], r[2].upper(), r[3], r[5]) for r in conn.execute("PRAGMA table_info(frames)")]
    assert cols == [("idx", "INTEGER", 0, 1), ("jpeg", "BLOB", 1, 0), ("crc32", "INTEGER", 1, 0)]
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    assert meta["n_frames"] == "12" and meta["width"] == "48" and meta["height"] == "32"
    assert meta["format_version"] == str(store.FORMAT_VERSION) and meta["checksum"] == "crc32"
    rows = conn.execute("SELECT ObjId, frames FROM Images ORDER BY ObjId").fetchall()
    assert rows[0][0] == "vid one/frame_00001" and rows[-1][0] == "vid one/frame_00012"
    assert rows[3][1] == conn.execute("SELECT jpeg FROM frames WHERE idx = 3").fetchone()[0]
    assert (video / "n_frames").read_text() == "12\n"
    assert not (video / "frames.db.tmp").exists()


@pytest.mark.parametrize("reduce", [2, 4, 8])
def test_reduced_decode_size_and_content(tmp_path, reduce):
    v = open_video(make_store(tmp_path / "v", n_frames=4, height=33, width=50))
    clip = v.read([2, 1, 2], reduce=reduce)
    assert clip.shape == (3, -(-33 // reduce), -(-50 // reduce), 3)
    assert close_to(frame_values(clip), [frame_value(i) for i in (2, 1, 2)])
    with pytest.raises(ValueError, match="reduce"):
        v.read([0], reduce=3)


def test_reduce_for():
    assert reduce_for((128, 171), None) == 1
    assert reduce_for((128, 171), 64) == 2
    assert reduce_for((256, 340), 60) == 4
    assert reduce_for((128, 171), 200) == 1


@pytest.mark.parametrize("padded", [True, False])
def test_legacy_format_orders_by_number(tmp_path, padded):
    # Unpadded names (frame_9 < frame_10) would sort wrongly as strings; rows are inserted shuffled.
    d = make_legacy_store(tmp_path / "legacy_vid", n_frames=12, padded=padded)
    with open_video(d / "frames.db") as v:
        assert v.legacy and len(v) == 12 and v.frame_size == (32, 48)
        assert close_to(frame_values(v.read(range(12))), [frame_value(i) for i in range(12)])
        assert close_to(frame_values(v.read([11, 8, 9, 11])), [frame_value(i) for i in (11, 8, 9, 11)])
        assert v.read([3], reduce=2).shape == (1, 16, 24, 3)


def test_reader_cache_lru_and_fork(tmp_path, monkeypatch):
    dirs = [make_store(tmp_path / f"v{i}", n_frames=3) for i in range(3)]
    cache = ReaderCache(max_open=2)
    a = cache.get(dirs[0])
    assert cache.get(dirs[0]) is a
    cache.get(dirs[1])
    cache.get(dirs[2])  # evicts dirs[0], the least recently used
    assert len(cache) == 2 and cache.get(dirs[0]) is not a
    assert get_reader(dirs[1]) is get_reader(dirs[1])

    # A pid change (as after fork) must give fresh readers and park, not use or close, the inherited connections.
    reader = cache.get(dirs[2])
    parked = len(store._INHERITED)
    monkeypatch.setattr(store.os, "getpid", lambda: -12345)
    fresh = cache.get(dirs[2])
    assert fresh is not reader and len(store._INHERITED) >= parked + 1
    assert close_to(frame_values(fresh.read([2])), [frame_value(2)])
    monkeypatch.undo()

    # A real fork: the child reads through the inherited cache and reader without touching the parent's.
    reader = cache.get(dirs[0])
    reader.read([0])
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            ok_cache = close_to(frame_values(cache.get(dirs[0]).read([1, 0])), [frame_value(1), frame_value(0)])
            ok_reader = close_to(frame_values(reader.read([2])), [frame_value(2)])
            code = 0 if ok_cache and ok_reader else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert close_to(frame_values(reader.read([1])), [frame_value(1)])  # the parent's connection still works
    cache.clear()


def test_path_with_spaces_unicode_and_uri_characters(tmp_path):
    d = make_store(tmp_path / "jpg" / "café ☕ #1?" / "a%20b", n_frames=2)
    with open_video(d) as v:
        assert close_to(frame_values(v.read([1])), [frame_value(1)])


def test_missing_path_not_sqlite_and_empty_file(tmp_path):
    with pytest.raises(FrameStoreError, match="no such frame store"):
        open_video(tmp_path / "nope")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "frames.db").write_text("this is not a database\n" * 20)
    with pytest.raises(FrameStoreError, match=r"text/frames.db: not an SQLite database"):
        open_video(tmp_path / "text")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "frames.db").write_bytes(b"")
    with pytest.raises(FrameStoreError, match=r"empty/frames.db: empty file \(0 bytes\)"):
        open_video(tmp_path / "empty")
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE x(a)").connection.commit()
    with pytest.raises(FrameStoreError, match="not a frame store"):
        open_video(other)


def test_fewer_rows_than_n_frames(video):
    conn = sqlite3.connect(video / "frames.db")
    conn.execute("DELETE FROM frames WHERE idx >= 10")
    conn.commit()
    conn.close()
    with pytest.raises(FrameStoreError, match=r"vid one/frames.db: incomplete, 10 frames stored but n_frames is 12"):
        open_video(video)


def test_hole_in_frames_is_reported_at_read(video):
    conn = sqlite3.connect(video / "frames.db")
    conn.execute("DELETE FROM frames WHERE idx = 4")
    conn.commit()
    conn.close()
    # Complete means every index 0..n-1: the hole is found when the database is opened, not at the unlucky read.
    with pytest.raises(FrameStoreError, match=r"frames.db: incomplete, 1 of frames 0..11 missing \(first: \[4\]\)"):
        open_video(video)


def test_marker_file_larger_than_database(video):
    (video / "n_frames").write_text("20\n")
    with pytest.raises(FrameStoreError, match="incomplete, 12 frames stored but .*n_frames says 20"):
        open_video(video)
    (video / "n_frames").write_text("twelve\n")
    with pytest.raises(FrameStoreError, match="expected one integer"):
        open_video(video)


def test_missing_n_frames_falls_back_with_warning(video, caplog):
    (video / "n_frames").unlink()
    with caplog.at_level(logging.WARNING, logger="data.store"):
        assert len(open_video(video)) == 12
    assert any("no n_frames file" in r.getMessage() for r in caplog.records)
    assert read_n_frames(video) == 12
    # Neither the marker nor meta's n_frames (a hand-made database): count the rows, with a warning.
    conn = sqlite3.connect(video / "frames.db")
    conn.execute("DELETE FROM meta WHERE key = 'n_frames'")
    conn.commit()
    conn.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="data.store"):
        assert len(open_video(video)) == 12
    assert any("no n_frames in meta" in r.getMessage() for r in caplog.records)


def _replace_blob(conn: sqlite3.Connection, idx: int, blob: bytes) -> None:
    """Overwrite frame `idx` with `blob` and a matching checksum (a consistent but bad frame)."""
    conn.execute("UPDATE frames SET jpeg = ?, crc32 = ? WHERE idx = ?", (blob, store.frame_checksum(blob), idx))


def test_corrupt_and_truncated_jpeg_blob(video):
    conn = sqlite3.connect(video / "frames.db")
    # Checksums updated too: the decoder's own checks are tested here (the checksum test is separate).
    _replace_blob(conn, 3, b"\x00\x01garbage" * 10)
    good = conn.execute("SELECT jpeg FROM frames WHERE idx = 6").fetchone()[0]
    _replace_blob(conn, 7, good[: len(good) // 2])
    _replace_blob(conn, 5, b"\xff\xd8\xff" + b"garbage" * 10 + b"\xff\xd9")  # JPEG markers, no image
    conn.commit()
    conn.close()
    v = open_video(video)
    assert v.read([2, 4]).shape[0] == 2
    with pytest.raises(FrameStoreError, match=r"vid one/frames.db: frame 3 is not JPEG data"):
        v.read([2, 3])
    with pytest.raises(FrameStoreError, match=r"vid one/frames.db: frame 5 is not a decodable image"):
        v.read([5])
    with pytest.raises(FrameStoreError, match=r"vid one/frames.db: frame 7 is a truncated JPEG"):
        v.read([7], reduce=2)


def test_wrong_frame_size_is_refused(video):
    conn = sqlite3.connect(video / "frames.db")
    _replace_blob(conn, 1, encode_jpeg(make_frames(1, 16, 16)[0]))
    conn.commit()
    conn.close()
    with pytest.raises(FrameStoreError, match="frame 1 is 16x16, expected 48x32"):
        open_video(video).read([0, 1])


def test_index_out_of_range_and_empty(video):
    v = open_video(video)
    with pytest.raises(FrameStoreError, match=r"frame index 12 out of range \[0, 12\)"):
        v.read([0, 12])
    with pytest.raises(FrameStoreError, match="frame index -1 out of range"):
        v.read([-1])
    with pytest.raises(ValueError, match="at least one"):
        v.read([])


def test_writer_is_atomic_when_frames_fail(tmp_path, video):
    def broken():
        yield encode_jpeg(make_frames(1)[0])
        raise RuntimeError("decoder died")

    target = tmp_path / "new"
    with pytest.raises(RuntimeError, match="decoder died"):
        write_frames_db(target, broken(), {})
    assert not any((target / n).exists() for n in ("frames.db", "frames.db.tmp", "n_frames"))
    # Rewriting a complete video that then fails leaves it visibly incomplete, never "complete" with old data.
    with pytest.raises(RuntimeError):
        write_frames_db(video, broken(), {})
    assert not (video / "n_frames").exists() and not (video / "frames.db.tmp").exists()
    with pytest.raises(FrameStoreError, match="no frames"):
        write_frames_db(tmp_path / "none", iter([]), {})
    with pytest.raises(FrameStoreError, match="frame 0 is empty"):
        write_frames_db(tmp_path / "blank", iter([b""]), {})
    # A stale temp file from a killed run is replaced.
    (tmp_path / "stale").mkdir()
    (tmp_path / "stale" / "frames.db.tmp").write_bytes(b"half written")
    assert write_frames_db(tmp_path / "stale", (encode_jpeg(f) for f in make_frames(2)), {}) == 2
    assert not (tmp_path / "stale" / "frames.db.tmp").exists() and len(VideoReader(tmp_path / "stale")) == 2


def test_encode_jpeg_validates():
    assert encode_jpeg(make_frames(1)[0], 75)[:2] == b"\xff\xd8"
    with pytest.raises(ValueError, match="quality"):
        encode_jpeg(make_frames(1)[0], 0)
    with pytest.raises(ValueError, match="uint8 RGB"):
        encode_jpeg(np.zeros((4, 4), np.uint8))
