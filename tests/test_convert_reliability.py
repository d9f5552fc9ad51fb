"""The converter and the video readers facing runaway or odd inputs: bounded --fps/--short-side, FIFOs and
dangling symlinks, an unusable ROOT, and a database with a hole that must be converted again."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from data.store import open_video
from tests.test_convert import failures, run
from tests.unprivileged import run_unprivileged
from tests.videos_util import make_video

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def videos(tmp_path):
    src = tmp_path / "videos"
    for i in range(2):
        make_video(src / "walk" / f"v{i}.mp4")
    return src


@pytest.mark.parametrize("flag, value, message", [
    ("--fps", "inf", "--fps must be a frame rate in (0, 1000], got inf"),
    ("--fps", "nan", "--fps must be a frame rate in (0, 1000], got nan"),
    ("--fps", "1e6", "--fps must be a frame rate in (0, 1000], got 1000000.0"),
    ("--short-side", "100000", "--short-side must be in 8..4096 pixels, got 100000"),
    ("--short-side", "2", "--short-side must be in 8..4096 pixels, got 2"),
])
def test_runaway_settings_are_refused_before_anything_is_written(videos, tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit) as e:
        run(videos, tmp_path / "root", flag, value)
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "root").exists()


def test_fifo_and_dangling_symlink_fail_with_their_reason(videos, tmp_path):
    os.mkfifo(videos / "walk" / "pipe.mp4")
    (videos / "walk" / "gone.mp4").symlink_to(tmp_path / "nowhere.mp4")
    root = tmp_path / "root"
    assert run(videos, root) == 1  # the two real videos converted, two failures reported
    reasons = failures(root)
    assert reasons["pipe.mp4"].startswith("not a regular file (a FIFO (named pipe))")
    assert reasons["gone.mp4"].startswith("dangling symbolic link (its target")
    assert len(open_video(root / "jpg" / "walk" / "v0")) == 12


def test_reading_a_fifo_as_a_video_does_not_hang(tmp_path):
    fifo = tmp_path / "x.mp4"
    os.mkfifo(fifo)
    code = f"from tools.inference.video_source import open_source; open_source({str(fifo)!r})"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "x.mp4: not a regular file (a FIFO (named pipe))" in proc.stderr


def test_root_that_is_a_file_or_not_writable_is_one_line(videos, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(SystemExit) as e:
        run(videos, afile)
    assert e.value.code == 2 and "afile: exists and is not a folder" in capsys.readouterr().err
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = run_unprivileged([sys.executable, "-m", "tools.convert", str(videos), str(locked / "root")],
                              cwd=tmp_path)
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "not writable" in err[-1] and err[-1].startswith("error: "), result.stderr
    assert not list(locked.iterdir())


def test_a_database_with_a_hole_is_converted_again(videos, tmp_path):
    root = tmp_path / "root"
    assert run(videos, root) == 0
    with sqlite3.connect(root / "jpg" / "walk" / "v0" / "frames.db") as conn:
        conn.execute("DELETE FROM frames WHERE idx = 5")
    assert run(videos, root) == 0
    assert len(open_video(root / "jpg" / "walk" / "v0").read(list(range(12)))) == 12
