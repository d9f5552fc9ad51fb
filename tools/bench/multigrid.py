"""Multigrid benchmark: the plain baseline against long, short and long+short cycles on the demo dataset.

    python -m tools.bench.multigrid [--quick] [--configs baseline,long,short,long+short] [--out FILE]
    python -m tools.bench.multigrid --dataset ROOT --network r3d_18 --width-mult 0.25 ...   # any converted dataset

Every configuration trains the same model from the same seed on the same synthetic motion dataset
(`tools.synthetic` + `tools.convert`, prepared once and reused, as by `tools.demo`) with the same epoch budget
(``--end-epoch``; the multigrid schedule keeps it, see `train.multigrid`), validating after every epoch. Each run
is a fresh ``python -m train`` process (through this module's ``--child`` mode), so that memory and threads of one
run do not leak into the next; one torch thread by default, because on a shared machine several spinning threads
per process made epoch times vary up to 20x. Reported per configuration:

- wall-clock seconds of the whole run (start-up, training, validation, checkpoints) and its CPU seconds (user +
  system of the child; on a shared machine CPU time is the steadier of the two);
- training seconds (sum of the trainer's per-epoch train time) and training clips/s (clips seen / those seconds);
- the first epoch whose validation video@1 reaches ``--target`` and the training seconds spent until then, with
  the speed-up over the baseline; the final and best validation video@1.

``--budgets 3,6,9`` measures time to accuracy the way a user meets it: every configuration trains once per
epoch budget (lr steps scaled with the budget), and the report gives per configuration the cheapest run whose
*final* video@1 reaches ``--target``, with its wall-clock speed-up over the baseline's cheapest such run. (The
epoch at which a long run first crosses the target favours whichever configuration converges early in a budget
that is generous for it, and a multigrid run spends its first epochs on small shapes by design.)

``long-plainbn`` and ``long+short-plainbn`` (not run by default) keep plain BatchNorm instead of
`SubBatchNorm3d`: the ablation behind the batch-norm choice of `network.sub_batchnorm`. ``--lr-scaling``
changes how the long cycle scales the lr (another ablation). Prints a markdown table;
``--out`` also writes it.
"""
from __future__ import annotations

import argparse
import csv
import logging
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from data.rounding import round_half_up
from train.console import die, setup_logging
from train.multigrid import default_lr_scaling

log = logging.getLogger(__name__)

CONFIGS: dict[str, list[str]] = {
    "baseline": [],
    "long": ["--long-cycles"],
    "short": ["--short-cycles"],
    "long+short": ["--long-cycles", "--short-cycles"],
    "long-plainbn": ["--long-cycles"],
    "long+short-plainbn": ["--long-cycles", "--short-cycles"],
}
DEFAULT_CONFIGS = "baseline,long,short,long+short"


@dataclass
class RunResult:
    """Figures of one configuration."""

    name: str
    epochs: int
    wall_s: float
    cpu_s: float
    train_s: float
    clips: float
    epoch_to_target: int | None
    train_s_to_target: float | None
    final_top1: float
    best_top1: float

    @property
    def clips_per_s(self) -> float:
        return self.clips / max(self.train_s, 1e-9)


def bench_config(quick: bool):
    """The demo's data, model and training settings (`tools.demo`), with half its batch.

    Multigrid multiplies the batch by up to 32 (long x short cycle), so on the demo's few hundred training videos
    the demo's own batch would leave a handful of iterations per cheap epoch; half the batch (and half the lr,
    by the linear scaling rule) keeps every configuration trainable. Command-line options override each setting.
    """
    from tools.demo import FULL, QUICK

    if quick:
        # Enough training videos that the largest multigrid batch (16 clips at base batch 1) fits.
        return replace(QUICK, classes=2, videos_per_class=16, held_out=0.25, batch_size=1, lr_base=0.01,
                       lr_steps=(2,), end_epoch=3, val_clips_per_video=1)
    return replace(FULL, batch_size=max(1, FULL.batch_size // 2), lr_base=FULL.lr_base / 2, val_clips_per_video=1)


def train_args(cfg, network: str, store: Path, labels: str | None, run_dir: Path) -> list[str]:
    """Trainer arguments shared by every configuration (the cycle flags are added per configuration)."""
    from tools.demo import MODEL_ARGS

    argv = ["--dataset", str(store), "--network", network, "--model-dir", str(run_dir),
            "--clip-length", str(cfg.clip_length), "--clip-size", str(cfg.clip_size),
            "--train-frame-interval", *map(str, cfg.frame_interval),
            "--val-frame-interval", str(cfg.frame_interval[-1]),
            "--batch-size", str(cfg.batch_size), "--optimizer", cfg.optimizer, "--lr-base", str(cfg.lr_base), "--end-epoch", str(cfg.end_epoch),
            "--warmup-epochs", str(cfg.warmup_epochs), "--workers", str(cfg.workers),
            "--val-clips-per-video", str(cfg.val_clips_per_video), "--log-interval", "20",
            "--save-frequency", str(cfg.end_epoch), "--keep-last", "1", "--random-seed", str(cfg.seed),
            "--no-flip"]  # the demo's classes include left/right motion: a mirrored clip has the other label
    if labels:
        argv += ["--labels", labels]
    if cfg.lr_steps:
        argv += ["--lr-steps", *map(str, cfg.lr_steps)]
    if cfg.width_mult is not None:
        argv += ["--width-mult", str(cfg.width_mult)]
    if getattr(cfg, "clip_grad_norm", None):
        argv += ["--clip-grad-norm", str(cfg.clip_grad_norm)]
    for arg in MODEL_ARGS.get(network, []):
        argv += ["--model-arg", arg]
    return argv


# -- one run (child process) ---------------------------------------------------------------------------------
def child_main(argv: Sequence[str]) -> int:
    """``--child [--threads N] [--plain-bn] -- TRAIN ARGS``: one training run in this process."""
    p = argparse.ArgumentParser(prog="python -m tools.bench.multigrid --child")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--plain-bn", action="store_true", help="keep plain BatchNorm3d (ablation)")
    p.add_argument("--lr-scaling", default=None, help="the trainer's --multigrid-lr-scaling")
    p.add_argument("train_args", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.plain_bn:
        import train.builders

        train.builders.convert_sub_batchnorm = lambda module, group_size: module
    extra = ["--multigrid-lr-scaling", args.lr_scaling] if args.lr_scaling else []
    from train.cli import main as train_main

    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    return train_main([*train_args, *extra])


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_config(name: str, train_args: list[str], run_dir: Path, threads: int | None, target: float,
               verbose: bool, lr_scaling: str | None = None) -> RunResult:
    """Train one configuration in a child process and read its figures back from the trainer's CSVs."""
    cmd = [sys.executable, "-m", "tools.bench.multigrid", "--child"]
    if threads:
        cmd += ["--threads", str(threads)]
    if name.endswith("-plainbn"):
        cmd.append("--plain-bn")
    if lr_scaling:
        cmd += ["--lr-scaling", lr_scaling]
    cmd += ["--", *train_args, *CONFIGS[name]]
    log.info("%s: %s", name, shlex.join(cmd[1:]))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(run_dir / "bench_output.log", "w") as out:
        rc = subprocess.call(cmd, stdout=None if verbose else out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc != 0:
        raise RuntimeError(f"{name}: training failed with exit code {rc} (see {run_dir / 'bench_output.log'} and "
                           f"{run_dir / 'train.log'})")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    train_rows = _read_csv(run_dir / "train_results.csv")
    val_rows = {int(r["epoch"]): r for r in _read_csv(run_dir / "val_results.csv")}
    train_s = clips = 0.0
    epoch_to_target = s_to_target = None
    for row in train_rows:
        epoch = int(row["epoch"])
        seconds = float(row["seconds"])
        train_s += seconds
        clips += float(row["clips_per_s"]) * seconds
        val = val_rows.get(epoch)
        if epoch_to_target is None and val is not None and float(val["video_top1"]) >= target:
            epoch_to_target, s_to_target = epoch, train_s
    tops = [float(r["video_top1"]) for r in val_rows.values()]
    last = val_rows[max(val_rows)]
    return RunResult(name, len(train_rows), wall, cpu, train_s, clips, epoch_to_target, s_to_target,
                     float(last["video_top1"]), max(tops))


# -- report --------------------------------------------------------------------------------------------------
def format_table(results: list[RunResult], target: float) -> list[str]:
    """Markdown table; speed-ups are relative to the ``baseline`` row (left out when it did not run)."""
    ref = next((r for r in results if r.name == "baseline"), None)
    lines = [f"| config | epochs | wall-clock s | CPU s | train s | train clips/s | epoch to {target:g}% | "
             f"train s to {target:g}% | speed-up to {target:g}% (train s) | speed-up (wall-clock) | "
             f"final video@1 | best video@1 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        to_target = f"{r.train_s_to_target:.0f}" if r.train_s_to_target is not None else "not reached"
        speed = wall = "-"
        if ref is not None:
            wall = f"{ref.wall_s / r.wall_s:.2f}x"
            if r.train_s_to_target and ref.train_s_to_target:
                speed = f"{ref.train_s_to_target / r.train_s_to_target:.2f}x"
            elif r.train_s_to_target and r is not ref:  # the baseline never got there within its whole run
                speed = f"> {ref.train_s / r.train_s_to_target:.2f}x"
        lines.append(f"| {r.name} | {r.epochs} | {r.wall_s:.0f} | {r.cpu_s:.0f} | {r.train_s:.0f} | "
                     f"{r.clips_per_s:.1f} | {r.epoch_to_target if r.epoch_to_target is not None else '-'} | "
                     f"{to_target} | {speed} | {wall} | {r.final_top1:.1f} | {r.best_top1:.1f} |")
    return lines


def budget_config(cfg, budget: int):
    """`cfg` with an epoch budget of `budget`: the lr steps keep their relative places (at least one epoch in
    and one before the end when there is room)."""
    steps = sorted({min(budget - 1, max(1, round_half_up(s * budget / cfg.end_epoch))) for s in cfg.lr_steps})
    return replace(cfg, end_epoch=budget, lr_steps=tuple(s for s in steps if 0 < s < budget))


def format_sweep(results: dict[tuple[str, int], RunResult], names: list[str], budgets: list[int],
                 target: float) -> list[str]:
    """Markdown table of a budget sweep: final video@1 and training seconds per budget, then per configuration
    the cheapest run (training seconds) whose final video@1 reaches `target`, with its speed-ups over the
    baseline's cheapest such run in training seconds and in wall-clock (which adds start-up and validation)."""
    lines = ["| config | " + " | ".join(f"{b} epochs: final % (train s)" for b in budgets) +
             f" | cheapest run reaching {target:g}% | train s | wall-clock s | speed-up (train s) | "
             f"speed-up (wall-clock) |",
             "|---|" + "---:|" * len(budgets) + "---:|---:|---:|---:|---:|"]
    cheapest: dict[str, RunResult | None] = {}
    for name in names:
        hits = [results[(name, b)] for b in budgets if results[(name, b)].final_top1 >= target]
        cheapest[name] = min(hits, key=lambda r: r.train_s) if hits else None
    ref = cheapest.get("baseline")
    for name in names:
        cells = [f"{results[(name, b)].final_top1:.1f} ({results[(name, b)].train_s:.0f})" for b in budgets]
        best = cheapest[name]
        if best is None:
            tail = ["not reached", "-", "-", "-", "-"]
        else:
            speeds = ([f"{ref.train_s / best.train_s:.2f}x", f"{ref.wall_s / best.wall_s:.2f}x"] if ref is not None
                      else ["-", "-"])
            tail = [f"{best.epochs} epochs", f"{best.train_s:.0f}", f"{best.wall_s:.0f}", *speeds]
        lines.append(f"| {name} | " + " | ".join(cells + tail) + " |")
    return lines


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.bench.multigrid", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny data and model, 3 epochs (checks the tool end to end)")
    p.add_argument("--configs", default=DEFAULT_CONFIGS,
                   help=f"comma-separated, from: {', '.join(CONFIGS)} (speed-ups are relative to baseline)")
    p.add_argument("--network", default="mict_resnet18", help="model (the same for every configuration)")
    p.add_argument("--width-mult", type=float, default=None, help="override the model width (default: the demo's)")
    p.add_argument("--batch-size", type=int, default=None, help="override the base batch (default: half the demo's)")
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default=None, help="override the optimizer (demo's)")
    p.add_argument("--lr-base", type=float, default=None, help="override the base lr (default: half the demo's)")
    p.add_argument("--end-epoch", type=int, default=None, help="override the epoch budget (default: the demo's)")
    p.add_argument("--lr-steps", type=int, nargs="*", default=None, help="override the lr steps (default: the demo's)")
    p.add_argument("--warmup-epochs", type=float, default=None, help="override the lr warm-up (demo's)")
    p.add_argument("--clip-length", type=int, default=None, help="override the clip length T (demo's)")
    p.add_argument("--clip-size", type=int, default=None, help="override the crop size S (demo's)")
    p.add_argument("--frame-interval", type=int, nargs="+", default=None, help="override the frame interval(s)")
    p.add_argument("--classes", type=int, default=None,
                   help="override the number of demo classes (tools.synthetic: 4 translations, then rotations, scale)")
    p.add_argument("--videos-per-class", type=int, default=None, help="override the demo dataset size")
    p.add_argument("--video-size", default=None, metavar="HxW",
                   help="override the size of the generated videos (demo's 72x96; 144x192 keeps the demo's look at "
                        "twice the crop)")
    p.add_argument("--lr-scaling", default=None, choices=["auto", "linear", "sqrt", "none"],
                   help="lr scaling of the long cycle's batch factor (default: the trainer's auto: linear for SGD, "
                        "sqrt for AdamW)")
    p.add_argument("--budgets", default=None, metavar="E1,E2,...",
                   help="time-to-accuracy sweep: train every configuration once per epoch budget (lr steps keep "
                        "their relative places) and report the cheapest run whose final video@1 reaches --target")
    p.add_argument("--target", type=float, default=90.0, help="validation video@1 (%%) for the time-to-accuracy")
    p.add_argument("--dataset", type=Path, default=None,
                   help="benchmark on this converted dataset root instead of generating the demo data")
    p.add_argument("--labels", default=None, help="label CSV of --dataset (default: its labels/all.csv)")
    p.add_argument("--data-dir", type=Path, default=Path("bench_data/multigrid"),
                   help="generated videos and frame store (reused when the settings match)")
    p.add_argument("--run-dir", type=Path, default=Path("bench_data/multigrid_runs"),
                   help="one training folder per configuration")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per run (1: steady timings on a shared machine; 0: torch's choice)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers per run (default: the demo's 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed of every run")
    p.add_argument("--verbose", action="store_true", help="show the trainer's output instead of logging it to files")
    p.add_argument("--out", type=Path, default=None, help="also write the markdown report to this file")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        return child_main(argv[1:])
    args = parse_args(argv)
    setup_logging()
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or not names:
        die(f"--configs: unknown configuration(s) {unknown or names}; choose from {', '.join(CONFIGS)}")

    cfg = bench_config(args.quick)
    overrides = {"width_mult": args.width_mult, "batch_size": args.batch_size, "lr_base": args.lr_base,
                 "optimizer": args.optimizer, "size": args.video_size, "classes": args.classes,
                 "end_epoch": args.end_epoch, "videos_per_class": args.videos_per_class, "workers": args.workers,
                 "warmup_epochs": args.warmup_epochs, "clip_length": args.clip_length, "clip_size": args.clip_size,
                 "frame_interval": tuple(args.frame_interval) if args.frame_interval else None}
    cfg = replace(cfg, seed=args.seed, **{k: v for k, v in overrides.items() if v is not None})
    if args.lr_steps is not None:
        cfg = replace(cfg, lr_steps=tuple(args.lr_steps))
    if any(s >= cfg.end_epoch for s in cfg.lr_steps):
        die(f"lr steps {list(cfg.lr_steps)} must be below the epoch budget {cfg.end_epoch}")

    if args.dataset is not None:
        if not (args.dataset / "jpg").is_dir():
            die(f"--dataset {args.dataset}: not a dataset root (no jpg/ folder; convert videos with tools.convert)")
        store, labels = args.dataset, args.labels
    else:
        from tools.demo import LABELS, prepare_data

        store = prepare_data(cfg, args.data_dir / ("quick" if args.quick else "full"), workers=os.cpu_count() or 1)
        labels = LABELS
    budgets: list[int] = []
    if args.budgets:
        try:
            budgets = sorted({int(b) for b in args.budgets.split(",") if b.strip()})
        except ValueError:
            die(f"--budgets {args.budgets!r}: expected comma-separated epoch counts, e.g. 3,6,9")
        if not budgets or budgets[0] < 1:
            die(f"--budgets {args.budgets!r}: epoch budgets must be >= 1")
    load_before = os.getloadavg()
    results: list[RunResult] = []
    sweep: dict[tuple[str, int], RunResult] = {}
    runs = [(name, b) for name in names for b in budgets] if budgets else [(name, None) for name in names]
    for name, budget in runs:
        run_cfg = cfg if budget is None else budget_config(cfg, budget)
        run_dir = args.run_dir / ("quick" if args.quick else "full") / name
        if budget is not None:
            run_dir = run_dir / f"{budget}-epochs"
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("train_results.csv", "val_results.csv"):
            (run_dir / stale).unlink(missing_ok=True)
        argv_run = train_args(run_cfg, args.network, store, labels, run_dir)
        if budget is not None:
            argv_run += ["--val-frequency", str(budget)]  # a sweep reads the final accuracy only
        try:
            result = run_config(name, argv_run, run_dir, args.threads, args.target, args.verbose, args.lr_scaling)
        except (RuntimeError, OSError, KeyError, ValueError) as e:
            die(str(e), code=1)
        log.info("%s%s: %.0f s wall-clock, %.0f s training, %.1f clips/s, final video@1 %.1f%%", name,
                 "" if budget is None else f" ({budget} epochs)", result.wall_s, result.train_s, result.clips_per_s,
                 result.final_top1)
        if budget is None:
            results.append(result)
        else:
            sweep[(name, budget)] = result
    load_after = os.getloadavg()

    command = "python -m tools.bench.multigrid " + shlex.join(argv)
    budget_text = (f"{cfg.end_epoch} epochs" if not budgets else
                   f"epoch budgets {budgets} (lr steps scaled from {cfg.end_epoch} epochs)")
    scaling = args.lr_scaling if args.lr_scaling not in (None, "auto") else f"auto ({default_lr_scaling(cfg.optimizer)})"
    data_text = (f"{store} ({labels or 'labels/all.csv'})" if args.dataset is not None else
                 f"demo {cfg.classes} classes x {cfg.videos_per_class} videos ({cfg.frames} frames, {cfg.size})")
    report = [
        f"Command: `{command.strip()}`",
        "",
        f"Model {args.network} (width {cfg.width_mult or 1.0}), data {data_text}, clips "
        f"{cfg.clip_length}x{cfg.clip_size}^2 interval {list(cfg.frame_interval)}, base batch {cfg.batch_size}, "
        f"{cfg.optimizer} lr {cfg.lr_base} steps {list(cfg.lr_steps)}, {budget_text}, warm-up {cfg.warmup_epochs}, "
        f"long-cycle "
        f"lr scaling {scaling}, {cfg.workers} worker(s), val {cfg.val_clips_per_video} "
        f"clips/video, seed {cfg.seed}. Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {args.threads or torch.get_num_threads()} thread(s); load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after.",
        "",
        *(format_sweep(sweep, names, budgets, args.target) if budgets else format_table(results, args.target)),
    ]
    text = "\n".join(report)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
