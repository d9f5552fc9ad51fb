"""Run a command without root's power to ignore file permissions, so that tests of unreadable and read-only files
run on CI, which runs as root.

As root, the child drops CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER from its capability bounding set
before exec: it stays uid 0 (the interpreter, the repository and pytest's 0700 temporary folders stay reachable,
which they would not be for uid 65534 when Python lives under /root), but the permission bits of the files it
opens apply to it as to their owner. As another user, the command simply runs as that user. Where neither can be
arranged, `run_unprivileged` skips the calling test with the reason: such a test never passes without running.
"""
from __future__ import annotations

import ctypes
import functools
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_PR_CAPBSET_DROP = 24
_PERMISSION_OVERRIDES = (1, 2, 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER


def _drop_permission_overrides() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in _PERMISSION_OVERRIDES:
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {cap}) failed")


def _run(cmd: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
    preexec = _drop_permission_overrides if os.geteuid() == 0 else None
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "NO_COLOR": "1", **kwargs.pop("env", {})}
    return subprocess.run(list(cmd), preexec_fn=preexec, env=env, capture_output=True, text=True, timeout=300,
                          **kwargs)


@functools.cache
def _unavailable() -> str | None:
    """Why permission bits cannot be made to apply here (None when they can): a probe reads a chmod-000 file."""
    with tempfile.TemporaryDirectory() as d:
        probe = Path(d) / "probe"
        probe.write_text("secret")
        probe.chmod(0)
        try:
            result = _run([sys.executable, "-c", f"open({str(probe)!r}).read()"], cwd=d)
        except OSError as e:
            return f"cannot start a process without root's permission override: {e}"
    if result.returncode == 0:
        return "a process here reads a chmod-000 file: permission bits cannot be tested on this machine"
    return None


def run_unprivileged(cmd: Sequence[str], cwd: str | os.PathLike, **kwargs) -> subprocess.CompletedProcess:
    """Run `cmd` (from `cwd`) with file permissions enforced; skip the test when that is impossible here."""
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    return _run(cmd, cwd=cwd, **kwargs)
