"""The real `torchrun` launcher on CPU (gloo), started from another working folder as users start it.

Two ranks train what one process trains with the same global batch (so DDP's gradient all-reduce is checked, not
only an exit code); a SIGTERM to the launcher in the middle of an epoch, then the same command again, ends at the
weights of an uninterrupted run; two single-process launchers rendezvousing over c10d (two "nodes"), one of them
stopped by SIGTERM mid-epoch and both started again, end at the weights of one node with two processes. Every
launch is bounded by a timeout so a hang fails the test instead of stalling CI.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from tests.test_distributed import _free_port
from tests.train_util import make_store
from train.auto_resume import list_mid_checkpoints
from train.checkpoint import checkpoint_path, load_checkpoint
from train.preemption import EXIT_CODE_FILE, EXIT_PREEMPTED

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 240
NET = "mict_resnet18"
# The zoo network with BatchNorm and dropout, augmentation on: every rank's own random state matters on resume.
TRAIN = ["-m", "train", "--network", NET, "--model-arg", "version=v2", "--width-mult", "0.125", "--clip-length", "8",
         "--clip-size", "32", "--train-frame-interval", "1", "2", "--batch-size", "2", "--workers", "0",
         "--end-epoch", "2", "--random-seed", "7", "--log-interval", "1", "--resume", "auto", "--threads", "1"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # torchrun's own default per layout
    return {**env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", **extra}


def _launcher(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def _standalone(store: Path, model_dir: Path, *extra: str, nproc: int = 2) -> list[str]:
    return _launcher("--standalone", f"--nproc_per_node={nproc}", *TRAIN, "--dataset", str(store),
                     "--model-dir", str(model_dir), *extra)


def _node(store: Path, model_dir: Path, port: int, job: str) -> list[str]:
    return _launcher("--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                     f"127.0.0.1:{port}", "--rdzv-id", job, *TRAIN, "--dataset", str(store), "--model-dir",
                     str(model_dir))


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"torchrun did not finish in {TIMEOUT_S} s:\n{(e.stderr or '')[-3000:]}")


def _run_many(cmds: list[list[str]], cwd: Path, signal_to: int | None = None, after: str = "") -> list[tuple[int, str]]:
    """Start the launchers together; SIGTERM launcher `signal_to` once any output line contains `after`."""
    procs = [subprocess.Popen(c, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in cmds]
    outputs: list[list[str]] = [[] for _ in procs]
    sent = threading.Event()

    def read(i: int) -> None:
        for line in procs[i].stdout:
            outputs[i].append(line)
            if signal_to is not None and after in line and not sent.is_set():
                sent.set()
                procs[signal_to].send_signal(signal.SIGTERM)

    readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(len(procs))]
    for r in readers:
        r.start()
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail("torchrun did not finish in time:\n" + "".join(outputs[0][-40:]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for r in readers:
        r.join(timeout=10)
    if signal_to is not None:
        assert sent.is_set(), "the run ended before the signal could be sent:\n" + "".join(outputs[0][-30:])
    return [(p.returncode, "".join(out)) for p, out in zip(procs, outputs)]


def _weights(model_dir: Path, epoch: int = 2) -> dict[str, torch.Tensor]:
    return load_checkpoint(checkpoint_path(model_dir, NET, epoch))["model"]


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} of {len(a)} tensors differ, e.g. {differ[:3]}"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    # 18 training videos, 2 ranks x 2 clips: 4 steps per epoch.
    return make_store(tmp_path_factory.mktemp("torchrun") / "data", classes=2, videos_per_class=12, frames=12)


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory) -> Path:
    """The working folder of every launch: not the repository."""
    return tmp_path_factory.mktemp("cwd")


@pytest.fixture(scope="module")
def whole(store, elsewhere, tmp_path_factory) -> Path:
    """An uninterrupted 2-epoch run of one node with 2 processes."""
    model_dir = tmp_path_factory.mktemp("whole")
    proc = _run(_standalone(store, model_dir), elsewhere)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "terminate called" not in out and "SIGABRT" not in out and "Traceback" not in out, out[-4000:]
    assert out.count("done: best val video@1") == 1  # rank 0 only, and it got there
    assert not list(model_dir.glob(".*.tmp-*")), "a checkpoint temp file was left behind"
    assert (model_dir / EXIT_CODE_FILE).read_text() == "0\n"
    return model_dir


def test_sigterm_to_the_launcher_mid_epoch_then_the_same_command_ends_at_the_uninterrupted_weights(
        store, elsewhere, whole, tmp_path):
    cmd = _standalone(store, tmp_path)
    [(rc, out)] = _run_many([cmd], elsewhere, signal_to=0, after="Epoch [2] Batch [1/4]")
    assert rc != 0  # torchrun's own code (1), whatever its processes returned: hence the exit_code file
    assert (tmp_path / EXIT_CODE_FILE).read_text() == f"{EXIT_PREEMPTED}\n", out[-3000:]
    [(epoch, batches)] = list(list_mid_checkpoints(tmp_path, NET))
    assert epoch == 2 and 1 <= batches <= 4
    mid = load_checkpoint(next(iter(list_mid_checkpoints(tmp_path, NET).values())))["mid_epoch"]
    assert mid["world_size"] == 2 and len(mid["ranks"]) == 2
    assert not torch.equal(mid["ranks"][0]["rng"]["torch"], mid["ranks"][1]["rng"]["torch"])

    resumed = _run(cmd, elsewhere)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    assert f"resuming epoch 2 after batch {batches}" in resumed.stderr
    _assert_same_weights(_weights(whole), _weights(tmp_path))

    again = _run(cmd, elsewhere)  # a requeue after the run finished (e.g. signalled in its last validation)
    assert again.returncode == 0 and "already complete" in again.stderr, again.stderr[-3000:]
    assert "Traceback" not in again.stderr and (tmp_path / EXIT_CODE_FILE).read_text() == "0\n"


def test_two_single_process_nodes_stopped_by_sigterm_to_one_launcher_end_at_the_one_node_weights(
        store, elsewhere, whole, tmp_path):
    # The launchers get torchrun's default thread count (no OMP_NUM_THREADS for one process per node), the
    # single-node run one thread per process: the same --threads 1 makes them agree bit for bit.
    model_dir = tmp_path / "run"
    port = _free_port()
    nodes = [_node(store, model_dir, port, "b1"), _node(store, model_dir, port, "b1")]
    results = _run_many(nodes, elsewhere, signal_to=1, after="Epoch [2] Batch [1/4]")
    assert (model_dir / EXIT_CODE_FILE).read_text() == f"{EXIT_PREEMPTED}\n", results[0][1][-3000:]
    [(epoch, _)] = list(list_mid_checkpoints(model_dir, NET))
    assert epoch == 2

    port = _free_port()
    results = _run_many([_node(store, model_dir, port, "b2"), _node(store, model_dir, port, "b2")], elsewhere)
    assert [rc for rc, _ in results] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    _assert_same_weights(_weights(whole), _weights(model_dir))


# A network without BatchNorm on clips without random augmentation, registered by a launcher script that runs
# the real CLI: two processes of 4 clips must step as one process of 8 does, which only DDP's all-reduce gives.
LAUNCHER = '''
import sys

from torch import nn

import network
import train.builders
import train.cli
from data import val_transform


class NoBatchNorm(nn.Module):
    def __init__(self, num_classes, **kwargs):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean(dim=(2, 3, 4)))


network.register_model(NoBatchNorm, name="no_bn")
train.builders.train_transform = lambda crop, resize, **kwargs: val_transform(crop, resize)
sys.exit(train.cli.main())
'''


def test_two_ranks_train_the_weights_of_one_process_with_the_same_global_batch(tmp_path):
    # 8 training videos of 8 frames: one step per epoch over the whole set, in any order.
    store = make_store(tmp_path / "data", classes=2, videos_per_class=5, frames=8, size=(32, 32), val_fraction=0.2)
    script = tmp_path / "launch_no_bn.py"
    script.write_text(LAUNCHER)
    runs = {}
    for nproc, batch in ((1, 8), (2, 4)):
        model_dir = tmp_path / f"x{nproc}"
        cmd = _launcher("--standalone", f"--nproc_per_node={nproc}", str(script), "--dataset", str(store),
                        "--model-dir", str(model_dir), "--network", "no_bn", "--clip-length", "8", "--clip-size",
                        "32", "--resize-short", "32", "--train-frame-interval", "1", "--val-frame-interval", "1",
                        "--batch-size", str(batch), "--workers", "0", "--end-epoch", "3", "--lr-base", "0.5",
                        "--threads", "1")
        proc = _run(cmd, tmp_path)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        ckpt = load_checkpoint(checkpoint_path(model_dir, "no_bn", 3))
        assert ckpt["args"]["batch_size"] == batch
        runs[nproc] = (load_checkpoint(checkpoint_path(model_dir, "no_bn", 1))["model"], ckpt["model"])
    (first1, last1), (_, last2) = runs[1], runs[2]
    for name in last1:
        moved = float((last1[name] - first1[name]).abs().max())
        apart = float((last1[name] - last2[name]).abs().max())
        # Equal up to float summation order (reductions over 8 x 4 x 8 x 32 x 32 values split differently): a
        # rank stepping on its own 4 clips would be apart by a good share of what the steps moved them.
        assert apart < 0.01 * moved, (name, apart, moved)


def test_a_start_error_is_printed_once_by_rank_zero(tmp_path):
    proc = _run(_standalone(tmp_path / "no_such_dataset", tmp_path / "run"), tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert out.count("error: dataset root") == 1, out[-4000:]
