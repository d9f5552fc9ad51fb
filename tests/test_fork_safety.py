"""Worker pools forked after this process has used OpenCV finish instead of deadlocking.

OpenCV's idle pool threads sleep on a condition variable; a forked child that calls ``cv2.setNumThreads`` waits
for those (absent) sleepers for ever. Each case runs in its own interpreter, in its own session, under a timeout:
the child starts OpenCV's pool, lets it go idle, then forks; a hang fails the test and kills every process of
the session, so nothing is left behind.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import pytest

from data.fork_safety import fork_context, opencv_single_threaded

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 120

# Starts OpenCV's thread pool in this interpreter and waits until its threads sleep on their condition variable
# (the state a test session is in after any test that resized or warped a large image).
IDLE_OPENCV_POOL = textwrap.dedent("""
    import os, time
    import cv2, numpy as np
    cv2.setNumThreads(2)
    before = len(os.listdir("/proc/self/task"))
    cv2.warpAffine(np.zeros((720, 1280, 3), np.uint8), np.eye(2, 3), (1280, 720))
    assert len(os.listdir("/proc/self/task")) > before, "OpenCV started no pool threads: nothing is tested"
    time.sleep(0.3)
""")


def run_bounded(code: str, tmp_path: Path) -> str:
    """Run `code` after `IDLE_OPENCV_POOL` in a fresh interpreter; its stdout, or fail naming the hang."""
    proc = subprocess.Popen([sys.executable, "-c", IDLE_OPENCV_POOL + textwrap.dedent(code), str(tmp_path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the hung forked workers too, not only the interpreter
        proc.communicate()
        pytest.fail(f"still running after {TIMEOUT_S} s: forked workers deadlocked")
    assert proc.returncode == 0, err[-2000:]
    return out


def test_synthetic_pool_after_opencv_ran_here_finishes_and_keeps_the_thread_count(tmp_path):
    out = run_bounded("""
        import sys
        from pathlib import Path
        from tools.synthetic import generate
        paths = generate(Path(sys.argv[1]) / "v", classes=2, videos_per_class=2, frames=4, size=(32, 40),
                         workers=2, progress=False)
        print(len(paths), cv2.getNumThreads())
    """, tmp_path)
    assert out.split() == ["4", "2"]
    assert len(list((tmp_path / "v").rglob("*.mp4"))) == 4


def test_converter_pool_after_opencv_ran_here_finishes(tmp_path):
    out = run_bounded("""
        import sys
        from pathlib import Path
        from tools import convert
        from tools.synthetic import generate
        base = Path(sys.argv[1])
        generate(base / "v", classes=2, videos_per_class=2, frames=8, size=(32, 40), workers=1, progress=False)
        rc = convert.main([str(base / "v"), str(base / "s"), "--workers", "2", "--val-fraction", "0"])
        print(rc, cv2.getNumThreads())
    """, tmp_path)
    assert out.split()[-2:] == ["0", "2"]
    assert len(list((tmp_path / "s" / "jpg").glob("*/*/frames.db"))) == 4


def test_training_loader_workers_run_opencv_on_an_inherited_pool(tmp_path):
    # DataLoader workers never call cv2.setNumThreads (data.loader), so a pool inherited by fork is harmless.
    out = run_bounded("""
        import sys
        from pathlib import Path
        from data.dataset import VideoDataset
        from data.loader import build_loader
        from data.transforms import train_transform
        from tests.train_util import make_store
        store = make_store(Path(sys.argv[1]), classes=2, videos_per_class=2, frames=8, val_fraction=0.5)
        ds = VideoDataset(store, split="train", clip_length=4, frame_interval=1, transform=train_transform(24))
        shapes = [tuple(clips.shape) for clips, _, _ in build_loader(ds, 1, train=True, workers=2, seed=0)]
        print(shapes)
    """, tmp_path)
    assert out.strip() == "[(1, 3, 4, 24, 24), (1, 3, 4, 24, 24)]"


def test_opencv_single_threaded_restores_the_count_also_on_error():
    previous = cv2.getNumThreads()
    try:
        cv2.setNumThreads(2)
        with opencv_single_threaded():
            assert cv2.getNumThreads() == 1
        assert cv2.getNumThreads() == 2
        with pytest.raises(RuntimeError), opencv_single_threaded():
            raise RuntimeError("boom")
        assert cv2.getNumThreads() == 2
        cv2.setNumThreads(1)
        with opencv_single_threaded():
            assert cv2.getNumThreads() == 1
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(previous)


def test_fork_context_is_fork_where_the_platform_has_it():
    ctx = fork_context()
    assert (ctx is not None and ctx.get_start_method() == "fork") == (sys.platform != "win32")
