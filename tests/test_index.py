"""The dataset index: build, refresh, stale detection, and a dataset opened from it equal to one from markers."""
from __future__ import annotations

import logging
import os
import shutil
import sqlite3

import numpy as np
import pytest

from data import dataset as dataset_module
from data.columns import IntColumn, StringColumn, read_label_columns
from data.dataset import VideoDataset
from data.index import index_path, load_index, read_all, refresh_index
from data.labels import LabelError, Sample, write_classes, write_labels
from data.store import FrameStoreError, write_frames_db
from tests.videos_util import make_legacy_store, make_store
from tools import index as index_cli

VIDEOS = [("walk", "w1", 12, "train"), ("walk", "w2", 7, "val"), ("run", "r1", 9, "train"),
          ("run", "r 2 (café)", 5, "train")]


def make_root(tmp_path, videos=VIDEOS):
    root = tmp_path / "ds"
    for label, vid, n, _ in videos:
        make_store(root / "jpg" / label / vid, n_frames=n, height=16, width=24)
    write_labels(root / "labels" / "all.csv", [Sample(v, lb, s) for lb, v, _, s in videos])
    write_classes(root / "classes.txt", sorted({v[0] for v in videos}))
    return root


def test_refresh_indexes_complete_videos_legacy_ones_and_skips_unfinished(tmp_path):
    root = make_root(tmp_path)
    make_legacy_store(root / "jpg" / "run" / "legacy", n_frames=6, height=16, width=24)
    unfinished = root / "jpg" / "walk" / "unfinished"
    make_store(unfinished, n_frames=4)
    (unfinished / "n_frames").unlink()  # as a converter killed before its marker
    stats = refresh_index(root)
    assert (stats.read, stats.kept, stats.removed, stats.incomplete) == (5, 0, 0, 1)
    rows = {(e.label, e.video_id): e for e in read_all(root)}
    assert set(rows) == {(lb, v) for lb, v, _, _ in VIDEOS} | {("run", "legacy")}
    w1 = rows[("walk", "w1")]
    assert (w1.n_frames, w1.height, w1.width, w1.fps) == (12, 16, 24, 25.0)
    assert w1.bytes == (root / "jpg" / "walk" / "w1" / "frames.db").stat().st_size
    assert rows[("run", "legacy")].n_frames == 6 and rows[("run", "legacy")].height == 16


def test_refresh_rereads_only_changed_databases_and_drops_removed_ones(tmp_path):
    root = make_root(tmp_path)
    refresh_index(root)
    assert refresh_index(root).kept == 4
    make_store(root / "jpg" / "walk" / "w1", n_frames=20, height=16, width=24)  # rewritten with more frames
    shutil.rmtree(root / "jpg" / "run" / "r1")
    stats = refresh_index(root)
    assert (stats.kept, stats.read, stats.removed) == (2, 1, 1)
    rows = {(e.label, e.video_id): e.n_frames for e in read_all(root)}
    assert rows[("walk", "w1")] == 20 and ("run", "r1") not in rows


def test_refresh_leaves_out_a_corrupt_database_with_a_warning(tmp_path, caplog):
    root = make_root(tmp_path)
    (root / "jpg" / "run" / "r1" / "frames.db").write_bytes(b"not sqlite at all" * 10)
    with caplog.at_level(logging.WARNING):
        stats = refresh_index(root)
    assert stats.read == 3 and "r1" in caplog.text
    assert ("run", "r1") not in {(e.label, e.video_id) for e in read_all(root)}


@pytest.mark.parametrize("split", ["train", "val", None])
def test_dataset_from_index_equals_dataset_from_markers(tmp_path, split, monkeypatch):
    root = make_root(tmp_path)
    from_markers = VideoDataset(root, split=split, clip_length=4, frame_interval=1)
    refresh_index(root)

    def no_marker_reads(video_dir):
        raise AssertionError(f"read a marker although the index is fresh: {video_dir}")

    monkeypatch.setattr(dataset_module, "read_n_frames", no_marker_reads)
    from_index = VideoDataset(root, split=split, clip_length=4, frame_interval=1)
    assert list(from_index.samples) == list(from_markers.samples) and len(from_index.samples) > 0
    assert from_index.labels == list(from_markers.labels) and from_index.n_frames == list(from_markers.n_frames)
    assert list(from_index.video_dirs) == list(from_markers.video_dirs)
    assert isinstance(from_index.n_frames.array, np.ndarray) and from_index.n_frames.array.dtype == np.int64
    clip, label, video = from_index[0]
    assert clip.shape[1] == 4 and label == from_markers.labels[0] and video == 0


def test_stale_class_falls_back_to_markers_with_one_warning(tmp_path, caplog):
    root = make_root(tmp_path)
    refresh_index(root)
    make_store(root / "jpg" / "walk" / "w3", n_frames=11, height=16, width=24)  # added behind the index's back
    write_labels(root / "labels" / "all.csv", [Sample(v, lb, s) for lb, v, _, s in VIDEOS]
                 + [Sample("w3", "walk", "train")])
    with caplog.at_level(logging.WARNING, logger="data.dataset"):
        ds = VideoDataset(root, split="train", clip_length=4, frame_interval=1)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "walk" in warnings[0].getMessage() and "tools.index" in warnings[0].getMessage()
    assert dict(zip((s.video_id for s in ds.samples), ds.n_frames)) == {"w1": 12, "r1": 9, "r 2 (café)": 5,
                                                                          "w3": 11}
    refresh_index(root)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="data.dataset"):
        VideoDataset(root, split="train", clip_length=4, frame_interval=1)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_video_missing_from_disk_and_index_is_a_clear_error(tmp_path):
    root = make_root(tmp_path)
    refresh_index(root)
    write_labels(root / "labels" / "all.csv", [Sample("nowhere", "walk", "train")])
    with pytest.raises(FrameStoreError, match="not in .*walk/nowhere"):
        VideoDataset(root, split="train")


def test_video_removed_after_opening_is_a_clear_error_when_read(tmp_path):
    root = make_root(tmp_path)
    refresh_index(root)
    ds = VideoDataset(root, split="train", clip_length=4, frame_interval=1)
    shutil.rmtree(root / "jpg" / "walk" / "w1")
    with pytest.raises(FrameStoreError, match="w1: video of .*all.csv was removed after the dataset was opened"):
        ds[0]


def test_unreadable_index_names_the_file_and_the_fix(tmp_path):
    root = make_root(tmp_path)
    index_path(root).write_bytes(b"garbage" * 100)
    with pytest.raises(FrameStoreError, match=r"index.db: cannot read the dataset index .*--rebuild"):
        load_index(root)


def test_index_cli_indexes_a_legacy_root_and_refuses_a_non_root(tmp_path, capsys):
    root = tmp_path / "legacy"
    for i in range(3):
        make_legacy_store(root / "jpg" / "jump" / f"j{i}", n_frames=5 + i, height=16, width=24)
    assert index_cli.main([str(root)]) == 0
    assert "3 videos (0 unchanged, 3 read, 0 removed" in capsys.readouterr().out
    assert [e.n_frames for e in read_all(root)] == [5, 6, 7]
    with pytest.raises(SystemExit) as exc:
        index_cli.main([str(tmp_path / "nothing")])
    assert exc.value.code == 2 and "not a dataset root" in capsys.readouterr().err


def test_label_columns_reject_a_bad_video_id_naming_the_line(tmp_path):
    path = tmp_path / "all.csv"
    path.write_text("label,video_id,time_start,time_end,split\nwalk,a,,,train\nwalk,../up,,,train\n")
    with pytest.raises(LabelError, match=r"all.csv:3: video id '../up'"):
        read_label_columns(path)
    path.write_text("label,video_id,time_start,time_end,split\nwalk,a,,,train\nwalk,b,,,later\n")
    with pytest.raises(LabelError, match=r"all.csv:3: split 'later'"):
        read_label_columns(path)


def test_columns_behave_like_the_lists_they_replace():
    names = StringColumn(["a", "é b", "", "long name"])
    assert list(names) == ["a", "é b", "", "long name"] and names[-1] == "long name" and names[1:3] == ["é b", ""]
    counts = IntColumn([3, 1, 2])
    assert counts == [3, 1, 2] and counts != [3, 1] and isinstance(counts[0], int) and counts[1:] == [1, 2]
    with pytest.raises(IndexError):
        names[4]


def test_write_frames_db_then_refresh_sees_the_new_frame_count(tmp_path):
    root = make_root(tmp_path)
    refresh_index(root)
    write_frames_db(root / "jpg" / "run" / "r1", [b"\xff\xd8" + b"x" * 50 + b"\xff\xd9"] * 3,
                    {"width": 24, "height": 16})
    refresh_index(root)
    assert {(e.label, e.video_id): e.n_frames for e in read_all(root)}[("run", "r1")] == 3


def test_dataset_pickles_for_spawned_workers(tmp_path):
    import pickle

    root = make_root(tmp_path)
    refresh_index(root)
    ds = VideoDataset(root, split="train", clip_length=4, frame_interval=1)
    copy = pickle.loads(pickle.dumps(ds))
    assert list(copy.samples) == list(ds.samples) and copy.n_frames == list(ds.n_frames)
    assert copy[1][0].shape == ds[1][0].shape


def test_cli_rebuild_rereads_databases_the_quick_check_trusts(tmp_path, capsys):
    """A database edited in place behind the index's back, with its size and mtime put back (a restored backup,
    a copy tool keeping times): the default refresh trusts it, `--rebuild` reads it again."""
    root = make_root(tmp_path)
    assert index_cli.main([str(root)]) == 0
    db = root / "jpg" / "walk" / "w1" / "frames.db"
    before = db.stat()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = '50' WHERE key = 'fps'")
    conn.close()
    os.utime(db, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert db.stat().st_size == before.st_size
    assert index_cli.main([str(root)]) == 0
    assert "(4 unchanged, 0 read, 0 removed" in capsys.readouterr().out
    assert {e.video_id: e.fps for e in read_all(root)}["w1"] == 25.0  # stale, as expected without --rebuild
    assert index_cli.main([str(root), "--rebuild"]) == 0
    assert "(0 unchanged, 4 read, 0 removed" in capsys.readouterr().out
    assert {e.video_id: e.fps for e in read_all(root)}["w1"] == 50.0
