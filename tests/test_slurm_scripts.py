"""The SLURM batch scripts of tools/slurm, run by bash with the environment SLURM gives a job.

`srun` and `scontrol` are stand-ins on PATH: `srun` starts its command once per node (SLURM_NNODES) with
SLURM_NODEID/SLURM_PROCID set, `scontrol requeue` records the request, `scontrol show hostnames` names this
machine. Signals go where SLURM's `--signal` sends them: to the processes of the job step, not to the batch shell.
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

from tests.test_convert_shards import assert_same_roots, run_local
from tests.test_distributed import _free_port
from tests.train_util import make_store, tiny_train_argv
from tests.videos_util import make_video
from train.auto_resume import list_mid_checkpoints
from train.checkpoint import checkpoint_path, load_checkpoint
from train.preemption import EXIT_CODE_FILE, EXIT_PREEMPTED

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "tools" / "slurm"
TIMEOUT_S = 240

FAKE_SRUN = """#!/bin/bash
pids=()
for ((i = 0; i < ${SLURM_NNODES:-1}; i++)); do
    SLURM_NODEID=$i SLURM_PROCID=$i SLURM_LOCALID=0 "$@" &
    pids+=($!)
done
rc=0
for pid in "${pids[@]}"; do
    wait "$pid"
    code=$?
    if [ "$rc" -eq 0 ]; then rc=$code; fi
done
exit "$rc"
"""
FAKE_SCONTROL = """#!/bin/bash
case "$1" in
    requeue) echo "$*" >> "$SCONTROL_LOG" ;;
    show) echo 127.0.0.1 ;;
    *) exit 1 ;;
esac
"""


@pytest.fixture(scope="module")
def slurm_bin(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("slurm_bin")
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


def _env(slurm_bin: Path, log: Path, **slurm: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SLURM_") and k not in ("PYTHONPATH", "RANK", "WORLD_SIZE", "OMP_NUM_THREADS")}
    path = os.pathsep.join([str(slurm_bin), str(Path(sys.executable).parent), env.get("PATH", "")])
    return {**env, "PATH": path, "PYTHON": sys.executable, "SCONTROL_LOG": str(log), "NO_COLOR": "1",
            "SLURM_SUBMIT_DIR": str(REPO), "SLURM_JOB_ID": "4242", "SLURM_NNODES": "1", "SLURM_CPUS_PER_TASK": "1",
            **slurm}


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (children, grandchildren, ...), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _bash(script: str, args: list[str], env: dict[str, str], cwd: Path, sig: int | None = None,
          after: str = "") -> tuple[int, str]:
    """Run `bash SCRIPT ARGS`; with `sig`, send it to the job step's processes once a line contains `after`."""
    proc = subprocess.Popen(["bash", str(SCRIPTS / script), *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    sent = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if sig is not None and after in line and not sent.is_set():
                sent.set()
                for pid in descendants(proc.pid):  # what srun started: not the batch shell, not srun
                    try:
                        if Path(f"/proc/{pid}/comm").read_text().strip() not in ("bash", "srun"):
                            os.kill(pid, sig)
                    except (OSError, ProcessLookupError):
                        pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        for pid in descendants(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        pytest.fail(f"{script} did not finish in {TIMEOUT_S} s:\n" + "".join(lines[-30:]))
    reader.join(timeout=10)
    if sig is not None:
        assert sent.is_set(), "the job ended before the signal could be sent:\n" + "".join(lines[-30:])
    return proc.returncode, "".join(lines)


def test_three_array_tasks_then_the_merge_give_the_single_machine_root(slurm_bin, tmp_path):
    videos = tmp_path / "videos"
    for label, n in (("walk", 4), ("jump high", 3)):
        for i in range(n):
            make_video(videos / label / f"{label[:4]}_{i}.mp4", n_frames=6 + i, height=16, width=24)
    (videos / "walk" / "broken.mp4").write_bytes(b"")
    single = tmp_path / "single"
    run_local(videos, single)
    root = tmp_path / "array"
    log = tmp_path / "scontrol.log"
    tasks = []
    for task in range(3):
        env = _env(slurm_bin, log, SLURM_ARRAY_JOB_ID="4242", SLURM_ARRAY_TASK_ID=str(task),
                   SLURM_ARRAY_TASK_COUNT="3", SLURM_ARRAY_TASK_MIN="0", SLURM_ARRAY_TASK_MAX="2")
        tasks.append(subprocess.Popen(["bash", str(SCRIPTS / "convert_array.sbatch"), str(videos), str(root)],
                                      cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outs = [t.communicate(timeout=TIMEOUT_S)[0] for t in tasks]
    # The task holding broken.mp4 exits 1, and so does the one that merges (the merged report lists it).
    codes = [t.returncode for t in tasks]
    assert set(codes) <= {0, 1} and 1 in codes, "\n".join(o[-1500:] for o in outs)
    assert sum("merging" in o for o in outs) >= 1 and all("Traceback" not in o for o in outs)
    rc, out = _bash("merge.sbatch", [str(videos), str(root), "3"], _env(slurm_bin, log), tmp_path)
    assert rc == 1 and "Traceback" not in out, out[-2000:]  # the failure report of the broken video
    assert_same_roots(single, root)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    # 18 training videos in batches of 2: 9 steps per epoch, time enough to signal a run in the middle.
    return make_store(tmp_path_factory.mktemp("slurm_store"), classes=2, videos_per_class=12, frames=12)


def _train_args(store: Path) -> list[str]:
    # One epoch: the signal comes in its middle, so the resumed part is the rest of it (then validation).
    argv = tiny_train_argv(store, Path("unused"), "--end-epoch", "1", "--batch-size", "2")
    i = argv.index("--model-dir")
    return argv[:i] + argv[i + 2:]


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(checkpoint_path(model_dir, "mict_resnet18", 1))["model"]


def test_the_requeue_script_resumes_after_usr1_to_the_weights_of_an_uninterrupted_run(slurm_bin, store, tmp_path):
    log = tmp_path / "scontrol.log"
    env = _env(slurm_bin, log)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    rc, out = _bash("train_requeue.sbatch", [str(whole), *_train_args(store)], env, tmp_path)
    assert rc == 0 and not log.exists(), out[-3000:]

    rc, out = _bash("train_requeue.sbatch", [str(parts), *_train_args(store)], env, tmp_path, signal.SIGUSR1,
                    "Epoch [1] Batch [2/9]")
    assert rc == EXIT_PREEMPTED, out[-3000:]
    assert log.read_text() == "requeue 4242\n" and len(list_mid_checkpoints(parts, "mict_resnet18")) == 1
    assert "SIGUSR1: stopped at epoch 1" in out and "Traceback" not in out

    rc, out = _bash("train_requeue.sbatch", [str(parts), *_train_args(store)], env, tmp_path)  # the requeued job
    assert rc == 0 and log.read_text() == "requeue 4242\n", out[-3000:]
    a, b = _weights(whole), _weights(parts)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_torchrun_script_on_two_nodes_requeues_on_sigterm_and_resumes_exactly(slurm_bin, store, tmp_path):
    log = tmp_path / "scontrol.log"
    train = [*_train_args(store), "--threads", "1"]
    runs, outs = {}, {}
    for name, sig in (("whole", None), ("parts", signal.SIGTERM)):
        env = _env(slurm_bin, log, SLURM_NNODES="2", SLURM_JOB_NODELIST="node[1-2]", NPROC_PER_NODE="1",
                   RDZV_PORT=str(_free_port()), SLURM_JOB_ID=f"77{len(runs)}")
        runs[name] = env
        rc, out = _bash("train_torchrun.sbatch", [str(tmp_path / name), *train], env, tmp_path, sig,
                        "Epoch [1] Batch [1/")
        outs[name] = out
        if sig is None:
            assert rc == 0 and not log.exists(), out[-3000:]
            # a fact about the data (each rank's 9 clips in batches of 2 leave 1 out) is said once, not per rank
            assert out.count("are left out of every epoch") == 1, out[-3000:]
    assert rc == EXIT_PREEMPTED and log.read_text() == "requeue 771\n", out[-3000:]
    assert (tmp_path / "parts" / EXIT_CODE_FILE).read_text() == f"{EXIT_PREEMPTED}\n"
    runs["parts"]["RDZV_PORT"] = str(_free_port())
    time.sleep(1)
    rc, out = _bash("train_torchrun.sbatch", [str(tmp_path / "parts"), *train], runs["parts"], tmp_path)
    assert rc == 0 and log.read_text() == "requeue 771\n", out[-3000:]
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "parts")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
