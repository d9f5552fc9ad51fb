"""Command line of the trainer: `python -m train --dataset ROOT ...` and the per-dataset scripts.

    python -m train --dataset demo_data/store --network mict_resnet18 --clip-length 16 --clip-size 64
    torchrun --nproc_per_node=2 train_ucf101.py --gpus 0,1 ...

Per-dataset scripts call `main(argv=None, defaults={...}, extra_args=fn)`: `defaults` replaces argument defaults
(keys are argparse dests, e.g. `clip_length`), `extra_args(parser)` adds script-specific arguments. The arguments
are in `train.arguments`, the set-up of a run in `train.builders`.

Every input is checked before anything is written: a bad dataset, checkpoint, model directory or `--gpus` ends
with a one-line `error: ...` and exit code 2; a run that fails while training (NaN loss) exits with 1.
On the preemption signal (`--preempt-signal`, SIGTERM by default) the run saves a mid-epoch checkpoint and exits
with 75 (`train.preemption.EXIT_PREEMPTED`); on Ctrl-C likewise with 130. `--resume auto` continues it, and on a
finished run says "already complete" and exits 0. Rank 0 also leaves its exit code in `<model-dir>/exit_code`,
since `torchrun` exits 1 whatever its processes returned.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import logging.handlers
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch

from data.bad_clips import worker_error_text
from data.loader import shutdown_workers
from train.arguments import build_parser, parse_args
from train.bad_clips import TooManyBadVideos
from train.builders import RunComplete, Setup, prepare, resume_path
from train.checkpoint import CheckpointWriteError, best_checkpoint_path, load_checkpoint
from train.console import die, setup_logging
from train.determinism import enable_deterministic
from train.distributed import (
    DistInfo,
    DistributedSetupError,
    init_distributed,
    launched_by_torchrun,
    select_device,
    shutdown,
    torchrun_command,
)
from train.precision import NonFiniteLossError
from train.preemption import EXIT_CODE_FILE, TrainingInterrupted, record_exit_code
from train.pretrained import TORCHVISION_VIDEO_MODELS, missing_weights_message

__all__ = ["main", "run", "train", "parse_args", "build_parser", "prepare", "TrainResult", "plain_log_files"]

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished run produced."""

    model_dir: Path
    history: list[dict[str, Any]]
    best_path: Path | None
    best_metric: float | None
    last_path: Path | None


def _check_dataset_root(root: Path) -> None:
    if not root.exists():
        raise FileNotFoundError(f"dataset root {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"dataset root {root} is not a folder")
    if not any(root.iterdir()):
        raise ValueError(f"dataset root {root} is empty (convert videos into it with python -m tools.convert)")
    if not (root / "jpg").is_dir():
        raise ValueError(f"{root} is not a dataset root: no jpg/ folder (convert videos with python -m tools.convert)")


def _check_writable_dir(path: Path, what: str) -> None:
    """Create `path` if needed and prove it is writable (without touching existing files)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise PermissionError(f"{what} {path} is not writable ({e.strerror or e})") from None


def _check_log_file(path: Path) -> None:
    """The log is appended to a regular file: a device (/dev/full), FIFO or folder is refused up front."""
    if not path.exists():
        return  # its folder was proven writable; a rejected run must not leave an empty log behind
    if not path.is_file():
        raise ValueError(f"--log-file {path}: not a regular file (the log is appended to a plain file)")
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as e:
        raise PermissionError(f"--log-file {path}: cannot be written ({e.strerror or e})") from None


def _script_for_torchrun() -> str:
    script = sys.argv[0] if sys.argv and sys.argv[0] else "-m train"
    return "-m train" if script.endswith("__main__.py") else script


def _fail_start(message: str, code: int = 2) -> NoReturn:
    """`die` for set-up errors: under torchrun every rank checks the same inputs, so only rank 0 prints."""
    if launched_by_torchrun() and os.environ.get("RANK", "0") != "0":
        sys.exit(code)
    die(message, code)


def _fail_run(message: str, code: int, dist_info: DistInfo | None, model_dir: Path | None = None) -> NoReturn:
    """`die` for errors while training: every rank that hits one says so, naming itself when not rank 0."""
    if dist_info is not None and dist_info.distributed and not dist_info.is_main:
        message = f"rank {dist_info.rank}: {message}"
    _record(model_dir, dist_info, code)
    die(message, code)


def _record(model_dir: Path | None, dist_info: DistInfo | None, code: int) -> None:
    """Rank 0 leaves its exit code in the model folder (`torchrun` hides it from a requeue script)."""
    if model_dir is not None and (dist_info is None or dist_info.is_main) and model_dir.is_dir():
        record_exit_code(model_dir, code)


def run(args: argparse.Namespace, dist_info: DistInfo | None = None) -> TrainResult:
    """Prepare and train; returns where the results are (rank 0 writes them)."""
    return train(prepare(args, dist_info))


def train(setup: Setup) -> TrainResult:
    """Run a prepared training to the end and log where its outputs are."""
    args = setup.args
    if setup.dist.is_main:
        n_params = sum(p.numel() for p in setup.model.parameters())
        log.info("training %s (%.2fM parameters) on %s (%d threads), %d classes, epochs %d..%d, precision %s%s",
                 args.network, n_params / 1e6, setup.dist.device, torch.get_num_threads(), len(setup.classes),
                 setup.trainer.start_epoch, setup.trainer.end_epoch, args.precision,
                 f", {setup.dist.world_size} processes" if setup.dist.distributed else "")
        log.info("optimizer %s, lr %g (weight decay %g), batch %d per process%s", args.optimizer, args.lr_base,
                 args.weight_decay, args.batch_size, f", momentum {args.momentum}" if args.optimizer == "sgd" else "")
    if args.grad_accum > 1 and setup.dist.is_main:
        log.info("gradient accumulation: %d batches per optimizer step (effective batch %d per process)",
                 args.grad_accum, args.grad_accum * args.batch_size)
    preemption = setup.trainer.preemption
    with preemption if preemption is not None else contextlib.nullcontext():
        history = setup.trainer.fit()
    ck = setup.checkpointer
    best = best_checkpoint_path(args.model_dir, args.network)
    result = TrainResult(model_dir=Path(args.model_dir), history=history,
                         best_path=best if best.is_file() else None, best_metric=ck.best if ck else None,
                         last_path=ck.last_path if ck else None)
    if setup.dist.is_main:
        log.info("done: best val video@1 %s%s", f"{result.best_metric:.2f}" if result.best_metric is not None
                 else "n/a", f" ({result.best_path})" if result.best_path else "")
        log.info("outputs in %s: last checkpoint %s, train_results.csv, val_results.csv, curves.png, %s",
                 result.model_dir, result.last_path, Path(args.log_file).name)
    return result


class _PlainFormatter(logging.Formatter):
    """Formats like the wrapped formatter and strips ANSI colour codes (for the plain-text log file)."""

    _ansi = re.compile(r"\x1b\[[0-9;]*m")

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return self._ansi.sub("", self.inner.format(record))


def plain_log_files() -> None:
    """Give every file handler of the root logger the colour-stripping formatter."""
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler) and not isinstance(h.formatter, _PlainFormatter):
            h.setFormatter(_PlainFormatter(h.formatter))


def main(argv: Sequence[str] | None = None, defaults: dict[str, Any] | None = None,
         extra_args: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    """Entry point of `python -m train` and the per-dataset scripts; returns the exit code (0)."""
    args = parse_args(argv, defaults, extra_args)
    if args.deterministic:
        enable_deterministic()  # before anything touches CUDA: cuBLAS reads its workspace setting once
    try:
        if args.gpus and len(args.gpus) > 1 and not launched_by_torchrun():
            select_device(args.gpus)  # no GPUs at all: say that first
            cmd = torchrun_command(len(args.gpus), list(sys.argv[1:] if argv is None else argv),
                                   _script_for_torchrun())
            _fail_start(f"--gpus {','.join(map(str, args.gpus))} trains on {len(args.gpus)} GPUs with one process "
                        f"each: run  {cmd}")
        device = select_device(args.gpus, int(os.environ.get("LOCAL_RANK", 0)))
        if args.precision == "fp16" and device.type != "cuda":
            _fail_start("--precision fp16 needs a CUDA GPU; on the CPU use --precision bf16 (or fp32)")
        _check_dataset_root(args.dataset)
        _check_writable_dir(Path(args.model_dir), "--model-dir")
        _check_writable_dir(Path(args.log_file).parent, "--log-file folder")
        _check_log_file(Path(args.log_file))
        resume = resume_path(args)
        if resume is not None:
            load_checkpoint(resume)  # a corrupt file fails here, before anything is written
        for flag, path in (("--pretrained-3d", args.pretrained_3d), ("--pretrained-2d", args.pretrained_2d)):
            if path is not None and not path.is_file():
                if flag == "--pretrained-3d" and args.network in TORCHVISION_VIDEO_MODELS:
                    _fail_start(f"{flag} {missing_weights_message(path, args.network)}")
                _fail_start(f"{flag} {path}: no such file")
    except (ValueError, OSError, DistributedSetupError) as e:
        _fail_start(str(e))

    dist_info = None
    setup = None
    finished = False
    model_dir = Path(args.model_dir)
    try:
        dist_info = init_distributed(args.gpus)
        if dist_info.is_main:  # the code of an earlier attempt must not speak for this one
            (model_dir / EXIT_CODE_FILE).unlink(missing_ok=True)
        level = "INFO" if dist_info.is_main else "WARNING"
        setup_logging(level, main_process=dist_info.is_main)
        # Hold the set-up's log records until it succeeded: a run rejected for bad input leaves no log file.
        buffer = logging.handlers.MemoryHandler(capacity=1_000_000, flushLevel=logging.CRITICAL + 1)
        logging.getLogger().addHandler(buffer)
        try:
            setup = prepare(args, dist_info)
        finally:
            logging.getLogger().removeHandler(buffer)
        if dist_info.is_main:
            before = set(logging.getLogger().handlers)
            setup_logging(level, str(args.log_file))
            plain_log_files()
            for handler in set(logging.getLogger().handlers) - before:
                if isinstance(handler, logging.FileHandler):
                    for record in buffer.buffer:
                        handler.handle(record)
        train(setup)
        finished = True
        _record(model_dir, dist_info, 0)
    except RunComplete as e:
        finished = True
        _record(model_dir, dist_info, 0)
        if dist_info is None or dist_info.is_main:
            print(str(e), file=sys.stderr, flush=True)
        return 0
    except (NonFiniteLossError, CheckpointWriteError, TooManyBadVideos) as e:
        _fail_run(str(e), 1, dist_info, model_dir)
    except TrainingInterrupted as e:
        where = f"saved {e.checkpoint}" if e.checkpoint else "checkpoint written by rank 0"
        print(f"{e.signal_name}: stopped at epoch {e.epoch} after batch {e.batch}, {where}; resume with the same "
              f"command and --resume auto", file=sys.stderr, flush=True)
        _record(model_dir, dist_info, e.exit_code)
        return e.exit_code
    except KeyboardInterrupt:
        _record(model_dir, dist_info, 130)
        die("interrupted before a checkpoint could be written; rerun with --resume auto to continue from the "
            "newest checkpoint", code=130)
    except (ValueError, OSError) as e:
        if setup is None:
            _fail_start(worker_error_text(e))
        _fail_run(worker_error_text(e), 2, dist_info, model_dir)
    finally:
        # The model (DDP) and loaders hold the process group: release them before the group goes away.
        setup = None
        if not finished:
            # A run stopped mid-epoch leaves its loader iterating; the exception's traceback keeps it alive, so stop
            # its workers now rather than leave them to whoever holds the traceback (an in-process caller).
            shutdown_workers()
        if dist_info is not None:
            shutdown(synchronize=finished)
    return 0

