"""Hostile input met by the commands: a label field over the csv module's limit, a frames table with wrong column
types. Each ends in one line naming the file and a non-zero exit, never a traceback."""
from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from data.columns import read_label_columns
from data.integrity import check_video
from data.labels import LabelError
from tests.test_predict import make_checkpoint
from tests.train_util import make_store, tiny_train_argv
from tools import convert, evaluate, extract_features, index, verify
from train import cli

HUGE_ROW = '"' + "x" * 200_000 + '",v9,,,train\n'


@pytest.fixture(scope="module")
def clean_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("hostile") / "data", classes=2, videos_per_class=2, frames=12)


@pytest.fixture
def store(clean_store, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(clean_store, copy)
    return copy


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err[-3000:]
    return errors[0]


def _huge_labels(store: Path) -> Path:
    path = store / "labels" / "all.csv"
    path.write_text(path.read_text() + HUGE_ROW)
    return path


def test_label_columns_name_file_and_line_of_a_huge_field(tmp_path):
    p = tmp_path / "huge.csv"
    p.write_text("label,video_id,time_start,time_end,split\nwalk,v1,,,train\n" + HUGE_ROW)
    with pytest.raises(LabelError, match=r"huge.csv:3: not a valid label CSV row \(field larger than field limit"):
        read_label_columns(p)


def test_every_command_reading_labels_says_one_line_for_a_huge_field(store, tmp_path, capsys):
    labels = _huge_labels(store)
    ckpt = make_checkpoint(tmp_path / "m.pth", classes=(store / "classes.txt").read_text().split())
    commands = [
        lambda: cli.main(tiny_train_argv(store, tmp_path / "run")),
        lambda: evaluate.main(["--checkpoint", str(ckpt), "--dataset", str(store), "--workers", "0"]),
        lambda: extract_features.main(["--checkpoint", str(ckpt), "--dataset", str(store), "--out",
                                       str(tmp_path / "f.npz"), "--workers", "0"]),
    ]
    for command in commands:
        with pytest.raises(SystemExit) as e:
            command()
        assert e.value.code == 2
        line = _one_error_line(capsys)
        assert f"{labels}:" in line and "field larger than field limit" in line, line
    # The index only warms the label caches: it says which file it could not cache, and finishes.
    assert index.main([str(store)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"label cache not built: {labels}:" in err


def test_the_converter_names_a_label_file_with_a_huge_field_and_finishes(clean_store, store, capsys):
    extra = store / "labels" / "extra.csv"
    extra.write_text("label,video_id,time_start,time_end,split\n" + HUGE_ROW)
    assert convert.main([str(clean_store.parent / "videos"), str(store), "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"label cache not built: {extra}:2:" in err


def _text_typed_frames(video_dir: Path) -> None:
    db = video_dir / "frames.db"
    db.unlink()
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE frames (idx TEXT, jpeg TEXT)")
    conn.executemany("INSERT INTO frames VALUES (?, ?)", [(str(i), "x") for i in range(12)])
    conn.commit()
    conn.close()


def test_a_frames_table_of_wrong_column_types_is_a_problem_not_a_crash(store, tmp_path, capsys):
    video = next((store / "jpg").glob("*/*"))
    _text_typed_frames(video)
    check = check_video(video)
    assert not check.ok and any("frame numbers" in p or "not as a JPEG blob" in p for p in check.problems)
    assert verify.main([str(store), "--report", str(tmp_path / "r.csv")]) == 1
    assert "Traceback" not in capsys.readouterr().err
    # The index leaves a broken database out with a warning naming it, and indexes the others.
    assert index.main([str(store), "--rebuild"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"not indexed: {video / 'frames.db'}: frames table holds str frame numbers" in err


def test_a_checkpoint_the_safe_loader_refuses_is_named_with_the_reason(tmp_path):
    import argparse

    import torch

    from train.checkpoint import CheckpointError, load_checkpoint

    path = tmp_path / "evil.pth"
    torch.save({"format": "videotrain-ckpt-1", "args": argparse.Namespace(a=1), "model": {}}, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    text = str(e.value)
    assert "\x1b" not in text and "\n" not in text, repr(text)
    assert f"{path}: " in text and "Python objects besides tensors" in text and "argparse.Namespace" in text
    assert text.endswith(")") and "two options" not in text


def test_convert_refuses_negative_workers_and_says_what_a_file_given_as_videos_is(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        convert.main([str(tmp_path), str(tmp_path / "out"), "--workers", "-5"])
    assert e.value.code == 2 and "--workers" in capsys.readouterr().err
    video_file = tmp_path / "clip.mp4"
    video_file.write_bytes(b"\0")
    with pytest.raises(SystemExit) as e:
        convert.main([str(video_file), str(tmp_path / "out")])
    assert e.value.code == 2
    line = _one_error_line(capsys)
    assert "no such folder" not in line and "is a file, not a folder" in line, line


def test_verify_gives_its_result_when_the_report_cannot_be_written(store, tmp_path, capsys, monkeypatch):
    import errno

    def read_only(path, rows):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(verify, "write_report", read_only)
    with pytest.raises(SystemExit) as e:
        verify.main([str(store)])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "verified 4 videos" in err and "4 sound, 0 with problems" in err, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Read-only file system" in errors[0] and "--report" in errors[0], errors


def test_a_symlink_loop_under_the_source_root_finds_each_video_once(tmp_path):
    from data.labels import Sample
    from tools.ingest.from_labels import index_sources, locate

    source = tmp_path / "src"
    (source / "walk").mkdir(parents=True)
    (source / "walk" / "v1.mp4").write_bytes(b"\0")
    (source / "walk" / "loop").symlink_to("..")
    (source / "linked").symlink_to(source / "walk")  # a second way to the same folder is the same video too
    index = index_sources(source)
    assert index == {"v1": [source / "linked" / "v1.mp4"]} or index == {"v1": [source / "walk" / "v1.mp4"]}
    assert locate(Sample("v1", "walk", "train"), index)[0].name == "v1.mp4"


def test_the_index_of_a_read_only_root_is_one_line_saying_so(store, capsys, monkeypatch):
    import errno

    import data.index

    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).endswith(".lock"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(data.index.os, "open", read_only)
    with pytest.raises(SystemExit) as e:
        index.main([str(store)])
    assert e.value.code == 2
    line = _one_error_line(capsys)
    assert f"{store}: read-only" in line and "[Errno" not in line, line
