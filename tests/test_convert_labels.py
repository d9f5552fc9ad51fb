"""Conversion driven by a label file: segments cut from untrimmed sources, official layouts, bad input, training."""
from __future__ import annotations

import contextlib
import csv
import importlib
import io
import logging
import os
from pathlib import Path

import av
import numpy as np
import pytest

from data.labels import read_labels
from data.store import open_video
from tests.test_label_builders import HACS_CSV, make_diving, make_moments, make_sthv2, write
from tests.train_util import tiny_train_argv
from tests.videos_util import make_video
from tools import convert, make_labels
from tools.ingest import segments as convert_segments
from tools.ingest.jobs import Job
from tools.ingest.segments import SourceJob, convert_source
from train import cli

FPS = 10
HEADER = "label,video_id,time_start,time_end,split\n"


def second_value(k: int) -> int:
    """Grey level of every frame shown during second k of a generated untrimmed video."""
    return (30 + 25 * k) % 230


def make_untrimmed(path: Path, seconds: int, fps: int = FPS, size: int = 32, gop: int = 10,
                   codec: str = "mpeg4") -> Path:
    """A video whose frames are coloured by the second they are shown in (keyframe every `gop` frames)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt, stream.gop_size = "yuv420p", gop
        if codec == "mpeg4":
            stream.options = {"qscale": "2"}
        for i in range(seconds * fps):
            rgb = np.full((size, size, 3), second_value(i // fps), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def values(video_dir: Path) -> list[int]:
    with open_video(video_dir) as v:
        return [int(round(float(f[..., 1].mean()))) for f in v.read(range(len(v)))]


def near(a: int, b: int) -> bool:
    return abs(a - b) <= 4


def convert_labels(labels: Path, src: Path, root: Path, *extra: str) -> int:
    return convert.main(["--labels", str(labels), "--source-root", str(src), str(root), "--workers", "1", *extra])


def failures(root: Path) -> dict[str, str]:
    with open(root / "convert_failures.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "reason"]
    return {reason.split(":")[0].split(" (")[0]: path for path, reason in rows[1:]}


@pytest.fixture
def opens(monkeypatch):
    """Counts how often a source video is opened for cutting."""
    seen: list[str] = []
    real = convert_segments.open_container

    def counting(path):
        seen.append(path)
        return real(path)

    monkeypatch.setattr(convert_segments, "open_container", counting)
    return seen


def test_cut_segments_have_fps_times_length_and_the_colours_of_their_seconds(tmp_path, opens, caplog):
    src = tmp_path / "src"
    video = make_untrimmed(src / "Archery" / "v_abcdefghijk.mp4", seconds=6)
    labels = write(tmp_path / "clips.csv", HEADER + "Archery,abcdefghijk_000001_000003,1.0,3.0,train\n"
                   "Archery,abcdefghijk_000002_000004,2.5,4.5,train\n"
                   "Archery,abcdefghijk_000004_000008,4.5,8,val\n")
    root = tmp_path / "ds"
    with caplog.at_level(logging.WARNING):
        assert convert_labels(labels, src, root) == 0
    clip = root / "jpg" / "Archery" / "abcdefghijk_000001_000003"
    got = values(clip)
    assert abs(len(got) - FPS * 2) <= 1
    assert near(got[0], second_value(1)) and near(got[-1], second_value(2))
    got = values(root / "jpg" / "Archery" / "abcdefghijk_000002_000004")
    assert len(got) == 20 and near(got[0], second_value(2)) and near(got[-1], second_value(4))
    # Past the end: clipped to the video's end (6 s), with a warning.
    got = values(root / "jpg" / "Archery" / "abcdefghijk_000004_000008")
    assert len(got) == 15 and near(got[0], second_value(4)) and near(got[-1], second_value(5))
    assert "4.5-8 s runs past the video's end (6.00 s): clipped to 15 frames" in caplog.text
    assert opens == [str(video)]  # one source, three clips: opened and decoded once
    with open_video(clip) as v:
        assert v.meta["time_start"] == "1.0" and v.meta["time_end"] == "3.0" and v.meta["source"] == video.name
        assert float(v.meta["fps"]) == FPS and (clip / "n_frames").read_text() == "20\n"
    # The label file is copied into the root, with a class list, so training finds it.
    assert [s.video_id for s in read_labels(root / "labels" / "clips.csv")][0] == "abcdefghijk_000001_000003"
    assert (root / "classes.txt").read_text() == "Archery\n"


def test_far_apart_segments_are_reached_by_seeking_and_each_frame_is_decoded_once(tmp_path):
    video = make_untrimmed(tmp_path / "v.mp4", seconds=30)
    clips = tuple(Job(str(video), "a", name, str(tmp_path / "ds" / name)) for name in ("x", "y", "z"))
    res = convert_source(SourceJob(str(video), clips, ((1.0, 3.0), (25.0, 27.0), (26.5, 27.5))))
    assert [r.status for r in res.results] == ["converted"] * 3
    assert res.opens == 1 and res.seeks >= 1 and res.decoded < 300 // 2
    for name, first, last, n in (("x", 1, 2, 20), ("y", 25, 26, 20), ("z", 26, 27, 10)):
        got = values(tmp_path / "ds" / name)
        assert len(got) == n and near(got[0], second_value(first)) and near(got[-1], second_value(last))


def test_a_seek_landing_after_the_segment_falls_back_to_decoding_from_the_start(tmp_path, monkeypatch, caplog):
    # Seeking past the segment's start mimics a file whose index sends the decoder too far.
    monkeypatch.setattr(convert_segments, "SEEK_BACK", -3.0)
    video = make_untrimmed(tmp_path / "v.mp4", seconds=30)
    clip = Job(str(video), "a", "x", str(tmp_path / "ds" / "x"))
    with caplog.at_level(logging.WARNING):
        res = convert_source(SourceJob(str(video), (clip,), ((20.0, 22.0),)))
    assert [r.status for r in res.results] == ["converted"] and res.opens == 1 and res.seeks == 2
    assert "landed at" in caplog.text and "decoding from the start" in caplog.text
    got = values(tmp_path / "ds" / "x")
    assert len(got) == 20 and near(got[0], second_value(20)) and near(got[-1], second_value(21))


def test_cut_segments_use_optimised_huffman_tables_unless_turned_off(tmp_path):
    src = tmp_path / "src"
    make_untrimmed(src / "Archery" / "v_abcdefghijk.mp4", seconds=3, size=64)
    labels = write(tmp_path / "clips.csv", HEADER + "Archery,abcdefghijk_000000_000002,0,2,train\n")
    stores = {}
    for name, extra in (("opt", ()), ("std", ("--no-jpeg-optimize",))):
        assert convert_labels(labels, src, tmp_path / name, *extra) == 0
        clip = tmp_path / name / "jpg" / "Archery" / "abcdefghijk_000000_000002"
        with open_video(clip) as v:
            stores[name] = (v.read(list(range(len(v)))), v.meta["jpeg_optimize"], (clip / "frames.db").stat().st_size)
    (opt_frames, opt_flag, opt_bytes), (std_frames, std_flag, std_bytes) = stores["opt"], stores["std"]
    assert (opt_flag, std_flag) == ("1", "0")
    assert np.array_equal(opt_frames, std_frames)  # a lossless step: the same pixels
    assert opt_bytes < std_bytes


def test_a_label_file_inside_the_root_gets_a_class_list_when_there_is_none(tmp_path):
    src = tmp_path / "src"
    make_untrimmed(src / "v_abcdefghijk.mp4", seconds=3)
    root = tmp_path / "ds"
    labels = write(root / "labels" / "c.csv", HEADER + "b,abcdefghijk_000000_000001,0,1,train\n"
                   "a,abcdefghijk_000001_000002,1,2,val\n")
    assert convert_labels(labels, src, root) == 0
    assert (root / "classes.txt").read_text() == "a\nb\n"
    assert labels.read_text() == HEADER + "b,abcdefghijk_000000_000001,0,1,train\na,abcdefghijk_000001_000002,1,2,val\n"


def test_fps_resampling_of_a_segment_holds_the_frame_on_screen(tmp_path):
    src = tmp_path / "src"
    make_untrimmed(src / "k400" / "abcdefghijk.mp4", seconds=4)
    labels = write(tmp_path / "k.csv", HEADER + "juggling,abcdefghijk_000001_000003,1.0,3.0,train\n")
    assert convert_labels(labels, src, tmp_path / "ds", "--fps", "5") == 0
    got = values(tmp_path / "ds" / "jpg" / "juggling" / "abcdefghijk_000001_000003")
    assert len(got) == 10 and all(near(v, second_value(1)) for v in got[:5])
    assert all(near(v, second_value(2)) for v in got[5:])


def test_rerun_skips_complete_clips_and_redoes_a_clip_whose_times_changed(tmp_path, opens):
    src = tmp_path / "src"
    make_untrimmed(src / "v_abcdefghijk.mp4", seconds=5)
    rows = "a,abcdefghijk_000001_000003,1.0,3.0,train\na,abcdefghijk_000003_000004,3,4,train\n"
    labels = write(tmp_path / "c.csv", HEADER + rows)
    root = tmp_path / "ds"
    assert convert_labels(labels, src, root) == 0
    kept = root / "jpg" / "a" / "abcdefghijk_000003_000004" / "frames.db"
    stamp = kept.stat().st_mtime_ns
    opens.clear()
    assert convert_labels(labels, src, root) == 0
    assert opens == [] and kept.stat().st_mtime_ns == stamp
    write(labels, HEADER + rows.replace("1.0,3.0", "1.5,3.0"))
    assert convert_labels(labels, src, root) == 0
    assert len(opens) == 1 and kept.stat().st_mtime_ns == stamp
    got = values(root / "jpg" / "a" / "abcdefghijk_000001_000003")
    assert len(got) == 15 and near(got[0], second_value(1))


def stored(root: Path) -> set[tuple[str, str]]:
    return {(p.parent.parent.name, p.parent.name) for p in (root / "jpg").glob("*/*/frames.db")}


def test_builders_ids_are_the_converters_folder_names_in_every_official_layout(tmp_path):
    # HACS: untrimmed <Class_Name>/v_<youtube_id>.mp4, clips cut by time (two collide on integer seconds).
    hacs_src = tmp_path / "hacs_src"
    make_untrimmed(hacs_src / "Archery" / "v_a2X2hz1G6i8.mp4", seconds=19, gop=50)
    make_untrimmed(hacs_src / "Applying_sunscreen" / "v_Zz9_-x1yB0c.mp4", seconds=62, gop=50)
    make_untrimmed(hacs_src / "Archery" / "v_Qq1111111aa.mp4", seconds=3, gop=50)
    csv_path = write(tmp_path / "HACS_clips_v1.1.1.csv", HACS_CSV)
    # Moments in Time: training/<class>/<file>.mp4; Diving-48: flat <vid_name>.mp4; SSv2: flat <id>.webm.
    mit, div, ssv2 = make_moments(tmp_path / "mit"), make_diving(tmp_path / "div"), make_sthv2(tmp_path / "ssv2")
    for sub, name in (("training/blocking", "getty-karate-video-id635808620_4"), ("training/yawning", "flickr-1-2-3_1"),
                      ("training/arresting", "yt-abc_12"), ("validation/blocking", "yt-val_1")):
        make_video(mit / sub / f"{name}.mp4", n_frames=8)
    for name in ("_8Vy3dlHg2w_00000", "_8Vy3dlHg2w_00001", "zzzzzzzzzzz_00007"):
        make_video(div / "rgb" / f"{name}.mp4", n_frames=8)
    for name in ("78687", "42326", "74225"):
        make_video(ssv2 / "20bn-something-something-v2" / f"{name}.webm", n_frames=8, codec="libvpx")
    for fmt, official, src in (("hacs", csv_path, hacs_src), ("moments", mit, mit), ("diving48", div, div),
                                  ("sthv2", ssv2, ssv2)):
        root = tmp_path / fmt
        assert make_labels.main([fmt, str(official), str(root)]) == 0
        labels = root / "labels" / f"{fmt}.csv"
        workers = "2" if fmt == "hacs" else "1"  # the process pool carries segment jobs too
        assert convert_labels(labels, src, root, "--workers", workers) == 0, fmt
        assert stored(root) == {(s.label, s.video_id) for s in read_labels(labels)}, fmt
    got = values(tmp_path / "hacs" / "jpg" / "Archery" / "a2X2hz1G6i8_000015_000017_2")
    assert len(got) == 20 and near(got[0], second_value(15)) and near(got[-1], second_value(17))


def test_missing_sources_and_segments_after_the_end_are_recorded_and_the_rest_converted(tmp_path):
    src = tmp_path / "src"
    make_untrimmed(src / "v_abcdefghijk.mp4", seconds=3)
    write(src / "broken.mp4", "not a video")
    labels = write(tmp_path / "c.csv", HEADER + "a,abcdefghijk_000001_000002,1,2,train\n"
                   "a,nosuchvideo_000001_000002,1,2,train\n"
                   "a,abcdefghijk_000005_000007,5,7,train\n"
                   "b,broken,,,val\n")
    root = tmp_path / "ds"
    assert convert_labels(labels, src, root) == 1
    report = failures(root)
    assert set(report) == {"a/nosuchvideo_000001_000002", "a/abcdefghijk_000005_000007", "b/broken"}
    assert report["a/nosuchvideo_000001_000002"] == f"{labels}:3"
    text = (root / "convert_failures.csv").read_text()
    assert "no source video (looked for nosuchvideo_000001_000002.* or nosuchvideo.* or v_nosuchvideo.*)" in text
    assert "5-7 s): segment 5-7 s starts after the video's end (3.00 s)" in text
    assert stored(root) == {("a", "abcdefghijk_000001_000002")}


@pytest.mark.parametrize("row, message", [
    ("a,abcdefghijk_000002_000002,2,2,train", "c.csv:3: a/abcdefghijk_000002_000002: need time_start < time_end"),
    ("a,abcdefghijk_000000_000002,-1,2,train", "c.csv:3: time_start '-1' must be a non-negative number"),
    ("a,abcdefghijk_000000_000002,1,,train", "c.csv:3: a/abcdefghijk_000000_000002 has only one of"),
    ("zz,abcdefghijk_000001_000003,1,3,train", "c.csv:3: label 'zz' is not in"),
    ("a,abcdefghijk_000001_000003,1.5,3,val", "c.csv:3: video a/abcdefghijk_000001_000003 already listed at line 2"),
])
def test_bad_label_rows_stop_the_run_before_anything_is_converted(tmp_path, capsys, row, message):
    src = tmp_path / "src"
    make_untrimmed(src / "v_abcdefghijk.mp4", seconds=4)
    root = tmp_path / "ds"
    labels = write(root / "labels" / "c.csv", HEADER + "a,abcdefghijk_000001_000003,1,3,train\n")
    write(root / "classes.txt", "a\n")
    assert convert_labels(labels, src, root) == 0
    done = root / "jpg" / "a" / "abcdefghijk_000001_000003"
    before = {p.name: p.stat().st_mtime_ns for p in done.iterdir()}
    capsys.readouterr()
    write(labels, HEADER + "a,abcdefghijk_000001_000003,1,3,train\n" + row + "\n")
    with pytest.raises(SystemExit) as e:
        convert_labels(labels, src, root, "--overwrite")
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and message in err[-1] and "Traceback" not in "\n".join(err)
    assert {p.name: p.stat().st_mtime_ns for p in done.iterdir()} == before


def test_label_mode_argument_errors(tmp_path, capsys):
    for argv in (["--labels", "x.csv", str(tmp_path)], [str(tmp_path), "--source-root", str(tmp_path)],
                 ["--labels", "x.csv", "--source-root", str(tmp_path), str(tmp_path), str(tmp_path)]):
        with pytest.raises(SystemExit) as e:
            convert.main(argv)
        assert e.value.code == 2
    assert "--labels LABELS.csv --source-root SRC ROOT" in capsys.readouterr().err
    labels = write(tmp_path / "c.csv", HEADER + "a,v,,,train\n")
    with pytest.raises(SystemExit):
        convert.main(["--labels", str(labels), "--source-root", str(tmp_path / "none"), str(tmp_path / "ds")])
    assert "none: source folder not found" in capsys.readouterr().err


def test_dataset_converted_from_a_label_file_trains_one_epoch(tmp_path):
    src = tmp_path / "src"
    rows = []
    for label, base in (("left", "aaaaaaaaaaa"), ("right", "bbbbbbbbbbb")):
        for k in range(2):
            yt = f"{base[:-1]}{k}"
            make_untrimmed(src / label / f"v_{yt}.mp4", seconds=5, size=40)
            rows += [f"{label},{yt}_000000_000002,0.0,2.0,train", f"{label},{yt}_000002_000004,2.5,4.5,"
                     + ("val" if k else "train")]
    root = tmp_path / "ds"
    labels = write(root / "labels" / "clips.csv", HEADER + "\n".join(rows) + "\n")
    write(root / "classes.txt", "left\nright\n")
    assert convert_labels(labels, src, root) == 0
    model_dir = tmp_path / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(tiny_train_argv(root, model_dir, "--labels", "clips", network="fr2d_18")) == 0
    with open(model_dir / "val_results.csv", newline="") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1"]


@pytest.mark.parametrize("script, expect", [
    ("train_hacs", {"labels": "hacs", "clip_size": 284, "train_frame_interval": [1, 2], "batch_size": 48,
                    "lr_steps": [40, 60, 75, 90], "end_epoch": 120, "long_cycles": True, "short_cycles": True}),
    ("train_moments", {"labels": "moments", "clip_size": 284, "train_frame_interval": [3, 4], "val_frame_interval": 3,
                       "lr_steps": [25, 50, 70], "end_epoch": 110, "long_cycles": True}),
    ("train_diving48", {"labels": "diving48", "clip_size": 256, "batch_size": 32, "lr_steps": [15, 30, 40],
                        "end_epoch": 100, "long_cycles": False, "short_cycles": False}),
    ("train_sthv2", {"labels": "sthv2", "flip": False}),
])
def test_per_dataset_scripts_set_the_srtg_defaults(script, expect, monkeypatch):
    seen = {}

    def fake_main(argv, defaults):
        seen["args"] = cli.parse_args(argv, defaults)
        return 0

    monkeypatch.setattr(cli, "main", fake_main)
    assert importlib.import_module(script).main(["--batch-size", "7"] if script == "train_sthv2" else []) == 0
    args = seen["args"]
    assert args.clip_length == 16 and args.lr_base == 0.1 and args.network == "srtg_r3d_34"
    assert {k: getattr(args, k) for k in expect} == expect
    if script == "train_sthv2":
        assert args.batch_size == 7  # the command line still wins
    if script == "train_hacs":
        assert importlib.import_module(script).main(["--no-long-cycles", "--no-short-cycles"]) == 0
        assert seen["args"].long_cycles is False and seen["args"].short_cycles is False



def test_a_worker_dying_on_one_source_fails_only_its_clips(tmp_path, monkeypatch):
    # Workers are forked and inherit this patch: opening "v_bad" kills the worker process outright.
    real = convert_segments.open_container

    def crashing(path):
        if "v_bbbbbbbbbbb" in path:
            os._exit(17)
        return real(path)

    monkeypatch.setattr(convert_segments, "open_container", crashing)
    src = tmp_path / "src"
    for yt in ("aaaaaaaaaaa", "bbbbbbbbbbb", "ccccccccccc"):
        make_untrimmed(src / f"v_{yt}.mp4", seconds=3)
    labels = write(tmp_path / "c.csv", HEADER + "".join(
        f"a,{yt}_00000{s}_00000{s + 1},{s},{s + 1},train\n" for yt in ("aaaaaaaaaaa", "bbbbbbbbbbb", "ccccccccccc")
        for s in (0, 1)))
    root = tmp_path / "ds"
    assert convert_labels(labels, src, root, "--workers", "2") == 1
    report = failures(root)
    assert set(report) == {"a/bbbbbbbbbbb_000000_000001", "a/bbbbbbbbbbb_000001_000002"}
    assert "worker process died" in (root / "convert_failures.csv").read_text()
    assert {v for _, v in stored(root)} == {f"{yt}_00000{s}_00000{s + 1}" for yt in ("aaaaaaaaaaa", "ccccccccccc")
                                            for s in (0, 1)}


def test_segment_benchmark_runs_the_four_ways_on_a_tiny_video(tmp_path, capsys):
    from tools.bench import segments as bench_segments

    argv = ["--work", str(tmp_path), "--minutes", "0.5", "--size", "32x32", "--fps", "10", "--keyint", "10",
            "--clips", "0.5,25", "--repeats", "1"]
    assert bench_segments.main(argv) == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| (")]
    assert len(rows) == 4 and {r[6].strip() for r in rows} == {"40"}  # every way writes the same 2 x 20 frames
    decoded = [int(r[4]) for r in rows]
    assert decoded[0] < decoded[1] <= 300 and decoded[3] > decoded[1]  # seeking skips; per clip from 0 redoes
