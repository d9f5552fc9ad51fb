"""The real `torchrun` launcher on CPU (gloo): every run exits 0 with its final checkpoint; start errors once.

These launch `python -m torch.distributed.run --standalone --nproc_per_node=2 -m train ...` as a subprocess, so
the exit path torchrun takes (both ranks leaving the process group and the interpreter) is what is tested, not
`mp.spawn`'s. Every launch is bounded by a timeout so a hang fails the test instead of stalling CI.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train_util import make_store

RUNS = 4
TIMEOUT_S = 240


def _torchrun(store: Path, model_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "train",
           "--dataset", str(store), "--model-dir", str(model_dir), "--network", "r3d_18", "--width-mult", "0.125",
           "--clip-length", "4", "--clip-size", "32", "--batch-size", "2", "--workers", "0", "--end-epoch", "1",
           *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    root = Path(__file__).resolve().parents[1]
    try:
        return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"torchrun did not finish in {TIMEOUT_S} s:\n{(e.stderr or '')[-3000:]}")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("torchrun") / "data", classes=2, videos_per_class=4, frames=12)


def test_torchrun_runs_exit_zero_with_the_final_checkpoint_every_time(store, tmp_path):
    for i in range(RUNS):
        model_dir = tmp_path / f"run{i}"
        proc = _torchrun(store, model_dir)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"run {i} exited {proc.returncode}:\n{out[-4000:]}"
        assert (model_dir / "r3d_18_ep-0001.pth").is_file(), f"run {i}: no final checkpoint:\n{out[-4000:]}"
        assert "terminate called" not in out and "SIGABRT" not in out, out[-4000:]
        assert out.count("done: best val video@1") == 1  # rank 0 only, and it got there
        assert not list(model_dir.glob(".*.tmp-*")), "a checkpoint temp file was left behind"


def test_torchrun_start_error_is_printed_once_by_rank_zero(store, tmp_path):
    proc = _torchrun(tmp_path / "no_such_dataset", tmp_path / "run")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert out.count("error: dataset root") == 1, out[-4000:]
