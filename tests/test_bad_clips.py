"""A clip that cannot be read during training: skipped and recorded (the default), or one line naming the repair.

Skipping replaces the item by another video drawn from the item's own generator, so a run stays reproducible and
an exact resume stays exact; every bad video is recorded once in ``<run>/bad_videos.csv``; too many bad videos in
an epoch stop the run with one line. Evaluation always fails loudly.
"""
from __future__ import annotations

import csv
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data.dataset import VideoDataset
from data.integrity import check_video
from data.loader import build_loader, shutdown_workers
from data.store import FrameStoreError, open_video
from tests.test_dataset import RAW, frame_indices_of, make_root
from tests.train_util import make_store, tiny_train_argv
from train import cli
from train.checkpoint import checkpoint_path, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def corrupt_frames(video_dir: Path, frames=None) -> None:
    """Flip one byte inside the JPEG of each frame (or of `frames`): the stored checksums no longer match."""
    conn = sqlite3.connect(video_dir / "frames.db")
    with conn:
        rows = conn.execute("SELECT idx, jpeg FROM frames").fetchall()
        for idx, blob in rows:
            if frames is None or idx in frames:
                changed = bytearray(blob)
                changed[len(changed) // 2] ^= 0xFF
                conn.execute("UPDATE frames SET jpeg = ? WHERE idx = ?", (bytes(changed), idx))
    conn.close()


# ---------------------------------------------------------------------------------------------- dataset
@pytest.fixture
def root(tmp_path):
    root = make_root(tmp_path, [("walk", f"w{i}", 20, "train") for i in range(3)]
                     + [("run", f"r{i}", 20, "train") for i in range(3)] + [("run", "v0", 20, "val")],
                     classes=["walk", "run"])
    corrupt_frames(root / "jpg" / "walk" / "w1")
    return root


def test_a_bad_video_is_replaced_by_another_real_clip_drawn_from_the_item_seed(root):
    def item(ds):
        torch.manual_seed(7)
        ds.set_epoch(3)
        clip, label, video = ds[1]  # w1, the corrupt one
        return tuple(frame_indices_of(clip)), label, video, float(clip.min())

    ds = VideoDataset(root, split="train", clip_length=4, frame_interval=[1, 2, 3], transform=RAW,
                      bad_clips="skip")
    frames, label, video, lowest = item(ds)
    assert video != 1 and label == ds.labels[video]  # another video, with its own label
    assert lowest >= 10 and list(frames) == sorted(frames) and len(set(frames)) == 4  # real frames, never zeros
    assert ds.bad_videos(3) == [1]
    again = VideoDataset(root, split="train", clip_length=4, frame_interval=[1, 2, 3], transform=RAW,
                         bad_clips="skip")
    assert item(again) == (frames, label, video, lowest)  # the same replacement in a fresh process state


def test_workers_replace_bad_videos_the_same_way_every_run(root):
    def epoch(seed):
        ds = VideoDataset(root, split="train", clip_length=4, frame_interval=[1, 2, 3], transform=RAW,
                          bad_clips="skip")
        ds.set_epoch(1)
        loader = build_loader(ds, 2, train=True, workers=2, seed=seed)
        loader.sampler.set_epoch(1)
        items = [(int(v), tuple(frame_indices_of(c))) for clips, _, videos in loader for c, v in zip(clips, videos)]
        return items, ds.bad_videos(1)

    first, bad = epoch(5)
    assert bad == [1] and len(first) == 6 and 1 not in [v for v, _ in first]
    assert epoch(5) == (first, bad)


def test_fail_policy_names_the_video_the_frame_and_the_repair_command(root):
    ds = VideoDataset(root, split="train", clip_length=4, frame_interval=1, transform=RAW, bad_clips="fail")
    with pytest.raises(FrameStoreError) as e:
        ds[1]
    text = str(e.value)
    assert str(root / "jpg" / "walk" / "w1" / "frames.db") in text and "fails its checksum" in text
    assert "frame " in text and f"python -m tools.verify {root} --reconvert VIDEOS" in text
    assert "\n" not in text


def test_evaluation_never_skips_a_bad_video(root):
    corrupt_frames(root / "jpg" / "run" / "v0")
    ds = VideoDataset(root, split="val", clip_length=4, frame_interval=1, transform=RAW, bad_clips="skip")
    with pytest.raises(FrameStoreError, match="v0/frames.db.*python -m tools.verify"):
        ds[0]


def test_a_video_with_one_bad_frame_is_skipped_only_for_clips_that_touch_it(root):
    corrupt_frames(root / "jpg" / "walk" / "w2", frames={19})
    ds = VideoDataset(root, split="train", clip_length=4, frame_interval=1, transform=RAW, bad_clips="skip")
    videos = set()
    for epoch in range(1, 30):
        ds.set_epoch(epoch)
        videos.add(ds[2][2])
    assert 2 in videos and len(videos) > 1 and 2 in set().union(*(ds.bad_videos(e) for e in range(1, 30)))


# ---------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def clean_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("bad_clips") / "data", classes=2, videos_per_class=4, frames=12)


@pytest.fixture
def store(clean_store, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(clean_store, copy)
    return copy


def _train_videos(store: Path) -> list[Path]:
    rows = list(csv.DictReader((store / "labels" / "all.csv").open()))
    return [store / "jpg" / r["label"] / r["video_id"] for r in rows if r["split"] == "train"]


def _argv(store, model_dir, *extra):
    return tiny_train_argv(store, model_dir, "--workers", "2", "--batch-size", "2", *extra, network="r3d_18")


def _errors(err: str) -> list[str]:
    assert "Traceback" not in err, err[-3000:]
    return [line for line in err.splitlines() if line.startswith("error: ")]


def test_training_skips_a_bad_video_records_it_once_and_finishes(store, tmp_path, capsys):
    bad = _train_videos(store)[0]
    corrupt_frames(bad)
    run = tmp_path / "run"
    assert cli.main(_argv(store, run, "--end-epoch", "2", "--max-bad-share", "0.5")) == 0
    err = capsys.readouterr().err
    rows = list(csv.DictReader((run / "bad_videos.csv").open()))
    assert [r["video"] for r in rows] == [f"{bad.parent.name}/{bad.name}"]
    assert "fails its checksum" in rows[0]["problem"] and rows[0]["epoch"] == "1"
    assert err.count(f"{bad.parent.name}/{bad.name}") == 1, err[-3000:]  # warned once, not every epoch
    assert "bad_videos.csv" in err


def test_too_many_bad_videos_in_an_epoch_stop_the_run_with_one_line(store, tmp_path, capsys):
    for video in _train_videos(store)[:2]:
        corrupt_frames(video)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        cli.main(_argv(store, run))  # default share: 2 of 6 videos is far more than 0.1% (and than one video)
    assert e.value.code == 1
    (line,) = _errors(capsys.readouterr().err)
    assert "2 of 6 training videos" in line and "--max-bad-share" in line and str(run / "bad_videos.csv") in line
    assert "python -m tools.verify" in line
    assert (run / "bad_videos.csv").is_file()


def test_one_bad_video_of_a_small_dataset_does_not_stop_the_run_unless_the_share_is_zero(store, tmp_path, capsys):
    corrupt_frames(_train_videos(store)[0])
    # 1 of 6 is above the default 0.1%, but one video is always tolerated: the stop is for a failing store
    assert cli.main(_argv(store, tmp_path / "default")) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli.main(_argv(store, tmp_path / "strict", "--max-bad-share", "0"))
    assert e.value.code == 1
    (line,) = _errors(capsys.readouterr().err)
    assert "1 of 6 training videos" in line


def test_an_exact_resume_with_a_bad_video_equals_the_straight_run(store, tmp_path):
    corrupt_frames(_train_videos(store)[2])
    common = ("--max-bad-share", "0.5", "--random-seed", "4", "--workers", "0")  # the workers' draws: see above
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert cli.main(_argv(store, straight, "--end-epoch", "2", *common)) == 0
    assert cli.main(_argv(store, split, "--end-epoch", "1", *common)) == 0
    assert cli.main(_argv(store, split, "--end-epoch", "2", "--resume-epoch", "1", *common)) == 0
    a = load_checkpoint(checkpoint_path(straight, "r3d_18", 2))["model"]
    b = load_checkpoint(checkpoint_path(split, "r3d_18", 2))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(list(csv.DictReader((split / "bad_videos.csv").open()))) == 1


@pytest.mark.parametrize("damage", ["checksum", "another tool", "column types"])
def test_bad_clips_fail_is_one_line_naming_the_video_and_the_repair(store, tmp_path, damage):
    bad = _train_videos(store)[0]
    db = bad / "frames.db"
    if damage == "checksum":
        corrupt_frames(bad)
    else:
        db.unlink()
        conn = sqlite3.connect(db)
        if damage == "another tool":
            conn.execute("CREATE TABLE clips (name TEXT, data BLOB)")
        else:
            conn.execute("CREATE TABLE frames (idx TEXT, jpeg TEXT)")
            conn.executemany("INSERT INTO frames VALUES (?, ?)", [(str(i), "x") for i in range(12)])
        conn.commit()
        conn.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "train", *_argv(store, tmp_path / "run", "--bad-clips", "fail")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0
    (line,) = _errors(proc.stderr)
    assert str(db) in line and f"python -m tools.verify {store} --reconvert VIDEOS" in line, line
    if damage == "checksum":
        assert "fails its checksum" in line and "frame " in line


def test_the_repair_command_the_message_names_repairs_the_video(clean_store, store, tmp_path, capsys):
    bad = _train_videos(store)[0]
    corrupt_frames(bad)
    with pytest.raises(SystemExit):
        cli.main(_argv(store, tmp_path / "run", "--bad-clips", "fail", "--workers", "0"))
    (line,) = _errors(capsys.readouterr().err)
    command = line[line.index("python -m tools.verify"):line.index(" (VIDEOS:")].split()
    assert command[:3] == ["python", "-m", "tools.verify"] and command[-1] == "VIDEOS"
    videos = clean_store.parent / "videos"  # what the store was converted from
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, *command[1:-1], str(videos)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "re-converted 1 of 1 broken video(s)" in proc.stderr
    assert check_video(bad, decode=True).ok
    with open_video(bad) as reader:
        assert reader.read(list(range(len(reader)))).shape[0] == len(reader)


def test_evaluation_with_workers_fails_in_one_line_naming_the_repair(store, tmp_path, capsys):
    from tests.test_predict import make_checkpoint
    from tools import evaluate

    val = [v for v in (store / "jpg").glob("*/*") if v not in _train_videos(store)][0]
    corrupt_frames(val)
    ckpt = make_checkpoint(tmp_path / "m.pth", classes=(store / "classes.txt").read_text().split())
    try:
        with pytest.raises(SystemExit) as e:
            evaluate.main(["--checkpoint", str(ckpt), "--dataset", str(store), "--workers", "2", "--out",
                           str(tmp_path)])
    finally:
        shutdown_workers()  # the exception's traceback keeps the loader iterating in this process
    assert e.value.code == 2
    (line,) = _errors(capsys.readouterr().err)
    assert str(val / "frames.db") in line and "python -m tools.verify" in line
