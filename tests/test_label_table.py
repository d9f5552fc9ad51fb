"""The label table cache: same table as parsing, rebuilt whenever the CSV or the index changes."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from data.columns import StringColumn, read_label_columns
from data.dataset import VideoDataset
from data.index import refresh_index
from data.label_table import cache_path, open_label_table, warm_label_caches
from data.labels import LabelError
from tools.synthetic import build_layout


@pytest.fixture()
def root(tmp_path):
    r = tmp_path / "ds"
    build_layout(r, 60, 4)
    return r


def _same(a, b) -> None:
    assert a.label_names == b.label_names
    assert np.array_equal(a.label_codes, b.label_codes)
    assert np.array_equal(a.split_codes, b.split_codes)
    assert list(a.video_ids) == list(b.video_ids)
    assert np.array_equal(a.index_counts, b.index_counts)
    assert a.class_mtimes == b.class_mtimes


def test_second_open_comes_from_the_cache_and_equals_parsing(root):
    csv = root / "labels" / "all.csv"
    first = open_label_table(root, csv)
    assert not first.cached and cache_path(root, csv).is_file()
    second = open_label_table(root, csv)
    assert second.cached
    _same(first, second)
    parsed = read_label_columns(csv)
    assert list(second.video_ids) == parsed.video_ids
    assert (second.index_counts > 0).all()  # every video of the layout is indexed


def test_dataset_from_the_cache_equals_a_dataset_parsed_without_it(root):
    cold = VideoDataset(root, split="train")
    assert cache_path(root, root / "labels" / "all.csv").is_file()
    warm = VideoDataset(root, split="train")
    assert list(warm.samples) == list(cold.samples)
    assert warm.labels == cold.labels and warm.n_frames == cold.n_frames
    assert list(warm.video_dirs) == list(cold.video_dirs)
    val = VideoDataset(root, split="val")  # another split from the same cache
    assert len(val.samples) + len(warm.samples) == 60


def test_a_rewritten_csv_of_the_same_size_and_mtime_is_parsed_again(root):
    csv = root / "labels" / "all.csv"
    open_label_table(root, csv)
    st = csv.stat()
    text = csv.read_text(encoding="utf-8")
    header, *rows = text.splitlines(keepends=True)
    reordered = header + "".join(reversed(rows))  # same bytes, another order: same size
    assert len(reordered) == len(text) and reordered != text
    csv.write_text(reordered, encoding="utf-8")
    os.utime(csv, ns=(st.st_atime_ns, st.st_mtime_ns))
    table = open_label_table(root, csv)
    assert not table.cached
    assert list(table.video_ids) == read_label_columns(csv).video_ids


def test_an_index_change_redoes_only_the_join(root):
    csv = root / "labels" / "all.csv"
    before = open_label_table(root, csv)
    video = root / "jpg" / before.label_names[0] / before.video_ids[0]
    (video / "n_frames").write_text("7\n")
    (video / "frames.db").write_bytes(b"")  # the index needs a database to list the video: make it unreadable
    refresh_index(root)  # drops the video: its "database" is not a frame store
    after = open_label_table(root, csv)
    assert not after.cached
    assert after.index_counts[0] == 0 and before.index_counts[0] > 0
    assert open_label_table(root, csv).cached


def test_a_damaged_cache_file_is_rebuilt(root):
    csv = root / "labels" / "all.csv"
    good = open_label_table(root, csv)
    cache_path(root, csv).write_bytes(b"PK\x03\x04 not really a zip")
    table = open_label_table(root, csv)
    assert not table.cached
    _same(good, table)
    assert open_label_table(root, csv).cached


def test_a_root_where_the_cache_cannot_be_written_still_opens(root):
    (root / ".cache").write_text("a file where the cache folder would go")
    ds = VideoDataset(root, split="train")
    assert len(ds.samples) == 54


def test_a_class_folder_changed_after_caching_falls_back_to_its_markers(root, caplog):
    csv = root / "labels" / "all.csv"
    VideoDataset(root, split=None)
    table = open_label_table(root, csv)
    assert table.cached
    label, video_id = table.label_names[int(table.label_codes[3])], table.video_ids[3]
    video = root / "jpg" / label / video_id
    (video / "n_frames").write_text("5\n")
    (root / "jpg" / label / "new_video").mkdir()  # changes the class folder's mtime, as a copy would
    with caplog.at_level(logging.WARNING, logger="data.dataset"):
        ds = VideoDataset(root, split=None)
    assert ds.n_frames[3] == 5
    assert "not in the index or in class folders changed" in caplog.text


def test_a_csv_with_a_byte_order_mark_reads_like_one_without(root):
    csv = root / "labels" / "all.csv"
    plain = open_label_table(root, csv, use_cache=False)
    bom = root / "labels" / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes())
    _same(plain, open_label_table(root, bom))


def test_a_malformed_csv_is_the_same_error_with_or_without_a_cache(root):
    bad = root / "labels" / "bad.csv"
    bad.write_text("label,video_id,time_start,time_end,split\na,v1,,,train\nb,v2,,,holdout\n", encoding="utf-8")
    for _ in range(2):
        with pytest.raises(LabelError, match=r"bad.csv:3: split 'holdout' is not one of"):
            open_label_table(root, bad)
    assert not cache_path(root, bad).exists()
    assert warm_label_caches(root) == 1  # all.csv built, bad.csv skipped with a warning


def test_string_column_select_keeps_the_masked_strings_in_order():
    col = StringColumn(["a", "bé", "", "ccc", "dd"])
    mask = np.array([True, False, True, True, False])
    assert list(col.select(mask)) == ["a", "", "ccc"]
    assert list(col.select(np.zeros(5, bool))) == []
    rebuilt = StringColumn.from_arrays(col.buffer, col.offsets)
    assert list(rebuilt) == list(col)
    with pytest.raises(ValueError, match="mask of shape"):
        col.select(np.ones(3, bool))


def test_a_copied_root_keeps_its_label_cache(root, tmp_path):
    import shutil

    open_label_table(root, root / "labels" / "all.csv")
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)  # copy2: file and folder times kept, as cp -p and rsync -a do
    assert open_label_table(copy, copy / "labels" / "all.csv").cached
    assert len(VideoDataset(copy, split="train").samples) == 54
