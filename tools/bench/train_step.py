"""Where a training step's time goes: the model alone, the loader alone, and both together, in one run.

    python -m tools.bench.train_step --networks r3d_18,r2plus1d_18,mict_resnet18 --width-mult 0.25 \\
        --batch-size 8 --workers 2 --steps 8 --device cpu --out train_step.md
    python -m tools.bench.train_step --networks r3d_18 --batch-size 32 --workers 12 --precision fp16 \\
        --channels-last --device cuda --json train_step.json

For every network, through the trainer a run builds (`train.builders.prepare`, so `--channels-last`, `--compile`
and `--precision` are the training options themselves) and over the same timed number of steps after warm-up:

- compute-only: one batch resident on the device, fed to the real training loop again and again (forward,
  backward, optimizer step, the loop's own bookkeeping): the ceiling the model allows;
- end-to-end: the same loop fed by the trainer's real loader (`data.loader.build_loader` with `--workers`
  processes) over a real frame store: synthetic motion videos (`tools.synthetic`, `--size`, 128x171 by default:
  what the recipe's 8/7 resize of a 112 crop reads) converted by the converter (`tools.convert`);
- loader alone: the same loader iterated with no model;
- data-bound share: ``1 - end_to_end / compute_only``, the share of the step time lost to data; and the loader
  wait share the trainer measured itself (time blocked on the next batch over the timed window).

`--clock process` times the training process's CPU time instead of elapsed time (with `--workers 0`, so that it
does all the loading): on a shared machine it shows where the work goes, undisturbed by other processes. The
three phases of a network run back to back (reversed every other `--repeats` round, median reported), so load
from other processes hits them alike; quote ratios, not absolute rates, on a shared machine. Prints a markdown
table; `--out` writes it, `--json` writes every figure.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from data.atomic import atomic_write_text
from data.loader import shutdown_workers
from train.arguments import parse_args as parse_train_args
from train.builders import prepare
from train.callbacks import Callback
from train.console import die, setup_logging
from train.distributed import DistInfo
from train.loaders import EpochInfo

log = logging.getLogger(__name__)

PHASES = ("compute", "loader", "e2e")
#: wall: elapsed time; process: CPU time of the training process (with --workers 0, where it does all the work:
#: far less disturbed by other processes on a shared machine than elapsed time).
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


@dataclass(frozen=True)
class NetworkResult:
    """The figures of one network (clips/s are medians over the rounds)."""

    network: str
    params_m: float
    compute_clips_per_s: float
    e2e_clips_per_s: float
    loader_clips_per_s: float
    data_bound_share: float
    loader_wait_share: float | None
    rounds: int


class StepClock(Callback):
    """Times a window of training steps: from the end of step `warmup` to the end of the last one.

    The device is synchronised at both ends, so queued GPU work is inside the window whatever the loop syncs.
    """

    def __init__(self, device: torch.device, clock: Any = time.perf_counter) -> None:
        self.device = device
        self.clock = clock
        self.warmup = 0
        self.last = 0
        self.start = self.end = self.wall = 0.0
        self.clips = 0
        self.read = 0.0

    def arm(self, warmup: int, steps: int) -> None:
        self.warmup, self.last = warmup, warmup + steps - 1
        self.start = self.end = self.wall = 0.0
        self.clips, self.read = 0, 0.0

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return self.clock()

    def on_batch_end(self, trainer: Any, batch: int, logs: dict[str, Any]) -> None:
        if batch == self.warmup - 1:
            self.start = self._now()
            self.wall = time.perf_counter()
        elif self.warmup <= batch <= self.last:
            self.clips += int(logs["batch_size"])
            self.read += float(logs.get("time_read") or 0.0)  # the trainer's wait for the batch (elapsed)
            if batch == self.last:
                self.end = self._now()
                self.wall = time.perf_counter() - self.wall

    def rate(self) -> tuple[float, float]:
        """(clips/s, share of the window spent waiting for batches) of the last armed window."""
        seconds = self.end - self.start
        if self.end == 0.0 or seconds <= 0:
            raise RuntimeError("the timed window did not complete: too few batches (raise --videos)")
        return self.clips / seconds, self.read / max(self.wall, 1e-9)


class ResidentBatch:
    """A loader factory that hands the trainer the same device-resident batch `count` times."""

    def __init__(self, batch: tuple[torch.Tensor, ...], count: int) -> None:
        self.batch, self.count = batch, count

    def __call__(self, epoch: int) -> tuple[list, EpochInfo]:
        clips = self.batch[0]
        info = EpochInfo(epoch, int(clips.shape[0]), int(clips.shape[2]), int(clips.shape[-1]), self.count)
        return [self.batch] * self.count, info


# -- the frame store ---------------------------------------------------------------------------------------------
def build_store(work: Path, videos: int, frames: int, size: tuple[int, int], seed: int, workers: int) -> Path:
    """Synthetic videos converted by the converter into `work/store` (reused when made with the same settings)."""
    from tools import convert, synthetic

    store, source = work / "store", work / "videos"
    params = f"videos={videos} frames={frames} size={size[0]}x{size[1]} seed={seed}"
    stamp = store / ".bench_params"
    if stamp.is_file() and stamp.read_text() == params and (store / "labels" / "all.csv").is_file():
        log.info("reusing the frame store %s (%s)", store, params)
        return store
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(source, ignore_errors=True)
    classes = 4
    per_class = -(-videos // classes)
    log.info("generating %d synthetic videos of %d frames at %dx%d", classes * per_class, frames, *size)
    synthetic.generate(source, classes=classes, videos_per_class=per_class, seed=seed, frames=frames, size=size,
                       workers=workers, progress=False)
    with contextlib.redirect_stdout(io.StringIO()):
        code = convert.main([str(source), str(store), "--workers", str(workers), "--val-fraction", "0"])
    if code != 0:
        die(f"converting {source} into {store} failed (see {store})", 1)
    atomic_write_text(stamp, params)
    shutil.rmtree(source, ignore_errors=True)
    return store


# -- timing ------------------------------------------------------------------------------------------------------
def _time_loader(loader: Any, warmup: int, steps: int, clock: Any) -> float:
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    start, clips = clock(), 0
    for _ in range(steps):
        clips += int(next(it)[0].shape[0])
    return clips / (clock() - start)


def bench_network(name: str, args: argparse.Namespace, store: Path, device: torch.device, work: Path
                  ) -> NetworkResult:
    """Compute-only, loader-alone and end-to-end clips/s of one network (see the module docstring)."""
    argv = ["--dataset", str(store), "--network", name, "--clip-length", str(args.clip_length),
            "--clip-size", str(args.clip_size), "--batch-size", str(args.batch_size), "--workers", str(args.workers),
            "--precision", args.precision, "--model-dir", str(work / "runs" / name), "--random-seed", str(args.seed),
            "--end-epoch", "1"]
    if args.width_mult is not None:
        argv += ["--width-mult", str(args.width_mult)]
    for key_value in args.model_arg:
        argv += ["--model-arg", key_value]
    argv += ["--channels-last"] * args.channels_last + ["--compile"] * args.compile
    train_args = parse_train_args(argv)
    timer = CLOCKS[args.clock]
    clock = StepClock(device, timer)
    setup = prepare(train_args, DistInfo(device=device), extra_callbacks=[clock])
    trainer = setup.trainer
    real_loaders = trainer.loader_for_epoch
    n = args.warmup + args.steps
    trainer.max_batches = n
    loader, _ = real_loaders(1)
    if len(loader) < n:
        die(f"the store has {len(loader)} batches of {args.batch_size}, fewer than --warmup + --steps = {n}: "
            f"raise --videos")
    first = next(iter(loader))
    resident = ResidentBatch(tuple(t.to(device) if torch.is_tensor(t) else t for t in first), n)

    rates: dict[str, list[float]] = {p: [] for p in PHASES}
    waits: list[float] = []
    epoch = 0
    for r in range(args.repeats):
        for phase in PHASES if r % 2 == 0 else tuple(reversed(PHASES)):
            epoch += 1
            if phase == "loader":
                loader, _ = real_loaders(epoch)
                rates[phase].append(_time_loader(loader, args.warmup, args.steps, timer))
                continue
            trainer.loader_for_epoch = resident if phase == "compute" else real_loaders
            clock.arm(args.warmup, args.steps)
            trainer.train_epoch(epoch)
            rate, wait = clock.rate()
            rates[phase].append(rate)
            if phase == "e2e":
                waits.append(wait)
            log.info("%s round %d %-7s %.2f clips/s", name, r + 1, phase, rate)
    trainer.loader_for_epoch = real_loaders
    compute, alone, e2e = (statistics.median(rates[p]) for p in PHASES)
    params = sum(p.numel() for p in setup.model.parameters()) / 1e6
    return NetworkResult(name, round(params, 3), compute, e2e, alone, 1.0 - e2e / compute,
                         statistics.median(waits) if waits else None, args.repeats)


# -- report ------------------------------------------------------------------------------------------------------
def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "device": str(device), "cpu": platform.processor() or platform.machine()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def markdown(report: dict[str, Any]) -> str:
    cfg, machine = report["config"], report["machine"]
    where = machine.get("gpu") or f"CPU ({machine['cpus']} cores, {machine['torch_threads']} torch threads)"
    lines = [f"Command: `{report['command']}`", "",
             f"{where}; torch {machine['torch']}, Python {machine['python']}; clips {cfg['clip_length']}x"
             f"{cfg['clip_size']}x{cfg['clip_size']} from a {cfg['size']} frame store, batch {cfg['batch_size']}, "
             f"{cfg['precision']}, {cfg['workers']} loader workers"
             f"{', channels-last' if cfg['channels_last'] else ''}{', compiled' if cfg['compile'] else ''}"
             f"{'' if cfg['width_mult'] is None else ', width x' + str(cfg['width_mult'])}; {cfg['steps']} timed "
             f"steps after {cfg['warmup']} warm-up, median of {cfg['repeats']} round(s), {cfg['clock']} clock; "
             f"load average {report['load_average']:.1f} at the end.", "",
             "| network | params (M) | compute-only clips/s | end-to-end clips/s | loader alone clips/s | "
             "e2e / compute | data-bound share | loader wait share |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        wait = "n/a" if r["loader_wait_share"] is None else f"{100 * r['loader_wait_share']:.0f}%"
        lines.append(f"| {r['network']} | {r['params_m']:.2f} | {r['compute_clips_per_s']:.2f} | "
                     f"{r['e2e_clips_per_s']:.2f} | {r['loader_clips_per_s']:.2f} | "
                     f"{r['e2e_clips_per_s'] / r['compute_clips_per_s']:.2f} | "
                     f"{100 * r['data_bound_share']:.0f}% | {wait} |")
    return "\n".join(lines)


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 128x171, got {text!r}") from None
    return h, w


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.bench.train_step", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--networks", default="r3d_18", help="comma-separated network names")
    p.add_argument("--width-mult", type=float, default=None, help="channel width multiplier (default: full)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE", help="as the trainer's")
    p.add_argument("--clip-length", type=int, default=16)
    p.add_argument("--clip-size", type=int, default=112)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:K (default: cuda if present)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="loader worker processes")
    p.add_argument("--channels-last", action="store_true", help="the trainer's --channels-last")
    p.add_argument("--compile", action="store_true", help="the trainer's --compile")
    p.add_argument("--steps", type=int, default=10, help="timed steps per phase")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (worker start, autotune, compile)")
    p.add_argument("--repeats", type=int, default=1, help="rounds of the three phases (median)")
    p.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                   help="elapsed time, or the training process's CPU time (needs --workers 0)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads of the training process")
    p.add_argument("--videos", type=int, default=None,
                   help="videos in the store (default: enough for warm-up + steps batches)")
    p.add_argument("--frames", type=int, default=48, help="frames per generated video")
    p.add_argument("--size", type=_size, default=(128, 171), metavar="HxW", help="stored frame size")
    p.add_argument("--convert-workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--data", type=Path, default=Path("bench_data") / "train_step",
                   help="working folder (the frame store is kept there for the next run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    p.add_argument("--json", type=Path, default=None, help="write every figure here as JSON")
    p.add_argument("--store-only", action="store_true",
                   help="only make (or reuse) the frame store under --data and print its folder")
    args = p.parse_args(argv)
    for name in ("batch_size", "steps", "warmup", "repeats", "clip_length", "clip_size", "frames"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.workers < 0:
        p.error("--workers must be >= 0")
    if args.clock == "process" and args.workers:
        p.error("--clock process counts the training process only: give --workers 0 (loading in it)")
    if args.videos is None:
        args.videos = args.batch_size * (args.warmup + args.steps + 1)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0; bad input exits 2)."""
    args = parse_args(argv)
    setup_logging()
    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as e:
        die(f"--device {args.device}: {e}")
    if device.type == "cuda" and not torch.cuda.is_available():
        die(f"--device {args.device}: no CUDA GPU is available")
    if args.precision == "fp16" and device.type != "cuda":
        die("--precision fp16 needs a CUDA GPU; on the CPU use bf16 or fp32")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.data.mkdir(parents=True, exist_ok=True)
    store = build_store(args.data, args.videos, args.frames, args.size, args.seed, args.convert_workers)
    if args.store_only:
        print(store)
        return 0
    names = [n for n in args.networks.split(",") if n]
    results = []
    with tempfile.TemporaryDirectory(dir=args.data, prefix="runs-") as runs:
        for name in names:
            try:
                results.append(bench_network(name, args, store, device, Path(runs)))
            except ValueError as e:
                die(f"{name}: {e}")
            finally:
                shutdown_workers()  # this network's persistent loader workers: the next one starts its own
    report = {
        "command": "python -m tools.bench.train_step " + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": machine_info(device), "load_average": os.getloadavg()[0],
        "config": {"clip_length": args.clip_length, "clip_size": args.clip_size, "batch_size": args.batch_size,
                   "precision": args.precision, "workers": args.workers, "channels_last": args.channels_last,
                   "compile": args.compile, "width_mult": args.width_mult, "steps": args.steps,
                   "warmup": args.warmup, "repeats": args.repeats, "size": f"{args.size[0]}x{args.size[1]}",
                   "videos": args.videos, "clock": args.clock},
        "results": [asdict(r) for r in results],
    }
    text = markdown(report)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
