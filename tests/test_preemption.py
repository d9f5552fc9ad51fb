"""Preemption and auto-resume: a real signal to a real training process, mid-epoch checkpoints, --resume auto."""
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

from tests.train_util import make_store, run_rank, tiny_train_argv
from train.auto_resume import find_resume_checkpoint, list_mid_checkpoints, mid_checkpoint_path, resume_candidates
from train.checkpoint import checkpoint_path, load_checkpoint
from train.preemption import EXIT_INTERRUPTED, EXIT_PREEMPTED, PreemptionHandler, parse_signal

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # 18 training videos in batches of 2: 9 steps per epoch, time enough to signal a run in the middle.
    return make_store(tmp_path_factory.mktemp("preempt_store"), classes=2, videos_per_class=12, frames=12,
                      size=(32, 40))


def _argv(store: Path, model_dir: Path, workers: int, *extra: str) -> list[str]:
    argv = tiny_train_argv(store, model_dir, "--end-epoch", "2", "--batch-size", "2", *extra)
    argv[argv.index("--workers") + 1] = str(workers)
    return [sys.executable, "-m", "train", *argv]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


def _children(pid: int) -> list[int]:
    """Process ids of the children of `pid` (Linux /proc)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _run_and_signal(cmd: list[str], sig: int, after: str, group: bool = False) -> tuple[int, str, list[int]]:
    """Start `cmd`, send `sig` once a log line contains `after`, return (exit code, stderr, child pids when the
    signal went out). `group`: the run gets its own session and the signal goes to its whole process group
    (loader workers included), as SLURM and a terminal's Ctrl-C send it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=group)
    lines: list[str] = []
    children: list[int] = []
    sent = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            if after in line and not sent.is_set():
                children.extend(_children(proc.pid))
                sent.set()
                if group:
                    os.killpg(proc.pid, sig)
                else:
                    proc.send_signal(sig)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
    reader.join(timeout=10)
    assert sent.is_set(), "the run ended before the signal could be sent:\n" + "".join(lines[-20:])
    return rc, "".join(lines), children


# The recipe options carry state across the interruption too: EMA weights, the mixing generator, accumulated steps.
RECIPE = ("--ema", "0.9", "--mixup", "0.2", "--cutmix", "1.0", "--label-smoothing", "0.1", "--grad-accum", "2")


@pytest.fixture(scope="module")
def uninterrupted(store, tmp_path_factory):
    """The model folder of the uninterrupted run with `workers` loader processes (made once per module)."""
    runs: dict[int, Path] = {}

    def get(workers: int) -> Path:
        if workers not in runs:
            whole = tmp_path_factory.mktemp(f"whole{workers}")
            done = _run(_argv(store, whole, workers, *RECIPE))
            assert done.returncode == 0, done.stderr[-2000:]
            runs[workers] = whole
        return runs[workers]

    return get


def _assert_same_final_weights(whole: Path, parts: Path) -> None:
    final_a = load_checkpoint(checkpoint_path(whole, "mict_resnet18", 2))
    final_b = load_checkpoint(checkpoint_path(parts, "mict_resnet18", 2))
    for key in ("model", "ema"):
        a, b = (final_a[key], final_b[key]) if key == "model" else (final_a[key]["model"], final_b[key]["model"])
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), (key, name)


@pytest.mark.parametrize("workers", [0, 2])
def test_sigterm_mid_epoch_then_resume_auto_gives_the_weights_of_an_uninterrupted_run(store, tmp_path, workers,
                                                                                      uninterrupted):
    whole = uninterrupted(workers)
    parts = tmp_path / "parts"
    cmd = _argv(store, parts, workers, "--resume", "auto", *RECIPE)
    rc, err, _ = _run_and_signal(cmd, signal.SIGTERM, "Epoch [1] Batch [2/9]")
    assert rc == EXIT_PREEMPTED, err[-2000:]
    assert "SIGTERM: stopped at epoch 1" in err and "--resume auto" in err
    mids = list_mid_checkpoints(parts, "mict_resnet18")
    assert len(mids) == 1
    (epoch, batches), path = next(iter(mids.items()))
    assert epoch == 1 and 2 <= batches < 9 and batches % 2 == 0  # stops after a whole accumulation group
    ckpt = load_checkpoint(path)
    assert ckpt["mid_epoch"]["batches_done"] == batches and ckpt["epoch"] == 0
    assert {"optimizer", "scheduler", "scaler", "rng", "multigrid"} <= set(ckpt)

    resumed = _run(cmd)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming epoch 1 after batch {batches}" in resumed.stderr
    assert not list_mid_checkpoints(parts, "mict_resnet18")  # superseded by the epoch checkpoints
    _assert_same_final_weights(whole, parts)


@pytest.mark.parametrize("name", ["TERM", "USR1"])
def test_signal_to_the_whole_process_group_with_workers_running(store, tmp_path, uninterrupted, name):
    """SLURM (and a terminal) signal every process of the job: the trainer and its 2 loader workers get SIGTERM
    (or SIGUSR1 with --preempt-signal USR1) at once. The workers ignore it, the trainer finishes its step, writes
    the mid-epoch checkpoint and exits 75; the resumed run ends with the uninterrupted run's weights."""
    sig = signal.Signals[f"SIG{name}"]
    parts = tmp_path / "parts"
    cmd = _argv(store, parts, 2, "--resume", "auto", "--preempt-signal", name, *RECIPE)
    rc, err, children = _run_and_signal(cmd, sig, "Epoch [1] Batch [2/9]", group=True)
    assert len(children) >= 2, "no loader workers were running when the signal went out"
    assert rc == EXIT_PREEMPTED, err[-2000:]
    assert f"SIG{name}: stopped at epoch 1" in err
    assert "Traceback" not in err and "killed by signal" not in err, err[-2000:]
    assert not any(Path(f"/proc/{pid}").exists() for pid in children)  # no worker left behind
    [(epoch, batches)] = list_mid_checkpoints(parts, "mict_resnet18")
    assert epoch == 1 and 2 <= batches < 9
    resumed = _run(cmd)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming epoch 1 after batch {batches}" in resumed.stderr
    _assert_same_final_weights(uninterrupted(2), parts)


def test_ctrl_c_saves_a_checkpoint_and_exits_130_with_one_line(store, tmp_path):
    cmd = _argv(store, tmp_path / "run", 0, "--tensorboard")
    rc, err, _ = _run_and_signal(cmd, signal.SIGINT, "Epoch [1] Batch [1/9]")
    assert rc == EXIT_INTERRUPTED
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "SIGINT: stopped at epoch 1" in err and "--resume auto" in err
    assert len(list_mid_checkpoints(tmp_path / "run", "mict_resnet18")) == 1
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))  # --tensorboard via the CLI


def _fake_checkpoint(path: Path) -> None:
    torch.save({"format": "videotrain-ckpt-1", "network": "net", "num_classes": 1, "classes": ["a"],
                "model_kwargs": {}, "preprocess": {k: 1 for k in ("clip_length", "crop_size", "resize_short",
                                                                   "frame_interval", "mean", "std")},
                "model": {"w": torch.zeros(1)}, "epoch": 1}, path)


def test_resume_auto_takes_the_newest_complete_checkpoint_and_skips_corrupt_ones(tmp_path, caplog):
    assert find_resume_checkpoint(tmp_path, "net") is None  # nothing there: a fresh start
    ep1, ep2 = checkpoint_path(tmp_path, "net", 1), checkpoint_path(tmp_path, "net", 2)
    mid2, mid3 = mid_checkpoint_path(tmp_path, "net", 2, 5), mid_checkpoint_path(tmp_path, "net", 3, 4)
    for p in (ep1, ep2, mid2):
        _fake_checkpoint(p)
    mid3.write_bytes(b"PK\x03\x04 truncated")  # a half-copied file
    (tmp_path / ".net_ep-0004.pth.tmp").write_bytes(b"")  # an unfinished atomic write is never a candidate
    assert resume_candidates(tmp_path, "net") == [mid3, ep2, mid2, ep1]
    assert find_resume_checkpoint(tmp_path, "net") == ep2
    assert any("skipping" in r.message and mid3.name in r.message for r in caplog.records)


def test_preemption_handler_sets_a_flag_and_a_second_ctrl_c_aborts():
    with PreemptionHandler([signal.SIGUSR1]) as handler:
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
        assert handler.requested and handler.signal_name == "SIGUSR1"
    with PreemptionHandler([signal.SIGTERM]) as handler:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert handler.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    assert signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None)
    assert parse_signal("usr1") == signal.SIGUSR1 and parse_signal("NONE") is None
    with pytest.raises(ValueError):
        parse_signal("KILL")


def _rank_signalled(rank: int, world: int, port: int, store: str, out: str) -> None:
    """One rank of a 2-process run in which only rank 1 gets SIGUSR1, during its first step."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from train import cli
    from train.callbacks import Callback
    from train.preemption import TrainingInterrupted

    class SignalRankOne(Callback):
        def on_batch_end(self, trainer, batch, logs):
            if rank == 1 and logs["epoch"] == 1 and batch == 0:
                os.kill(os.getpid(), signal.SIGUSR1)
                time.sleep(0.1)  # let the handler run before the step's stop check

    def train_and_save(info) -> None:
        args = cli.parse_args(tiny_train_argv(Path(store), Path(out) / "run", "--batch-size", "2",
                                              "--end-epoch", "2", "--preempt-signal", "USR1"))
        result: dict = {"rank": rank}
        setup = cli.prepare(args, info, extra_callbacks=[SignalRankOne()])
        try:
            cli.train(setup)
        except TrainingInterrupted as e:
            result.update(signal=e.signal_name, epoch=e.epoch, batch=e.batch,
                          checkpoint=str(e.checkpoint) if e.checkpoint else None)
        result["params"] = {k: v.detach().clone() for k, v in setup.model.named_parameters()}
        torch.save(result, Path(out) / f"rank{rank}.pt")

    run_rank(train_and_save)


def test_a_signal_to_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    import torch.multiprocessing as mp

    from tests.test_distributed import _free_port

    store = make_store(tmp_path / "data", classes=2, videos_per_class=8)  # 12 train videos: 3 steps per rank
    ctx = mp.spawn(_rank_signalled, args=(2, _free_port(), str(store), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not ctx.join(timeout=2):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.terminate()
            pytest.fail(f"the two ranks did not stop within {RUN_TIMEOUT_S} s (a rank left waiting?)")
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert (r0["signal"], r0["epoch"], r0["batch"]) == (r1["signal"], r1["epoch"], r1["batch"]) == ("SIGUSR1", 1, 1)
    assert r1["checkpoint"] is None and r0["checkpoint"].endswith("mict_resnet18_ep-0001_batch-000001.pth")
    ckpt = load_checkpoint(r0["checkpoint"])
    assert ckpt["mid_epoch"]["batches_done"] == 1
    assert ckpt["mid_epoch"]["sums"][-1] == 4  # the running sums of both ranks: 2 ranks x 1 batch of 2 clips
    for k in r0["params"]:
        assert torch.equal(r0["params"][k], r1["params"][k]), k


def test_mid_epoch_resume_inside_a_multigrid_schedule_equals_the_uninterrupted_run(tmp_path):
    from train import cli
    from train.preemption import TrainingInterrupted

    torch.set_num_threads(1)
    store = make_store(tmp_path / "data", classes=2, videos_per_class=24)

    def argv(model_dir: Path, *extra: str) -> list[str]:
        return tiny_train_argv(store, model_dir, "--long-cycles", "--short-cycles", "--end-epoch", "4", "--lr-steps",
                               "2", "--batch-size", "1", "--debug-mode", "--val-frequency", "4", *extra)

    whole = cli.prepare(cli.parse_args(argv(tmp_path / "whole")))
    cli.train(whole)

    from train.callbacks import Callback

    class SigtermAt(Callback):
        """A real SIGTERM to this process, through the run's own handler, after epoch 2's second step."""

        def on_batch_end(self, trainer, batch, logs):
            if logs["epoch"] == 2 and batch == 1:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.1)  # let the handler run before the step's stop check

    parts_dir = tmp_path / "parts"
    first = cli.prepare(cli.parse_args(argv(parts_dir, "--resume", "auto")), extra_callbacks=[SigtermAt()])
    with pytest.raises(TrainingInterrupted) as stop:
        cli.train(first)
    assert (stop.value.signal_name, stop.value.epoch, stop.value.batch) == ("SIGTERM", 2, 2)
    ckpt = load_checkpoint(stop.value.checkpoint)
    assert ckpt["multigrid"] and ckpt["mid_epoch"]["batches_done"] == 2
    second = cli.prepare(cli.parse_args(argv(parts_dir, "--resume", "auto")))
    assert second.trainer.start_epoch == 2
    cli.train(second)
    a = load_checkpoint(checkpoint_path(tmp_path / "whole", "mict_resnet18", 4))["model"]
    b = load_checkpoint(checkpoint_path(parts_dir, "mict_resnet18", 4))["model"]
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_a_mid_epoch_state_gives_each_rank_its_own_random_state_and_warns_when_the_world_size_changed(caplog):
    from tests.train_util import TinyNet
    from train.checkpoint import capture_rng_state
    from train.distributed import DistInfo
    from train.lr_schedule import StepLRSchedule
    from train.trainer import Trainer

    def trainer(rank: int, world_size: int) -> Trainer:
        model = TinyNet()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        return Trainer(model, optimizer, lambda epoch: ([], None), scheduler=StepLRSchedule(optimizer, 0.1),
                       end_epoch=2, dist_info=DistInfo(rank=rank, world_size=world_size))

    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        states.append({"rng": capture_rng_state(), "mixer": {"generator": torch.tensor([seed])}})
    state = trainer(0, 1).state_dict()
    state["mid_epoch"] = {"epoch": 2, "batches_done": 3, "sums": torch.zeros(4), "rng": states[0]["rng"],
                          "mixer": states[0]["mixer"], "world_size": 2, "ranks": states}
    for rank in (0, 1):
        t = trainer(rank, 2)
        t.load_state_dict(state)
        assert torch.equal(t._mid_epoch["rng"]["torch"], states[rank]["rng"]["torch"])
        assert torch.equal(t._mid_epoch["mixer"]["generator"], torch.tensor([rank + 1]))
    assert not caplog.records
    with caplog.at_level("WARNING"):
        trainer(0, 1).load_state_dict(state)
    assert "written by 2 process(es) and this run has 1" in caplog.text
