"""Label files (data.labels) and the label builders (tools.make_labels) on tiny copies of the official formats."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from data.labels import (
    LabelError,
    Sample,
    read_classes,
    read_labels,
    safe_video_dir,
    write_classes,
    write_labels,
)
from tools import make_labels
from tools.ingest.video_folder import assign_val_split
from tools.labels import hmdb51, kinetics, output, ucf101
from tools.labels.folder import folder_samples

# ------------------------------------------------------------------------------------------------ data.labels


def test_labels_round_trip(tmp_path):
    samples = [Sample("abc_000010_000020", "passing American football (in game)", "train", 10.0, 20.0),
               Sample("v_1", "tying a tie, fast", "val", 0.5, 2.25),
               Sample("x", "person's \"quoted\" café", "test")]
    path = tmp_path / "labels" / "all.csv"
    assert write_labels(path, samples) == 3
    assert path.read_text().splitlines()[0] == "label,video_id,time_start,time_end,split"
    assert read_labels(path) == samples
    assert not path.with_name("all.csv.tmp").exists()


@pytest.mark.parametrize("row, message", [
    ("a,../x,,,train", r"bad\.csv:3: video id '\.\./x' is not a plain folder name"),
    ("a,/etc/passwd,,,train", r"bad\.csv:3: video id '/etc/passwd'"),
    ("..,x,,,train", r"bad\.csv:3: label '\.\.'"),
    ("a/b,x,,,train", r"bad\.csv:3: label 'a/b'"),
    ("a,,,,train", r"bad\.csv:3: empty video id"),
    ("a,x,,,training", r"bad\.csv:3: split 'training'"),
    ("a,x,one,,train", r"bad\.csv:3: time_start 'one' is not a number"),
    ("a,x,,,train,extra", r"bad\.csv:3: expected 5 fields"),
    ("a,x,,train", r"bad\.csv:3: expected 5 fields"),
])
def test_read_labels_rejects_bad_rows(tmp_path, row, message):
    path = tmp_path / "bad.csv"
    path.write_text(f"label,video_id,time_start,time_end,split\nok,fine,,,train\n{row}\n")
    with pytest.raises(LabelError, match=message):
        read_labels(path)


def test_read_labels_header_and_missing_file(tmp_path):
    with pytest.raises(LabelError, match="nope.csv: label file not found"):
        read_labels(tmp_path / "nope.csv")
    path = tmp_path / "k.csv"
    path.write_text("label,youtube_id,time_start,time_end,split\n")
    with pytest.raises(LabelError, match=r"k\.csv:1: .*lacks column.*video_id.*make_labels kinetics"):
        read_labels(path)


def test_safe_video_dir(tmp_path):
    assert safe_video_dir(tmp_path, "brush hair (x)", "v1") == tmp_path / "jpg" / "brush hair (x)" / "v1"
    for label, video_id in [("..", "v"), ("a", ".."), ("a", "../../etc"), ("a", "/abs"), ("a/b", "v"),
                            ("a", "b\\c"), ("", "v"), ("a", "x\0y"), ("a", "x\ny")]:
        with pytest.raises(LabelError, match="labels/all.csv:7"):
            safe_video_dir(tmp_path, label, video_id, where="labels/all.csv:7")
    assert issubclass(LabelError, ValueError)


def test_classes_round_trip_and_errors(tmp_path):
    path = tmp_path / "classes.txt"
    write_classes(path, ["a b", "c", "d's"])
    assert read_classes(path) == ["a b", "c", "d's"]
    path.write_text("a\n\nb\na\n")
    with pytest.raises(LabelError, match=r"classes\.txt:4: class 'a' repeats line 1"):
        read_classes(path)
    path.write_text("\n")
    with pytest.raises(LabelError, match="empty"):
        read_classes(path)
    with pytest.raises(LabelError, match="not found"):
        read_classes(tmp_path / "none.txt")
    with pytest.raises(LabelError, match="duplicate"):
        write_classes(path, ["a", "a"])


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_folder_samples_from_videos_and_store(tmp_path):
    videos = tmp_path / "videos"
    for label in ("brush hair", "café"):
        for i in range(10):
            _touch(videos / label / f"v{i}.{'mp4' if i % 2 else 'AVI'}")
    _touch(videos / "café" / "notes.txt")
    _touch(videos / "café" / ".hidden.mp4")
    _touch(videos / ".cache" / "x.mp4")
    samples = folder_samples(videos, val_fraction=0.2, seed=1)
    assert len(samples) == 20
    assert {s.label for s in samples} == {"brush hair", "café"}
    for label in ("brush hair", "café"):
        assert sum(s.split == "val" for s in samples if s.label == label) == 2
    assert samples == folder_samples(videos, val_fraction=0.2, seed=1)
    assert samples != folder_samples(videos, val_fraction=0.2, seed=2)

    root = tmp_path / "root"
    for s in samples:
        (root / "jpg" / s.label / s.video_id).mkdir(parents=True)
    assert folder_samples(root, val_fraction=0.2, seed=1) == samples  # same ids, same choice


def test_folder_samples_errors(tmp_path):
    (tmp_path / "empty" / "class").mkdir(parents=True)
    with pytest.raises(LabelError, match="no videos found"):
        folder_samples(tmp_path / "empty")
    _touch(tmp_path / "dup" / "a" / "v1.mp4")
    _touch(tmp_path / "dup" / "a" / "v1.avi")
    with pytest.raises(LabelError, match="video id 'v1' also used"):
        folder_samples(tmp_path / "dup")
    with pytest.raises(LabelError, match="not a folder"):
        folder_samples(tmp_path / "missing")


def test_assign_val_split_ignores_input_order():
    samples = [Sample(f"v{i}", f"c{i % 3}", "train") for i in range(30)]
    shuffled = samples[:]
    random.Random(0).shuffle(shuffled)
    assert assign_val_split(samples, 0.3) == assign_val_split(shuffled, 0.3)
    split = assign_val_split(samples, 0.3)
    assert sum(s.split == "val" for s in split) == 9
    assert all(s.split == "train" for s in assign_val_split([Sample("only", "c", "train")], 0.5))


# ------------------------------------------------------------------------------------------------ UCF-101

UCF_CLASSES = ["ApplyEyeMakeup", "Archery", "BabyCrawling"]


def make_ucf(tmp_path: Path) -> Path:
    """A tiny ucfTrainTestlist/: CRLF line ends like the official files, 3 classes, 3 splits."""
    d = tmp_path / "ucfTrainTestlist"
    d.mkdir()
    (d / "classInd.txt").write_bytes("".join(f"{i} {c}\r\n" for i, c in enumerate(UCF_CLASSES, 1)).encode())
    for split in (1, 2, 3):
        train, test = [], []
        for ci, c in enumerate(UCF_CLASSES, 1):
            for g in range(1, 5):
                for clip in (1, 2):
                    name = f"{c}/v_{c}_g{g:02d}_c{clip:02d}.avi"
                    (test if g == split else train).append((name, ci))
        (d / f"trainlist{split:02d}.txt").write_bytes("".join(f"{n} {i}\r\n" for n, i in train).encode())
        (d / f"testlist{split:02d}.txt").write_bytes("".join(f"{n}\r\n" for n, _ in test).encode())
    return d


def test_ucf101_three_splits(tmp_path):
    d = make_ucf(tmp_path)
    root = tmp_path / "root"
    make_labels.main(["ucf101", str(d), str(root)])
    assert read_classes(root / "classes.txt") == sorted(UCF_CLASSES)
    for split in (1, 2, 3):
        samples = read_labels(root / "labels" / f"ucf101_split{split}.csv")
        assert len(samples) == 24
        test = [s for s in samples if s.split == "val"]
        assert len(test) == 6 and all(f"_g{split:02d}_" in s.video_id for s in test)
        assert Sample("v_Archery_g04_c02", "Archery", "train" if split != 4 else "val") in samples
    first = read_labels(root / "labels" / "ucf101_split1.csv")[0]
    assert first == Sample("v_ApplyEyeMakeup_g02_c01", "ApplyEyeMakeup", "train")


def test_ucf101_test_split_and_group_held_out_val(tmp_path):
    d = make_ucf(tmp_path)
    root = tmp_path / "root"
    make_labels.main(["ucf101", str(d), str(root), "--splits", "1", "--test-as", "test", "--val-fraction", "0.3"])
    samples = read_labels(root / "labels" / "ucf101_split1.csv")
    assert not (root / "labels" / "ucf101_split2.csv").exists()
    assert sum(s.split == "test" for s in samples) == 6
    for label in UCF_CLASSES:
        val = [s for s in samples if s.label == label and s.split == "val"]
        train = [s for s in samples if s.label == label and s.split == "train"]
        assert len(val) == 2 and len(train) == 4  # one whole group of two clips
        assert {ucf101.ucf_group(s) for s in val}.isdisjoint({ucf101.ucf_group(s) for s in train})


@pytest.mark.parametrize("file, content, message", [
    ("trainlist01.txt", "Archery/v_Archery_g02_c01.avi 2\nArchery/v_Archery_g02_c02.avi\tx\n",
     r"trainlist01\.txt:2: class index 'x' is not a number"),
    ("trainlist01.txt", "Archery/v_Archery_g02_c01.avi 2 3\n", r"trainlist01\.txt:1: expected"),
    ("trainlist01.txt", "Archery/v_Archery_g02_c01.avi 2\nBowling/v_Bowling_g01_c01.avi 4\n",
     r"trainlist01\.txt:2: unknown class 'Bowling'"),
    ("trainlist01.txt", "Archery/v_Archery_g02_c01.avi 3\n", r"trainlist01\.txt:1: class index 3 does not match"),
    ("trainlist01.txt", "../v_Archery_g02_c01.avi 2\n", r"trainlist01\.txt:1: label '\.\.'"),
    ("trainlist01.txt", "Archery/../../etc.avi 2\n", r"trainlist01\.txt:1: expected '<class>/<video file>'"),
    ("testlist01.txt", "Archery/v_Archery_g01_c01.avi 2\n", r"testlist01\.txt:1: expected"),
    ("testlist01.txt", "Archery/v_Archery_g02_c01.avi\n", r"testlist01\.txt:1: video Archery/v_Archery_g02_c01 "
                                                          r"already listed at trainlist01\.txt"),
    ("classInd.txt", "1 ApplyEyeMakeup\nArchery\n", r"classInd\.txt:2: expected '<index> <class>'"),
    ("classInd.txt", "1 ApplyEyeMakeup\n3 Archery\n", r"classInd\.txt: class indices are not 1\.\.2"),
])
def test_ucf101_bad_input(tmp_path, file, content, message):
    d = make_ucf(tmp_path)
    (d / file).write_text(content)  # replaces the whole official file
    with pytest.raises(LabelError, match=message):
        ucf101.ucf101_samples(d, 1)


def test_ucf101_missing_file_cli(tmp_path, capsys):
    d = make_ucf(tmp_path)
    (d / "testlist03.txt").unlink()
    with pytest.raises(SystemExit) as exc:
        make_labels.main(["ucf101", str(d), str(tmp_path / "root")])
    assert exc.value.code == 2
    assert "testlist03.txt: file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        make_labels.main(["ucf101", str(tmp_path / "nowhere"), str(tmp_path / "root")])
    assert "annotation folder not found" in capsys.readouterr().err


def test_ucf101_found_one_level_down(tmp_path):
    make_ucf(tmp_path)
    samples, classes = ucf101.ucf101_samples(tmp_path, 2)
    assert classes == sorted(UCF_CLASSES) and len(samples) == 24


# ------------------------------------------------------------------------------------------------ HMDB-51


def make_hmdb(tmp_path: Path) -> Path:
    d = tmp_path / "testTrainMulti_7030_splits"
    d.mkdir()
    for label in ("brush_hair", "draw_sword"):
        for split in (1, 2, 3):
            lines = [f"{label}_clip{i}_{'(x)&y' if i == 0 else 'u_nm'}.avi {(i + split) % 3} \r\n" for i in range(6)]
            (d / f"{label}_test_split{split}.txt").write_bytes("".join(lines).encode())
    return d


def test_hmdb51_three_splits(tmp_path):
    d = make_hmdb(tmp_path)
    root = tmp_path / "root"
    make_labels.main(["hmdb51", str(d), str(root)])
    assert read_classes(root / "classes.txt") == ["brush_hair", "draw_sword"]
    s1 = read_labels(root / "labels" / "hmdb51_split1.csv")
    # split 1: code (i+1)%3 -> i=0:1 train, i=1:2 test, i=2:0 unused, i=3:1, i=4:2, i=5:0
    assert [(s.video_id, s.split) for s in s1 if s.label == "brush_hair"] == [
        ("brush_hair_clip0_(x)&y", "train"), ("brush_hair_clip1_u_nm", "val"),
        ("brush_hair_clip3_u_nm", "train"), ("brush_hair_clip4_u_nm", "val")]
    s2 = read_labels(root / "labels" / "hmdb51_split2.csv")
    assert {s.video_id for s in s2 if s.split == "train"} != {s.video_id for s in s1 if s.split == "train"}


def test_hmdb51_bad_input(tmp_path):
    d = make_hmdb(tmp_path)
    (d / "draw_sword_test_split2.txt").write_text("a.avi 1\nb.avi 3\n")
    with pytest.raises(LabelError, match=r"draw_sword_test_split2\.txt:2: expected '<video>\.avi <0\|1\|2>'"):
        hmdb51.hmdb51_samples(d, 2)
    (d / "draw_sword_test_split3.txt").unlink()
    with pytest.raises(LabelError, match=r"draw_sword_test_split3\.txt: file not found"):
        hmdb51.hmdb51_samples(d, 3)
    (d / "brush_hair_test_split1.txt").write_text("../../x.avi 1\n")
    with pytest.raises(LabelError, match=r"brush_hair_test_split1\.txt:1: video file '\.\./\.\./x\.avi'"):
        hmdb51.hmdb51_samples(d, 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LabelError, match="no '<class>_test_split<N>.txt' files"):
        hmdb51.hmdb51_samples(tmp_path / "empty", 1)


# ------------------------------------------------------------------------------------------------ Kinetics


def make_kinetics(tmp_path: Path) -> list[Path]:
    train = tmp_path / "train.csv"
    train.write_text("label,youtube_id,time_start,time_end,split,is_cc\n"
                     "abseiling,--07WQ2iBlw,1,11,train,0\n"
                     '"passing American football (in game)",-0f0hXGNfMA,14.0,24.0,train,1\n'
                     "person's hobby,Ab_cd-123,100,110,train,0\n"
                     "abseiling,--07WQ2iBlw,1,11,train,0\n")
    val = tmp_path / "validate.csv"
    val.write_text("label,youtube_id,time_start,time_end,split\n"
                   "abseiling,zz_9,0,10,val\n"
                   "person's hobby,qq,3,13,validate\n")
    test = tmp_path / "test.csv"
    test.write_text("youtube_id,time_start,time_end,split\nunk1,0,10,test\n")
    return [train, val, test]


def test_kinetics(tmp_path):
    csvs = make_kinetics(tmp_path)
    root = tmp_path / "root"
    make_labels.main(["kinetics", *map(str, csvs), str(root)])
    samples = read_labels(root / "labels" / "kinetics.csv")
    assert [s.video_id for s in samples] == ["--07WQ2iBlw_000001_000011", "-0f0hXGNfMA_000014_000024",
                                             "Ab_cd-123_000100_000110", "zz_9_000000_000010", "qq_000003_000013"]
    assert samples[1] == Sample("-0f0hXGNfMA_000014_000024", "passing American football (in game)", "train",
                                14.0, 24.0)
    assert [s.split for s in samples] == ["train", "train", "train", "val", "val"]
    assert read_classes(root / "classes.txt") == ["abseiling", "passing American football (in game)",
                                                  "person's hobby"]


def test_kinetics_options(tmp_path, capsys):
    csvs = make_kinetics(tmp_path)
    samples, classes = kinetics.kinetics_samples(csvs[:2], label_names="underscore")
    assert classes == ["abseiling", "passing_American_football_in_game", "person_s_hobby"]
    ids = tmp_path / "ids.txt"
    ids.write_text("zz_9\nqq\n")
    root = tmp_path / "root"
    make_labels.main(["kinetics", *map(str, csvs[:2]), str(root), "--ids", str(ids), "--name", "mini"])
    assert len(read_labels(root / "labels" / "mini.csv")) == 2
    with pytest.raises(SystemExit) as exc:
        make_labels.main(["kinetics", *map(str, csvs[:2]), str(root), "--variant", "400"])
    assert exc.value.code == 2 and "3 classes, expected 400" in capsys.readouterr().err


@pytest.mark.parametrize("row, message", [
    ("a,yt,5,x,train", "are not numbers"),
    ("a,yt,5,3,train", "need 0 <= time_start < time_end"),
    ("a,yt,0,10,holdout", "unknown split 'holdout'"),
    ("a,../yt,0,10,train", "youtube id '../yt'"),
    ("a/b,yt,0,10,train", "label 'a/b'"),
    ("a,yt,0,10", "expected 5 fields"),
])
def test_kinetics_bad_rows(tmp_path, row, message):
    path = tmp_path / "k.csv"
    path.write_text(f"label,youtube_id,time_start,time_end,split\nok,fine,0,10,train\n{row}\n")
    with pytest.raises(LabelError, match=rf"k\.csv:3: .*{message}"):
        kinetics.kinetics_samples([path])


def test_kinetics_missing_file_and_header(tmp_path):
    with pytest.raises(LabelError, match="none.csv: file not found"):
        kinetics.kinetics_samples([tmp_path / "none.csv"])
    path = tmp_path / "k.csv"
    path.write_text("label,id,split\n")
    with pytest.raises(LabelError, match=r"k\.csv:1: header lacks"):
        kinetics.kinetics_samples([path])


# ------------------------------------------------------------------------------------------------ folder, checks


def make_store(root: Path, videos: dict[str, list[str]]) -> None:
    for label, ids in videos.items():
        for video_id in ids:
            _touch(root / "jpg" / label / video_id / "frames.db")


def test_folder_dataset(tmp_path):
    root = tmp_path / "root"
    make_store(root, {"left": [f"l{i}" for i in range(5)], "right": [f"r{i}" for i in range(5)]})
    make_labels.main(["folder", str(root), "--val-fraction", "0.4"])
    samples = read_labels(root / "labels" / "all.csv")
    assert read_classes(root / "classes.txt") == ["left", "right"]
    assert sum(s.split == "val" for s in samples) == 4 and len(samples) == 10


def test_check_root_and_drop_missing(tmp_path, capsys):
    d = make_ucf(tmp_path)
    root = tmp_path / "root"
    make_store(root, {c: [f"v_{c}_g{g:02d}_c{k:02d}" for g in range(1, 5) for k in (1, 2)] for c in UCF_CLASSES})
    (root / "jpg" / "Archery" / "v_Archery_g03_c02" / "frames.db").unlink()
    with pytest.raises(SystemExit) as exc:
        make_labels.main(["ucf101", str(d), str(root), "--splits", "1", "--check-root"])
    assert exc.value.code == 1
    assert "missing from the frame store" in capsys.readouterr().err
    assert len(read_labels(root / "labels" / "ucf101_split1.csv")) == 24  # written, gaps reported
    make_labels.main(["ucf101", str(d), str(root), "--splits", "1", "--drop-missing"])
    samples = read_labels(root / "labels" / "ucf101_split1.csv")
    assert len(samples) == 23 and all(s.video_id != "v_Archery_g03_c02" for s in samples)
    assert output.missing_videos(root, samples) == []
    with pytest.raises(LabelError, match="no frame store"):
        output.missing_videos(tmp_path / "elsewhere", samples)
