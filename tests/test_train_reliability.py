"""The trainer facing hostile input: non-finite models and options, oversized clips, a full disk, stale temp
files, unwritable log files and checkpoints of another width: one clear line and the right exit code each."""
from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train_util import make_store, tiny_train_argv
from train import cli
from train.checkpoint import best_checkpoint_path, checkpoint_path, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("reliability") / "data", classes=2, videos_per_class=3, frames=12)


def _argv(store, model_dir, *extra, network="r3d_18"):
    return tiny_train_argv(store, model_dir, "--debug-mode", *extra, network=network)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err[-3000:]
    return errors[0]


def test_a_non_finite_model_is_never_saved_nor_best_and_exits_one(store, tmp_path, capsys):
    model_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        cli.main(_argv(store, model_dir, "--lr-base", "1e30"))
    assert e.value.code == 1
    line = _error_line(capsys)
    assert re.search(r"epoch 1: (\d+ of \d+ model tensors hold NaN/inf|validation loss is nan).*not saved", line), line
    assert not best_checkpoint_path(model_dir, "r3d_18").exists()
    assert not checkpoint_path(model_dir, "r3d_18", 1).exists()


@pytest.mark.parametrize("flag, value", [("--lr-base", "inf"), ("--width-mult", "inf"), ("--warmup-epochs", "nan"),
                                         ("--lr-factor", "inf"), ("--weight-decay", "nan"), ("--lr-base", "nan")])
def test_non_finite_options_are_refused(store, tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as e:
        cli.main(_argv(store, tmp_path / "run", flag, value))
    assert e.value.code == 2
    assert f"argument {flag}: expected a" in capsys.readouterr().err


def test_a_clip_far_larger_than_the_stored_frames_is_refused(store, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(_argv(store, tmp_path / "run", "--clip-size", "4000"))
    assert e.value.code == 2
    line = _error_line(capsys)
    assert "--clip-size 4000 needs frames with a short side of 4571 px" in line and "40x32" in line, line


def test_resuming_a_checkpoint_of_another_width_names_the_width(store, tmp_path, capsys):
    model_dir = tmp_path / "run"
    assert cli.main(_argv(store, model_dir)) == 0
    capsys.readouterr()
    argv = _argv(store, model_dir, "--resume-epoch", "1", "--end-epoch", "2")
    argv[argv.index("--width-mult") + 1] = "0.25"
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    line = _error_line(capsys)
    assert "trained with width_mult=0.125, this run asks for width_mult=0.25" in line, line


def test_stale_checkpoint_temp_files_are_removed_at_start(store, tmp_path):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=60)
    stale = model_dir / f".r3d_18_ep-0001.pth.tmp-{dead.pid}-0a1b2c3d"
    stale.write_bytes(b"\0" * 1000)
    alive = model_dir / f".r3d_18_ep-0001.pth.tmp-{os.getppid()}-0a1b2c3d"  # a live writer's file is kept
    alive.write_bytes(b"\0")
    assert cli.main(_argv(store, model_dir)) == 0
    assert not stale.exists() and alive.exists()


def _limit_file_size() -> None:
    # As on a full disk: writes past 1 MB fail (EFBIG) instead of killing the process with SIGXFSZ.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))


def test_a_failed_checkpoint_write_is_one_line_keeps_the_previous_and_exits_one(store, tmp_path):
    model_dir = tmp_path / "run"
    assert cli.main(_argv(store, model_dir)) == 0
    previous = checkpoint_path(model_dir, "r3d_18", 1)
    assert previous.stat().st_size > 1_000_000  # so that the next save must fail
    cmd = [sys.executable, "-m", "train", *_argv(store, model_dir, "--resume-epoch", "1", "--end-epoch", "2")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240, preexec_fn=_limit_file_size)
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "r3d_18_ep-0002.pth: cannot save the checkpoint (File too large); earlier checkpoints are intact" in errors[0]
    assert load_checkpoint(previous)["epoch"] == 1  # intact
    assert not checkpoint_path(model_dir, "r3d_18", 2).exists()
    assert not list(model_dir.glob(".*.tmp-*"))


def test_log_file_on_a_device_is_refused_up_front(store, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(_argv(store, tmp_path / "run", "--log-file", "/dev/full"))
    assert e.value.code == 2
    assert "--log-file /dev/full: not a regular file" in _error_line(capsys)
