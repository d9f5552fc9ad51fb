"""The end-to-end demo (`make demo`): synthetic videos -> SQLite frame store -> training -> evaluation.

    python -m tools.demo                      # MiCT-ResNet-18, the README's first command
    python -m tools.demo --network fr2d_18     # the frame-based 2D baseline, trained the same way
    python -m tools.demo --quick              # a tiny version for tests (seconds)

1. `tools.synthetic` renders videos whose classes differ only in the direction of motion (time-reversal
   pairs: left/right, up/down, clockwise/anticlockwise, grow/shrink), so a model that ignores frame order
   cannot beat chance within a pair (its ceiling is 2/K over K classes).
2. `tools.convert` writes them into the SQLite frame store with labels; the demo splits each class into
   train / val / test (`labels/demo.csv`).
3. The trainer (`train.cli`) trains the network on CPU-sized clips with live logs; the best checkpoint is
   chosen on val.
4. `tools.evaluate` scores that checkpoint on the held-out test split, never seen in training or selection:
   clip@1, video@1, per-class accuracy, confusion matrix.
Generated data is reused by later runs with the same settings (`demo_data/`); results go to `demo_runs/<network>/`.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from data.atomic import atomic_write_text
from tools.ingest.video_folder import scan_folder
from train.console import die, setup_logging
from train.presets import DEMO_MODEL_ARGS, PRESETS, demo_network_defaults

log = logging.getLogger(__name__)
_TRAIN = PRESETS["demo"].defaults  # the demo's trainer settings live in the preset table


@dataclass(frozen=True)
class DemoConfig:
    """Data and training settings of the demo (the full one is tuned to finish in < 15 min on 2 CPU cores)."""

    # Four translation classes (left/right/up/down): two time-reversal pairs whose single frames look alike.
    # Single frames carry no class information within a pair, and global pooling hides where the object is, so
    # a frame-order-blind model (fr2d_18) stays near chance.
    classes: int = 4
    videos_per_class: int = 100
    frames: int = 32
    size: str = "72x96"  # HxW of the rendered videos; resizing to ~37 px averages the sensor noise out
    seed: int = _TRAIN["random_seed"]
    held_out: float = 0.2  # share of each class for val + test (half each)
    clip_length: int = _TRAIN["clip_length"]
    clip_size: int = _TRAIN["clip_size"]
    frame_interval: tuple[int, ...] = tuple(_TRAIN["train_frame_interval"])
    batch_size: int = _TRAIN["batch_size"]
    optimizer: str = _TRAIN["optimizer"]
    lr_base: float = _TRAIN["lr_base"]
    lr_steps: tuple[int, ...] = tuple(_TRAIN["lr_steps"])
    end_epoch: int = _TRAIN["end_epoch"]
    warmup_epochs: float = _TRAIN["warmup_epochs"]
    clip_grad_norm: float | None = _TRAIN["clip_grad_norm"]
    workers: int = _TRAIN["workers"]
    val_clips_per_video: int = _TRAIN["val_clips_per_video"]  # during training (model selection)
    test_clips_per_video: int = 3  # final held-out evaluation
    width_mult: float | None = _TRAIN["width_mult"]

    def data_key(self) -> dict:
        """Settings the generated data depends on (a change regenerates it)."""
        return {k: getattr(self, k) for k in ("classes", "videos_per_class", "frames", "size", "seed",
                                               "held_out")}


FULL = DemoConfig()
QUICK = DemoConfig(classes=4, videos_per_class=6, frames=16, size="32x40", held_out=0.34, frame_interval=(2,),
                   batch_size=4, lr_steps=(), end_epoch=1, warmup_epochs=0.0, workers=0, test_clips_per_video=2,
                   width_mult=0.125)
LABELS = "demo.csv"
# Model arguments the demo needs per network (why: see `train.presets.DEMO_MODEL_ARGS`), as --model-arg text.
MODEL_ARGS = {net: [f"{k}={v}" for k, v in args] for net, args in DEMO_MODEL_ARGS.items()}
TARGET_VIDEO_TOP1 = 90.0


def train_defaults(cfg: DemoConfig = FULL, network: str = "mict_resnet18", store: Path = Path("demo_data/store"),
                   run_dir: Path | None = None, temporal_gates_from: int | None = None) -> dict:
    """The demo preset's trainer defaults with the settings of `cfg`, `network`, `store`, `run_dir` and the epoch
    from which an srtg_ network's temporal gates are on."""
    return {
        **_TRAIN, "dataset": Path(store), "network": network,
        "model_dir": Path(run_dir) if run_dir is not None else Path("demo_runs") / network,
        "clip_length": cfg.clip_length, "clip_size": cfg.clip_size,
        "train_frame_interval": list(cfg.frame_interval), "val_frame_interval": cfg.frame_interval[-1],
        "batch_size": cfg.batch_size, "optimizer": cfg.optimizer, "lr_base": cfg.lr_base, "lr_steps": list(cfg.lr_steps),
        "end_epoch": cfg.end_epoch, "warmup_epochs": cfg.warmup_epochs, "workers": cfg.workers,
        "clip_grad_norm": cfg.clip_grad_norm, "val_clips_per_video": cfg.val_clips_per_video,
        "random_seed": cfg.seed, "width_mult": cfg.width_mult, "model_arg": demo_network_defaults(network)["model_arg"],
        "temporal_gates_from": temporal_gates_from,
    }


def _run_tool(module: str, args: Sequence[str]) -> None:
    """Run `python -m module args` with live output; a failure stops the demo with its exit code."""
    cmd = [sys.executable, "-m", module, *map(str, args)]
    log.info("$ %s", " ".join(cmd[1:]))
    rc = subprocess.call(cmd)
    if rc != 0:
        die(f"{module} failed with exit code {rc}", code=rc or 1)


def prepare_data(cfg: DemoConfig, data_dir: Path, workers: int) -> Path:
    """Generate and convert the demo dataset unless `data_dir` already holds it with these settings."""
    videos, store = data_dir / "videos", data_dir / "store"
    marker = data_dir / "demo_data.json"
    key = cfg.data_key()
    if marker.is_file() and json.loads(marker.read_text()) == key and (store / "labels" / "all.csv").is_file():
        log.info("reusing the demo dataset in %s", data_dir)
        return store
    for d in (videos, store):  # our own generated folders, made with other settings
        if d.exists():
            shutil.rmtree(d)
    marker.unlink(missing_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    _run_tool("tools.synthetic", [videos, "--classes", cfg.classes, "--videos-per-class", cfg.videos_per_class,
                                  "--seed", cfg.seed, "--frames", cfg.frames, "--size", cfg.size,
                                  "--workers", workers])
    _run_tool("tools.convert", [videos, store, "--workers", workers, "--val-fraction", cfg.held_out,
                                "--seed", cfg.seed])
    split_test(store / "labels" / "all.csv", store / "labels" / LABELS)
    atomic_write_text(marker, json.dumps(key) + "\n")  # last: an interrupted preparation is redone
    return store


def held_out_videos(labels_csv: Path, videos_dir: Path, count: int = 2) -> list[Path]:
    """Raw source files of `count` test-split videos, from different classes where possible."""
    from data.labels import read_labels

    files = {(v.label, v.video_id): v.path for v in scan_folder(videos_dir)[0]}
    picked: dict[str, Path] = {}
    for s in read_labels(labels_csv):
        if s.split == "test" and s.label not in picked and (s.label, s.video_id) in files:
            picked[s.label] = files[(s.label, s.video_id)]
        if len(picked) == count:
            break
    return list(picked.values())


def split_test(all_csv: Path, out_csv: Path) -> dict[str, int]:
    """Copy `all_csv` to `out_csv` with every second held-out ('val') video of each class moved to 'test'."""
    from data.labels import Sample, read_labels, write_labels

    samples, seen = [], {}
    for s in read_labels(all_csv):
        if s.split == "val":
            k = seen[s.label] = seen.get(s.label, 0) + 1
            if k % 2 == 0:
                s = Sample(s.video_id, s.label, "test", s.time_start, s.time_end)
        samples.append(s)
    write_labels(out_csv, samples)
    counts = {sp: sum(s.split == sp for s in samples) for sp in ("train", "val", "test")}
    log.info("%s: %d train, %d val (model selection), %d test (held out) videos", out_csv, counts["train"],
             counts["val"], counts["test"])
    return counts


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--network", default="mict_resnet18", help="model to train (fr2d_18: the no-motion baseline)")
    p.add_argument("--quick", action="store_true", help="tiny data, tiny model, one epoch (for tests)")
    p.add_argument("--data-dir", type=Path, default=Path("demo_data"), help="generated videos and frame store")
    p.add_argument("--run-dir", type=Path, default=Path("demo_runs"), help="training outputs (per network)")
    p.add_argument("--workers", type=int, default=2, help="processes for generation and conversion")
    p.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    p.add_argument("--lr", type=float, default=None,
                   help="override the learning rate (default: the preset's, or the network's own where it needs one)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--temporal-gates-from", type=int, default=None, metavar="EPOCH",
                   help="srtg_* networks: temporal gates on from this epoch (outputs in RUN_DIR/NETWORK_gatesEPOCH)")
    return p.parse_args(argv)


def config_for(args: argparse.Namespace) -> DemoConfig:
    """The demo's settings for the command line: the full or quick config, the network's own rate where it needs
    one (`train.presets.demo_network_defaults`, full config only), then the user's --epochs and --lr."""
    cfg = QUICK if args.quick else FULL
    if args.epochs is not None:
        cfg = replace(cfg, end_epoch=args.epochs, lr_steps=tuple(s for s in cfg.lr_steps if s < args.epochs))
    if args.lr is not None:
        if args.lr <= 0:
            die(f"--lr must be > 0, got {args.lr}")
        return replace(cfg, lr_base=args.lr)
    return cfg if args.quick else replace(cfg, lr_base=demo_network_defaults(args.network)["lr_base"])


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0; a failed step exits with its status)."""
    args = parse_args(argv)
    cfg = config_for(args)
    data_dir = args.data_dir / "quick" if args.quick else args.data_dir
    run_dir = args.run_dir / (f"quick_{args.network}" if args.quick else args.network)
    if args.temporal_gates_from is not None:
        run_dir = run_dir.with_name(f"{run_dir.name}_gates{args.temporal_gates_from}")
    if args.threads:
        torch.set_num_threads(args.threads)
    setup_logging()
    started = time.perf_counter()
    timings: dict[str, float] = {}

    log.info("demo: %s on synthetic motion classes (%s)", args.network, json.dumps(asdict(cfg)))
    t = time.perf_counter()
    store = prepare_data(cfg, data_dir, args.workers)
    timings["data"] = time.perf_counter() - t

    from tools.evaluate import evaluate_checkpoint, format_report, write_outputs
    from train.cli import parse_args as train_parse_args
    from train.cli import plain_log_files, run

    if run_dir.exists():
        shutil.rmtree(run_dir)  # the demo's own previous outputs for this network
    run_dir.mkdir(parents=True)
    train_args = train_parse_args([], defaults=train_defaults(cfg, args.network, store, run_dir,
                                                                      args.temporal_gates_from))
    setup_logging(log_file=str(train_args.log_file))
    plain_log_files()
    t = time.perf_counter()
    try:
        result = run(train_args)
    except (ValueError, OSError) as e:
        die(str(e))
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    checkpoint = result.best_path or result.last_path
    ev, classes = evaluate_checkpoint(checkpoint, store, labels=LABELS, split="test",
                                      clips_per_video=cfg.test_clips_per_video, batch_size=cfg.batch_size,
                                      workers=cfg.workers)
    outputs = write_outputs(ev, classes, run_dir, "test", checkpoint, cfg.test_clips_per_video)
    timings["evaluate"] = time.perf_counter() - t

    # Predict on two raw held-out videos (no conversion: what a user does with their own files).
    from tools.predict import format_result, predict_videos

    t = time.perf_counter()
    test_videos = held_out_videos(store / "labels" / LABELS, data_dir / "videos", count=2)
    predictions = predict_videos(checkpoint, test_videos, topk=3, timeline=True, out=run_dir / "predict")
    timings["predict"] = time.perf_counter() - t

    total = time.perf_counter() - started
    print()
    print(f"== demo: {args.network} on the held-out test split, {cfg.classes} synthetic motion classes "
          f"(chance {100 / cfg.classes:.1f}%, frame-order-blind ceiling {200 / cfg.classes:.1f}%) ==")
    print(format_report(ev, classes, cfg.test_clips_per_video))
    print(f"time: data {timings['data']:.0f}s, train {timings['train']:.0f}s, evaluate {timings['evaluate']:.0f}s, "
          f"predict {timings['predict']:.0f}s, total {total:.0f}s")
    print(f"checkpoint:  {checkpoint}")
    print(f"history:     {run_dir / 'train_results.csv'}, {run_dir / 'val_results.csv'}")
    print(f"plots:       {run_dir / 'curves.png'}, {outputs['png']}")
    print(f"evaluation:  {outputs['json']}, {outputs['csv']}")
    print(f"log:         {train_args.log_file}")
    print()
    print("== predict on raw held-out videos (python -m tools.predict --checkpoint CKPT VIDEO --timeline) ==")
    for r in predictions:
        print(format_result(r), end="")
    if not args.quick and args.network.startswith("mict") and ev.video_top1 < TARGET_VIDEO_TOP1:
        log.warning("video@1 %.1f%% is below the demo's target of %.0f%%", ev.video_top1, TARGET_VIDEO_TOP1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
