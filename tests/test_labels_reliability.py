"""Label CSVs from careless hands: BOM, latin-1, huge fields, duplicate rows and train/val overlap."""
from __future__ import annotations

import logging

import pytest

from data.labels import LabelError, read_classes, read_labels

HEADER = "label,video_id,time_start,time_end,split\n"


def test_a_utf8_bom_is_accepted(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes(b"\xef\xbb\xbf" + (HEADER + "walk,v1,,,train\n").encode())
    assert [(s.label, s.video_id) for s in read_labels(p)] == [("walk", "v1")]
    c = tmp_path / "classes.txt"
    c.write_bytes(b"\xef\xbb\xbfwalk\nrun\n")
    assert read_classes(c) == ["walk", "run"]


def test_a_latin1_file_is_an_error_naming_it(tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes((HEADER + "caf\xe9,v1,,,train\n").encode("latin-1"))
    with pytest.raises(LabelError, match=r"latin.csv: not UTF-8 text \(byte 0xe9 at offset \d+\); save it as UTF-8"):
        read_labels(p)


def test_a_huge_field_is_an_error_naming_file_and_line(tmp_path):
    p = tmp_path / "huge.csv"
    p.write_text(HEADER + "walk,v1,,,train\n" + '"' + "x" * 200_000 + '",v2,,,train\n')
    with pytest.raises(LabelError, match=r"huge.csv:3: not a valid label CSV row \(field larger than field limit"):
        read_labels(p)


def test_duplicates_and_split_overlap_are_warned_once(tmp_path, caplog):
    p = tmp_path / "dup.csv"
    p.write_text(HEADER + "walk,v1,,,train\nwalk,v1,,,train\nwalk,v2,,,train\nwalk,v2,,,val\nrun,v3,,,val\n")
    with caplog.at_level(logging.WARNING, logger="data.labels"):
        assert len(read_labels(p)) == 5
        read_labels(p)  # read again (train and val datasets each read it): no second warning
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "1 duplicate row(s), e.g. walk,v1 (split train)" in messages[0]
    assert "1 video(s) appear in more than one split, e.g. v2 in train and val" in messages[1]
    assert "contaminated" in messages[1]
