"""The converter under SIGINT/SIGTERM (real subprocesses): workers stopped, nothing half-done marked complete,
one line on how to resume, exit 130/143, and a rerun that finishes the job."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data.store import N_FRAMES_NAME, TMP_NAME, open_video
from tools import synthetic

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("signals") / "videos"
    synthetic.generate(out, classes=2, videos_per_class=6, frames=30, size=(64, 80), workers=1, progress=False)
    return out


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_workers_keeps_nothing_half_done_and_says_how_to_resume(videos, tmp_path, sig, code):
    root = tmp_path / "root"
    # 20x upsampling in time makes each video slow enough (600 frames) for the signal to land mid-run.
    cmd = [sys.executable, "-m", "tools.convert", str(videos), str(root), "--workers", "2", "--fps", "500"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = _wait_for(lambda: len(_children(proc.pid)) >= 2 and any(root.glob(f"jpg/*/*/{TMP_NAME}")), 120)
        assert started, "the converter never started writing"
        workers = _children(proc.pid)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("interrupted by")]
    assert len(lines) == 1 and signal.Signals(sig).name in lines[0] and "run the same command again" in lines[0]
    assert _wait_for(lambda: not any(_alive(p) for p in workers), 15), "pool workers outlived the converter"
    done = list(root.glob(f"jpg/*/*/{N_FRAMES_NAME}"))
    assert len(done) < 12, "the signal came too late to test anything"
    for marker in done:  # whatever is marked complete is complete
        with open_video(marker.parent) as reader:
            assert len(reader) == int(marker.read_text())
    assert not list(root.glob(f"jpg/*/*/{TMP_NAME}")), "half-written databases left behind"
    assert not (root / "labels" / "all.csv").exists(), "an interrupted run must not write the label file"

    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{len(done)} skipped (complete)" in rerun.stderr
    assert len(list(root.glob(f"jpg/*/*/{N_FRAMES_NAME}"))) == 12 and (root / "labels" / "all.csv").is_file()
