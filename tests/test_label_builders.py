"""Label builders of HACS, Moments in Time, Diving-48 and SSv2 on tiny hand-made copies of the official files."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from data.labels import LabelError, read_classes, read_labels
from tools import make_labels
from tools.labels import diving48, hacs, moments, sthv2

HACS_CSV = """classname,youtube_id,subset,start,end,label
Archery,a2X2hz1G6i8,training,15.5,17.5,1
Archery,a2X2hz1G6i8,training,15.9,17.9,1
Archery,a2X2hz1G6i8,training,40.0,42.0,-1
Applying sunscreen,Zz9_-x1yB0c,training,3.25,5.25,1
Applying sunscreen,Zz9_-x1yB0c,validation,60,62,1
Archery,a2X2hz1G6i8,training,15.5,17.5,1
Archery,Qq1111111aa,testing,0,2,1
Archery,Qq1111111aa,training,9,11,-1
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_hacs_positives_fractional_and_colliding_starts(tmp_path, caplog):
    path = write(tmp_path / "HACS_clips_v1.1.1.csv", HACS_CSV)
    with caplog.at_level(logging.WARNING):
        samples, classes = hacs.hacs_samples(path)
    assert classes == ["Applying sunscreen", "Archery"]
    got = {(s.label, s.video_id, s.split, s.time_start, s.time_end) for s in samples}
    assert got == {
        ("Archery", "a2X2hz1G6i8_000015_000017", "train", 15.5, 17.5),
        ("Archery", "a2X2hz1G6i8_000015_000017_2", "train", 15.9, 17.9),  # collides on integer seconds
        ("Applying sunscreen", "Zz9_-x1yB0c_000003_000005", "train", 3.25, 5.25),
        ("Applying sunscreen", "Zz9_-x1yB0c_000060_000062", "val", 60.0, 62.0),
        ("Archery", "Qq1111111aa_000000_000002", "test", 0.0, 2.0),
    }
    assert len(samples) == 5  # negatives and the repeated row are left out
    text = caplog.text
    assert "HACS_clips_v1.1.1.csv:3" in text and "shares the id a2X2hz1G6i8_000015_000017" in text
    assert "HACS_clips_v1.1.1.csv:7" in text and "repeats" in text


@pytest.mark.parametrize("row, message", [
    ("Archery,abc,training,5,5,1", "need start < end"),
    ("Archery,abc,training,-1,2,1", "non-negative"),
    ("Archery,abc,training,x,2,1", "is not a number"),
    ("Archery,abc,training,1,2,0", "neither 1"),
    ("Archery,abc,train2,1,2,1", "unknown subset"),
    ("Archery,abc,training,1,2", "expected 6 fields"),
])
def test_hacs_bad_rows_name_file_and_line(tmp_path, row, message):
    path = write(tmp_path / "clips.csv", "classname,youtube_id,subset,start,end,label\nArchery,ok,training,1,3,1\n"
                 + row + "\n")
    with pytest.raises(LabelError, match=message) as e:
        hacs.hacs_samples(path)
    assert str(e.value).startswith(f"{path}:3:")


def make_moments(root: Path, categories: str = "yawning,0\nblocking,1\narresting,2\n") -> Path:
    d = root / "Moments_in_Time_Raw"
    write(d / "moments_categories.txt", categories)
    # No header: the first line is a clip and must not be lost.
    write(d / "trainingSet.csv", "blocking/getty-karate-video-id635808620_4.mp4,blocking,3,0\n"
                                 "yawning/flickr-1-2-3_1.mp4,yawning,2,1\n"
                                 "arresting/yt-abc_12.mp4,arresting,3,0\n")
    write(d / "validationSet.csv", "blocking/yt-val_1.mp4,blocking,3,0\n")
    return d


def test_moments_no_header_class_from_folder_and_category_order(tmp_path):
    samples, classes = moments.moments_samples(make_moments(tmp_path))
    assert classes == ["yawning", "blocking", "arresting"]  # index order of moments_categories.txt, not sorted
    assert [(s.label, s.video_id, s.split) for s in samples] == [
        ("blocking", "getty-karate-video-id635808620_4", "train"), ("yawning", "flickr-1-2-3_1", "train"),
        ("arresting", "yt-abc_12", "train"), ("blocking", "yt-val_1", "val")]


def test_moments_bad_input(tmp_path):
    d = make_moments(tmp_path, categories="yawning,0\nblocking,1\n")
    with pytest.raises(LabelError, match=r"trainingSet.csv:3: class 'arresting' is not in moments_categories"):
        moments.moments_samples(d)
    d = make_moments(tmp_path / "b", categories="yawning,0\nblocking,2\narresting,1\n")
    write(d / "trainingSet.csv", "blocking/a.mp4,yawning,3,0\n")
    with pytest.raises(LabelError, match=r"trainingSet.csv:1: label column 'yawning' differs from the folder"):
        moments.moments_samples(d)
    d = make_moments(tmp_path / "c", categories="yawning,0\nblocking,2\n")
    with pytest.raises(LabelError, match=r"moments_categories.txt: category indices are not 0..1"):
        moments.moments_samples(d)


def make_diving(root: Path) -> Path:
    d = root / "Diving48"
    write(d / "Diving48_vocab.json", json.dumps([["Back", "15som", "05Twis", "FREE"],
                                                  ["Forward", "25som", "NoTwis", "PIKE"],
                                                  ["Inward", "35som", "NoTwis", "TUCK"]]))
    write(d / "Diving48_V2_train.json", json.dumps([
        {"vid_name": "_8Vy3dlHg2w_00000", "label": 2, "start_frame": 0, "end_frame": 61},
        {"vid_name": "_8Vy3dlHg2w_00001", "label": 0, "start_frame": 62, "end_frame": 120}]))
    write(d / "Diving48_V2_test.json", json.dumps([
        {"vid_name": "zzzzzzzzzzz_00007", "label": 1, "start_frame": 0, "end_frame": 50}]))
    return d


def test_diving48_class_names_from_vocabulary(tmp_path):
    samples, classes = diving48.diving48_samples(make_diving(tmp_path))
    assert classes == ["Back_15som_05Twis_FREE", "Forward_25som_NoTwis_PIKE", "Inward_35som_NoTwis_TUCK"]
    assert [(s.label, s.video_id, s.split) for s in samples] == [
        ("Inward_35som_NoTwis_TUCK", "_8Vy3dlHg2w_00000", "train"),
        ("Back_15som_05Twis_FREE", "_8Vy3dlHg2w_00001", "train"),
        ("Forward_25som_NoTwis_PIKE", "zzzzzzzzzzz_00007", "val")]


def test_diving48_bad_input(tmp_path):
    d = make_diving(tmp_path)
    write(d / "Diving48_V2_test.json", json.dumps([{"vid_name": "x", "label": 3}]))
    with pytest.raises(LabelError, match=r"Diving48_V2_test.json: entry 0 \(x\): label 3 is not a class index 0..2"):
        diving48.diving48_samples(d)
    write(d / "Diving48_vocab.json", json.dumps([["Back", "15som", "05Twis"]]))
    with pytest.raises(LabelError, match=r"Diving48_vocab.json: entry 0: expected 4 words"):
        diving48.diving48_samples(d)
    write(d / "Diving48_vocab.json", "[[")
    with pytest.raises(LabelError, match=r"Diving48_vocab.json:1: not valid JSON"):
        diving48.diving48_samples(d)


def make_sthv2(root: Path) -> Path:
    d = root / "annotations"
    write(d / "something-something-v2-labels.json", json.dumps({
        "Putting something on a surface": "1", "Holding something next to something": "0",
        "Pushing something from left to right": "2"}))
    write(d / "something-something-v2-train.json", json.dumps([
        {"id": "78687", "label": "holding potato next to vicks vaporub bottle",
         "template": "Holding [something] next to [something]", "placeholders": ["potato", "vicks vaporub bottle"]},
        {"id": "42326", "label": "putting a cup on a table", "template": "Putting [something] on a surface",
         "placeholders": ["a cup"]}]))
    write(d / "something-something-v2-validation.json", json.dumps([
        {"id": "74225", "label": "pushing pen from left to right",
         "template": "Pushing [something] from left to right", "placeholders": ["pen"]}]))
    return d


def test_sthv2_template_without_brackets_in_label_index_order(tmp_path):
    samples, classes = sthv2.sthv2_samples(make_sthv2(tmp_path))
    assert classes == ["Holding something next to something", "Putting something on a surface",
                       "Pushing something from left to right"]
    assert [(s.label, s.video_id, s.split) for s in samples] == [
        ("Holding something next to something", "78687", "train"),
        ("Putting something on a surface", "42326", "train"),
        ("Pushing something from left to right", "74225", "val")]


def test_sthv2_unknown_template_and_repeated_id(tmp_path):
    d = make_sthv2(tmp_path)
    write(d / "something-something-v2-validation.json", json.dumps([
        {"id": "1", "template": "Throwing [something]", "placeholders": []}]))
    with pytest.raises(LabelError, match=r"validation.json: entry 0 \(id 1\): class 'Throwing something' is not in"):
        sthv2.sthv2_samples(d)
    write(d / "something-something-v2-validation.json", json.dumps([
        {"id": "42326", "template": "Putting [something] on a surface", "placeholders": []}]))
    with pytest.raises(LabelError, match=r"entry 0: id 42326 already listed at .*train.json: entry 1"):
        sthv2.sthv2_samples(d)


@pytest.mark.parametrize("fmt, make, expected_classes", [
    ("moments", make_moments, ["yawning", "blocking", "arresting"]),
    ("diving48", make_diving, ["Back_15som_05Twis_FREE", "Forward_25som_NoTwis_PIKE", "Inward_35som_NoTwis_TUCK"]),
    ("sthv2", make_sthv2, ["Holding something next to something", "Putting something on a surface",
                           "Pushing something from left to right"]),
])
def test_cli_writes_label_csv_and_classes_in_official_order(tmp_path, fmt, make, expected_classes):
    root = tmp_path / "ds"
    assert make_labels.main([fmt, str(make(tmp_path)), str(root)]) == 0
    assert read_classes(root / "classes.txt") == expected_classes
    assert len(read_labels(root / "labels" / f"{fmt}.csv")) in (3, 4)


def test_cli_hacs_underscore_names_and_missing_file(tmp_path, capsys):
    path = write(tmp_path / "HACS_clips_v1.1.1.csv", HACS_CSV)
    root = tmp_path / "ds"
    assert make_labels.main(["hacs", str(path), str(root), "--label-names", "underscore"]) == 0
    assert read_classes(root / "classes.txt") == ["Applying_sunscreen", "Archery"]
    samples = read_labels(root / "labels" / "hacs.csv")
    assert {s.label for s in samples} == {"Applying_sunscreen", "Archery"}
    assert samples[0].time_start == 15.5 and samples[0].time_end == 17.5
    with pytest.raises(SystemExit) as e:
        make_labels.main(["moments", str(tmp_path / "nowhere"), str(root)])
    assert e.value.code == 2 and "nowhere: annotation folder not found" in capsys.readouterr().err
