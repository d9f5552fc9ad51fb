"""Every tool that runs a model on stored frames refuses a crop far larger than the frames, in one line, before it
allocates anything (evaluate, predict and extract_features, like the trainer's --clip-size)."""
from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_predict import make_checkpoint
from tests.train_util import make_store

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("limits")
    store = make_store(base / "data", classes=2, videos_per_class=2, frames=12)
    classes = (store / "classes.txt").read_text().split()
    return store, make_checkpoint(base / "m.pth", classes=classes)


def _limit_memory() -> None:
    # A runaway allocation fails here instead of taking the machine's memory.
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))


def _run(tmp_path, *argv):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", *argv], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=240, preexec_fn=_limit_memory)


@pytest.mark.parametrize("tool", ["tools.evaluate", "tools.extract_features", "tools.predict"])
def test_a_crop_far_larger_than_the_stored_frames_is_refused_in_one_line(setup, tmp_path, tool):
    store, ckpt = setup
    video = next((store / "jpg").glob("*/*"))
    args = {"tools.evaluate": ["--dataset", str(store), "--workers", "0", "--out", str(tmp_path)],
            "tools.extract_features": ["--dataset", str(store), "--split", "all", "--out", str(tmp_path / "f.npz"), "--workers", "0"],
            "tools.predict": [str(video)]}[tool]
    proc = _run(tmp_path, tool, "--checkpoint", str(ckpt), *args, "--crop-size", "8000")
    assert proc.returncode in (1, 2), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "--crop-size 8000 needs frames" in line]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert "40x32 frames" in errors[0] and "at most 4x" in errors[0]
