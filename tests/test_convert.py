"""The converter CLI on tiny generated videos: output, options, resume after a kill, bad input, crashed workers."""
from __future__ import annotations

import csv
import os
import sys

import pytest

from data.labels import read_classes, read_labels
from data.store import open_video
from tests.unprivileged import run_unprivileged
from tests.videos_util import frame_value, frame_values, make_video
from tools import convert
from tools.ingest import jobs


def close_to(values, expected, tol=4):
    return len(values) == len(expected) and all(abs(a - b) <= tol for a, b in zip(values, expected))


def run(videos, root, *extra):
    return convert.main([str(videos), str(root), "--workers", "1", *extra])


def failures(root):
    with open(root / "convert_failures.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "reason"]
    return {os.path.basename(p): reason for p, reason in rows[1:]}


@pytest.fixture
def videos(tmp_path):
    """Two classes (one with spaces and unicode) of three 12-frame videos, mp4/mpeg4 and one mkv/h264."""
    src = tmp_path / "videos"
    for label in ("walk", "jump high café"):
        for i in range(3):
            make_video(src / label / f"{label[:4]} {i}.mp4")
    make_video(src / "walk" / "h264 clip.mkv", codec="h264")
    (src / "walk" / "notes.txt").write_text("not a video, ignored")
    return src


def test_convert_folder_dataset(videos, tmp_path):
    root = tmp_path / "ds"
    assert run(videos, root) == 0
    for label, vid in (("walk", "walk 0"), ("jump high café", "jump 2"), ("walk", "h264 clip")):
        d = root / "jpg" / label / vid
        assert (d / "n_frames").read_text() == "12\n" and not (d / "frames.db.tmp").exists()
        with open_video(d) as v:
            assert len(v) == 12 and v.frame_size == (32, 48)
            assert close_to(frame_values(v.read([0, 7, 11, 7])), [frame_value(i) for i in (0, 7, 11, 7)])
            meta = v.meta
        assert meta["quality"] == "90" and meta["source"].startswith(vid)
        assert meta["source_size"] == str((videos / label / meta["source"]).stat().st_size)
        assert meta["codec"] in ("mpeg4", "h264") and float(meta["fps"]) == 25.0
    assert not (root / "convert_failures.csv").exists()
    assert read_classes(root / "classes.txt") == ["jump high café", "walk"]
    samples = read_labels(root / "labels" / "all.csv")
    assert len(samples) == 7 and {s.video_id for s in samples} >= {"walk 0", "h264 clip", "jump 1"}
    for label in ("walk", "jump high café"):  # at least one val video per class, never all
        splits = [s.split for s in samples if s.label == label]
        assert 1 <= splits.count("val") < len(splits)
    # Deterministic: a second dataset from the same videos gets the same splits.
    assert run(videos, tmp_path / "ds2") == 0
    assert read_labels(tmp_path / "ds2" / "labels" / "all.csv") == samples


def test_options_short_side_quality_fps(tmp_path):
    src = tmp_path / "videos"
    make_video(src / "a" / "v.mp4", n_frames=12, height=32, width=48)
    root = tmp_path / "ds"
    assert run(src, root, "--short-side", "16", "--quality", "50", "--fps", "12.5", "--val-fraction", "0") == 0
    with open_video(root / "jpg" / "a" / "v") as v:
        assert len(v) == 6 and v.frame_size == (16, 24)
        assert v.meta["quality"] == "50" and float(v.meta["fps"]) == 12.5 and v.meta["short_side"] == "16"
        assert close_to(frame_values(v.read(range(6))), [frame_value(i) for i in range(0, 12, 2)])
    # Upsampling repeats frames.
    assert run(src, tmp_path / "up", "--fps", "50") == 0
    with open_video(tmp_path / "up" / "jpg" / "a" / "v") as v:
        assert 22 <= len(v) <= 24
        assert close_to(frame_values(v.read([0, 1, 2, 3])), [frame_value(i) for i in (0, 0, 1, 1)])


def test_resume_after_kill_redoes_only_incomplete(videos, tmp_path):
    root = tmp_path / "ds"
    assert run(videos, root) == 0
    dirs = sorted(p for p in (root / "jpg").glob("*/*"))
    stamp = {d: (d / "frames.db").stat().st_mtime_ns for d in dirs}
    # Rerun: nothing to do.
    assert run(videos, root) == 0
    assert {d: (d / "frames.db").stat().st_mtime_ns for d in dirs} == stamp
    # Simulate kills: (1) a half-written temp file and no database, (2) a database renamed but no marker yet,
    # (3) a temp file left beside an old database whose marker was already removed.
    killed_tmp, killed_marker, killed_both = dirs[0], dirs[1], dirs[2]
    (killed_tmp / "frames.db").unlink()
    (killed_tmp / "n_frames").unlink()
    (killed_tmp / "frames.db.tmp").write_bytes(b"SQLite format 3\x00 half written")
    (killed_marker / "n_frames").unlink()
    (killed_both / "n_frames").unlink()
    (killed_both / "frames.db.tmp").write_bytes(b"")
    # (4) a source that changed since its conversion.
    changed = dirs[3]
    meta = open_video(changed).meta
    source = videos / changed.parent.name / meta["source"]
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    assert run(videos, root) == 0
    redone = {killed_tmp, killed_marker, killed_both, changed}
    for d in dirs:
        assert (d / "n_frames").read_text() == "12\n" and not (d / "frames.db.tmp").exists()
        assert len(open_video(d)) == 12
        if d not in redone:
            assert (d / "frames.db").stat().st_mtime_ns == stamp[d], f"{d} was rewritten"
    # Other settings count as a change; --overwrite redoes everything.
    assert run(videos, root, "--quality", "80") == 0
    assert all(open_video(d).meta["quality"] == "80" for d in dirs)
    stamp = {d: (d / "frames.db").stat().st_mtime_ns for d in dirs}
    assert run(videos, root, "--quality", "80", "--overwrite") == 0
    assert all((d / "frames.db").stat().st_mtime_ns != stamp[d] for d in dirs)


def test_bad_videos_are_recorded_and_the_run_goes_on(tmp_path):
    src = tmp_path / "videos"
    make_video(src / "ok" / "good.mp4")
    (src / "ok" / "empty.mp4").write_bytes(b"")
    (src / "ok" / "text.mp4").write_text("hello, I am not a video\n" * 10)
    data = make_video(tmp_path / "full.mp4", n_frames=60).read_bytes()
    (src / "ok" / "truncated.mp4").write_bytes(data[: len(data) // 2])
    mkv = make_video(tmp_path / "full.mkv", n_frames=60, codec="h264").read_bytes()
    (src / "ok" / "truncated_mkv.mkv").write_bytes(mkv[: int(len(mkv) * 0.6)])
    make_video(src / "ok" / " leading space.mp4")
    root = tmp_path / "ds"
    assert run(src, root) == 1
    failed = failures(root)
    assert set(failed) == {"empty.mp4", "text.mp4", "truncated.mp4", "truncated_mkv.mkv", " leading space.mp4"}
    assert "empty file" in failed["empty.mp4"]
    assert "cannot open as video" in failed["text.mp4"]
    assert "truncated" in failed["truncated_mkv.mkv"]
    assert "leading or trailing spaces" in failed[" leading space.mp4"]
    assert len(open_video(root / "jpg" / "ok" / "good")) == 12
    for name in ("empty", "text", "truncated", "truncated_mkv"):
        d = root / "jpg" / "ok" / name
        assert not (d / "n_frames").exists() and not (d / "frames.db").exists() and not (d / "frames.db.tmp").exists()
    assert [s.video_id for s in read_labels(root / "labels" / "all.csv")] == ["good"]
    # Once the bad files are gone a rerun succeeds and removes the stale failure report.
    for name in failed:
        (src / "ok" / name).unlink()
    assert run(src, root) == 0 and not (root / "convert_failures.csv").exists()


def test_unreadable_video(tmp_path):
    """A video the converter may not read is a recorded failure, the others are converted (run with permission
    bits enforced, also under root: tests/unprivileged.py)."""
    src = tmp_path / "videos"
    make_video(src / "a" / "good.mp4")
    locked = make_video(src / "a" / "locked.mp4")
    locked.chmod(0)
    try:
        result = run_unprivileged([sys.executable, "-m", "tools.convert", str(src), str(tmp_path / "ds"),
                                   "--workers", "1"], cwd=tmp_path)
    finally:
        locked.chmod(0o644)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "permission denied" in failures(tmp_path / "ds")["locked.mp4"]
    assert len(open_video(tmp_path / "ds" / "jpg" / "a" / "good")) == 12


def test_bad_arguments_exit_2(tmp_path, capsys):
    (tmp_path / "empty" / "class").mkdir(parents=True)
    (tmp_path / "empty" / "class" / "readme.txt").write_text("no videos here")
    cases = [(tmp_path / "missing", "no such folder"), (tmp_path / "empty", "no videos found")]
    for videos, message in cases:
        with pytest.raises(SystemExit) as exc:
            run(videos, tmp_path / "ds")
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert f"error: {videos}: {message}" in err
    make_video(tmp_path / "v" / "a" / "x.mp4", n_frames=2)
    with pytest.raises(SystemExit) as exc:
        run(tmp_path / "v", tmp_path / "ds", "--quality", "0")
    assert exc.value.code == 2 and "--quality" in capsys.readouterr().err


def test_parallel_run_survives_a_crashing_worker(videos, tmp_path, monkeypatch):
    # Workers are forked, so they inherit this patch: decoding "walk 1" kills its worker process outright.
    real = jobs.decode_frames

    def crashing(job, info):
        if job.video_id == "walk 1":
            os._exit(17)
        return real(job, info)

    monkeypatch.setattr(jobs, "decode_frames", crashing)
    root = tmp_path / "ds"
    assert convert.main([str(videos), str(root), "--workers", "2"]) == 1
    assert "worker process died" in failures(root)["walk 1.mp4"]
    done = [d for d in (root / "jpg").glob("*/*") if (d / "n_frames").exists()]
    assert len(done) == 6 and all(len(open_video(d)) == 12 for d in done)
    assert not (root / "jpg" / "walk" / "walk 1" / "n_frames").exists()
