"""Command line of the trainer: `python -m train --dataset ROOT ...` and the per-dataset scripts.

    python -m train --dataset demo_data/store --network mict_resnet18 --clip-length 16 --clip-size 64
    torchrun --nproc_per_node=2 train_ucf101.py --gpus 0,1 ...

Per-dataset scripts call `main(argv=None, defaults={...}, extra_args=fn)`: `defaults` replaces argument defaults
(keys are argparse dests, e.g. `clip_length`), `extra_args(parser)` adds script-specific arguments.

Every input is checked before anything is written: a bad dataset, checkpoint, model directory or `--gpus` ends
with a one-line `error: ...` and exit code 2; a run that fails while training (NaN loss) exits with 1.
"""
from __future__ import annotations

import argparse
import ast
import logging
import logging.handlers
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tools._cli import die, setup_logging
from train.callbacks import Callback, CallbackList, Checkpointer, CSVHistory, MetricPrinter, PlotCurves, SpeedMonitor
from train.checkpoint import (
    CheckpointError,
    best_checkpoint_path,
    check_same_model,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
)
from train.distributed import (
    DistInfo,
    DistributedSetupError,
    ShardSampler,
    cleanup,
    init_distributed,
    launched_by_torchrun,
    parse_gpus,
    select_device,
    torchrun_command,
)
from train.loaders import FixedLoader, MultigridLoaders
from train.lr_schedule import StepLRSchedule
from train.precise_bn import PreciseBN
from train.precision import PRECISIONS, NonFiniteLossError, Precision, keep_batchnorm_fp32
from train.temporal_gates import temporal_gates_callbacks
from train.trainer import Trainer, seed_everything

log = logging.getLogger("train")

DEBUG_BATCHES = 3  # train and val batches per epoch in --debug-mode
# Total spatial stride of every network in the zoo: smaller multigrid crops leave 1x1 maps to the last stages.
MIN_MULTIGRID_CROP = 32
# Base-shape batches that precise BN averages over by default with multigrid (train.precise_bn).
PRECISE_BN_BATCHES = 20


# ---------------------------------------------------------------------------------------------- arguments
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _model_arg(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` with VALUE read as a Python literal when possible (`version=v2`, `first_kernel_depth=3`)."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def _network_names() -> list[str]:
    import network

    return network.list_models()


def build_parser(defaults: dict[str, Any] | None = None,
                 extra_args: Callable[[argparse.ArgumentParser], None] | None = None,
                 prog: str | None = None) -> argparse.ArgumentParser:
    """The trainer's parser (SPEC 7 names), with script `defaults` and `extra_args` applied."""
    p = argparse.ArgumentParser(prog=prog, description="Train a video action-recognition model.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--dataset", type=Path, default=None, help="dataset root (jpg/, labels/, classes.txt)")
    d.add_argument("--labels", default=None, help="label CSV (path, or name under ROOT/labels/; default all.csv)")
    d.add_argument("--train-split", default="train", help="split of the label CSV to train on")
    d.add_argument("--val-split", default="val", help="split to validate on (never used for training)")
    d.add_argument("--clip-length", type=_positive_int, default=16, help="frames per clip (T)")
    d.add_argument("--clip-size", type=_positive_int, default=112, help="crop size in pixels (S)")
    d.add_argument("--resize-short", type=_positive_int, default=None,
                   help="shorter side before cropping (default 8/7 of --clip-size)")
    d.add_argument("--train-frame-interval", type=_positive_int, nargs="+", default=[2],
                   help="frame step(s) of training clips; one is drawn per clip")
    d.add_argument("--val-frame-interval", type=_positive_int, default=2, help="frame step of validation clips")
    d.add_argument("--val-clips-per-video", type=_positive_int, default=1,
                   help="evenly spaced clips per validation video (video@1 averages their softmax)")
    d.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                   help="random horizontal flips (turn off when left/right motion is what the labels mean)")
    d.add_argument("--color-jitter", type=float, default=0.2, help="brightness/contrast/saturation jitter (0: off)")
    d.add_argument("--srtg-augment", action="store_true", help="add the SRTG augmentation set (blur, hue, ...)")
    d.add_argument("--workers", type=_non_negative_int, default=min(4, os.cpu_count() or 1),
                   help="DataLoader worker processes (0: load in the main process)")

    m = p.add_argument_group("model")
    m.add_argument("--network", default="mict_resnet18", choices=_network_names(), metavar="NAME",
                   help="model name: " + ", ".join(_network_names()))
    m.add_argument("--dropout", type=float, default=None, help="dropout before the classifier (model default)")
    m.add_argument("--width-mult", type=_positive_float, default=None, help="channel width multiplier")
    m.add_argument("--model-arg", type=_model_arg, action="append", default=[], metavar="KEY=VALUE",
                   help="extra model keyword argument, e.g. version=v2 (repeatable)")
    m.add_argument("--pretrained-3d", type=Path, default=None,
                   help="initialise from a checkpoint/state_dict by name and shape (skipped tensors are logged)")
    m.add_argument("--pretrained-2d", type=Path, default=None,
                   help="initialise by inflating a torchvision 2D ResNet state_dict file")
    m.add_argument("--fine-tune", action="store_true",
                   help="train the backbone at --fine-tune-lr-mult x the lr, the classifier at the full lr")
    m.add_argument("--fine-tune-lr-mult", type=_positive_float, default=0.1, help="backbone lr multiplier")

    o = p.add_argument_group("optimisation")
    o.add_argument("--batch-size", type=_positive_int, default=16, help="clips per batch and process")
    o.add_argument("--lr-base", type=_positive_float, default=0.01, help="base learning rate")
    o.add_argument("--lr-steps", type=_positive_int, nargs="*", default=[],
                   help="epochs after which the lr is multiplied by --lr-factor")
    o.add_argument("--lr-factor", type=_positive_float, default=0.1, help="lr decay factor at each step")
    o.add_argument("--warmup-epochs", type=float, default=0.0, help="linear lr warm-up (fractional epochs)")
    o.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd",
                   help="SGD (momentum, Nesterov) or AdamW (decoupled weight decay; converges in far fewer steps "
                        "on small datasets)")
    o.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    o.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=True, help="Nesterov momentum")
    o.add_argument("--weight-decay", type=float, default=1e-4, help="weight decay (L2 for SGD, decoupled for AdamW)")
    o.add_argument("--clip-grad-norm", type=_positive_float, default=None,
                   help="clip the gradients to this L2 norm (default: no clipping)")
    o.add_argument("--end-epoch", type=_positive_int, default=30, help="last epoch (1-based, inclusive)")
    o.add_argument("--temporal-gates-from", type=_positive_int, default=None, metavar="EPOCH",
                   help="srtg_* models: temporal gates off before EPOCH, on from it (train.temporal_gates)")
    o.add_argument("--long-cycles", action="store_true", help="multigrid long cycle (data.multigrid)")
    o.add_argument("--short-cycles", action="store_true", help="multigrid short cycle (data.multigrid)")
    o.add_argument("--multigrid-lr-scaling", choices=("auto", "linear", "sqrt", "none"), default="auto",
                   help="lr scaling with the long-cycle batch factor; auto: linear for SGD (Wu et al.), sqrt for "
                        "AdamW (docs/BENCHMARKS.md, multigrid)")
    o.add_argument("--multigrid-short-lr-scaling", choices=("none", "linear", "sqrt"), default="none",
                   help="lr scaling with the short cycle's 4x/2x batches (default none, as SlowFast; an ablation)")
    o.add_argument("--multigrid-epoch-factor", type=_positive_float, default=None,
                   help="stretch the multigrid schedule (SlowFast uses 1.5; default 1.0)")
    o.add_argument("--precise-bn-batches", type=_non_negative_int, default=None,
                   help="recompute BN statistics over N base-shape training batches before each validation and at "
                        f"the end (default: {PRECISE_BN_BATCHES} with multigrid cycles, whose mixed shapes skew "
                        f"them; 0 otherwise)")

    r = p.add_argument_group("runtime")
    r.add_argument("--gpus", type=parse_gpus, default=None,
                   help="GPU ids, e.g. 0 or 0,1 (several need torchrun); default: GPU 0 if any, else CPU")
    r.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp16: autocast + GradScaler (CUDA); bf16: autocast bfloat16 (CPU or CUDA)")
    r.add_argument("--random-seed", type=int, default=0, help="seed of every random draw (a run is reproducible)")
    r.add_argument("--deterministic", action="store_true", help="deterministic algorithms only (slower on GPU)")
    r.add_argument("--max-nonfinite", type=_positive_int, default=5,
                   help="stop after this many NaN/inf losses in a row (each is skipped, never trained on)")
    r.add_argument("--val-frequency", type=_positive_int, default=1, help="validate every N epochs (and last)")
    r.add_argument("--debug-mode", action="store_true", help=f"{DEBUG_BATCHES} train/val batches per epoch")

    out = p.add_argument_group("output")
    out.add_argument("--model-dir", type=Path, default=None,
                     help="checkpoints, CSVs, curves.png and the log (default runs/<dataset>/<network>)")
    out.add_argument("--save-frequency", type=_positive_int, default=1, help="checkpoint every N epochs (and last)")
    out.add_argument("--keep-last", type=_non_negative_int, default=0,
                     help="keep only the newest N epoch checkpoints (0: all; the best one is always kept)")
    out.add_argument("--log-file", type=Path, default=None, help="plain-text log (default MODEL_DIR/train.log)")
    out.add_argument("--log-interval", type=_positive_int, default=10, help="log every N batches")
    out.add_argument("--resume-epoch", type=_positive_int, default=None,
                     help="resume from MODEL_DIR/<network>_ep-<E>.pth (model, optimizer, lr, scaler, RNG, ...)")
    out.add_argument("--resume", type=Path, default=None, help="resume from this checkpoint file")

    if extra_args is not None:
        extra_args(p)
    if defaults:
        known = {a.dest for a in p._actions}
        unknown = sorted(set(defaults) - known)
        if unknown:
            raise ValueError(f"defaults for unknown arguments: {', '.join(unknown)}")
        p.set_defaults(**defaults)
    return p


def parse_args(argv: Sequence[str] | None = None, defaults: dict[str, Any] | None = None,
               extra_args: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """Parse and cross-check the arguments (argparse exits with code 2 and a usage line on errors)."""
    p = build_parser(defaults, extra_args)
    args = p.parse_args(argv)
    if args.dataset is None:
        p.error("--dataset is required (a dataset root written by tools.convert)")
    if args.resume is not None and args.resume_epoch is not None:
        p.error("give either --resume or --resume-epoch, not both")
    if args.fine_tune and args.pretrained_3d is None and args.pretrained_2d is None:
        p.error("--fine-tune needs --pretrained-3d or --pretrained-2d (the weights to fine-tune)")
    if not 0 <= args.momentum < 1:
        p.error(f"--momentum must be in [0, 1), got {args.momentum}")
    if args.weight_decay < 0:
        p.error(f"--weight-decay must be >= 0, got {args.weight_decay}")
    if args.warmup_epochs < 0:
        p.error(f"--warmup-epochs must be >= 0, got {args.warmup_epochs}")
    if any(b <= a for a, b in zip(args.lr_steps, args.lr_steps[1:])):
        p.error(f"--lr-steps must increase, got {args.lr_steps}")
    if args.model_dir is None:
        args.model_dir = Path("runs") / (args.dataset.resolve().name or "dataset") / args.network
    if args.log_file is None:
        args.log_file = args.model_dir / "train.log"
    return args


# ---------------------------------------------------------------------------------------------- checks
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


def _resume_path(args: argparse.Namespace) -> Path | None:
    if args.resume is not None:
        return args.resume
    if args.resume_epoch is None:
        return None
    path = checkpoint_path(args.model_dir, args.network, args.resume_epoch)
    if not path.is_file():
        found = list(list_checkpoints(args.model_dir, args.network))
        have = f"epochs {found[0]}..{found[-1]} are there" if found else "there are none"
        raise CheckpointError(f"--resume-epoch {args.resume_epoch}: no checkpoint {path} ({have})")
    return path


def _script_for_torchrun() -> str:
    script = sys.argv[0] if sys.argv and sys.argv[0] else "-m train"
    return "-m train" if script.endswith("__main__.py") else script


# ---------------------------------------------------------------------------------------------- set-up
@dataclass
class Setup:
    """Everything `prepare` builds; `trainer.fit()` runs it."""

    args: argparse.Namespace
    dist: DistInfo
    trainer: Trainer
    classes: list[str]
    model: nn.Module
    checkpointer: Checkpointer | None
    history: CSVHistory | None
    resumed_from: Path | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class TrainResult:
    """What a finished run produced."""

    model_dir: Path
    history: list[dict[str, Any]]
    best_path: Path | None
    best_metric: float | None
    last_path: Path | None


def _model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = dict(args.model_arg)
    if args.dropout is not None:
        kw["dropout"] = args.dropout
    if args.width_mult is not None:
        kw["width_mult"] = args.width_mult
    return kw


def _args_for_checkpoint(args: argparse.Namespace) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return {k: plain(v) for k, v in vars(args).items()}


def _param_groups(model: nn.Module, args: argparse.Namespace) -> list[dict[str, Any]]:
    """One group, or with --fine-tune: the classifier at lr_mult 1 and the backbone at --fine-tune-lr-mult."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not args.fine_tune:
        return [{"params": params, "lr_mult": 1.0}]
    head = list(model.get_classifier().parameters()) if hasattr(model, "get_classifier") else []
    if not head:
        raise ValueError(f"--fine-tune: network {args.network} exposes no classifier (get_classifier)")
    head_ids = {id(p) for p in head}
    backbone = [p for p in params if id(p) not in head_ids]
    log.info("fine-tune: %d backbone tensors at lr x%g, %d classifier tensors at the base lr", len(backbone),
             args.fine_tune_lr_mult, len(head))
    return [{"params": backbone, "lr_mult": args.fine_tune_lr_mult}, {"params": head, "lr_mult": 1.0}]


def build_optimizer(groups: list[dict[str, Any]], args: argparse.Namespace) -> torch.optim.Optimizer:
    """SGD with (Nesterov) momentum, the default, or AdamW; the schedule sets each group's lr later."""
    if args.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=args.lr_base, weight_decay=args.weight_decay)
    return torch.optim.SGD(groups, lr=args.lr_base, momentum=args.momentum, weight_decay=args.weight_decay,
                           nesterov=args.nesterov and args.momentum > 0)


def prepare(args: argparse.Namespace, dist_info: DistInfo | None = None,
            extra_callbacks: Sequence[Callback] = ()) -> Setup:
    """Build datasets, loaders, model, optimizer, schedule, callbacks and the trainer (resumed if asked).

    Raises `ValueError`/`OSError` (incl. `CheckpointError`, `FrameStoreError`) with one-line messages.
    """
    import network
    from data import VideoDataset, build_loader, train_transform, val_transform
    from data.labels import read_labels
    from data.transforms import MEAN, STD, default_resize_short

    dist_info = dist_info or DistInfo(device=select_device(args.gpus))
    device = dist_info.device
    seed_everything(args.random_seed)
    if args.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not args.deterministic

    resize_short = args.resize_short or default_resize_short(args.clip_size)

    def train_dataset(classes: list[str] | None = None) -> VideoDataset:
        return VideoDataset(args.dataset, args.labels, split=args.train_split, clip_length=args.clip_length,
                            frame_interval=list(args.train_frame_interval), classes=classes,
                            transform=train_transform(args.clip_size, resize_short, flip=args.flip,
                                                      color_jitter=args.color_jitter,
                                                      srtg_augment=args.srtg_augment))

    train_ds = train_dataset()
    classes = list(train_ds.classes)
    val_ds = None
    if any(s.split == args.val_split for s in read_labels(train_ds.labels_csv)):
        val_ds = VideoDataset(args.dataset, args.labels, split=args.val_split, clip_length=args.clip_length,
                              frame_interval=args.val_frame_interval, classes=classes,
                              transform=val_transform(args.clip_size, resize_short),
                              clips_per_video=args.val_clips_per_video, train=False)
    else:
        log.warning("no %r split in %s: training without validation (no best checkpoint)", args.val_split,
                    train_ds.labels_csv)

    model_kwargs = _model_kwargs(args)
    model = network.build_model(args.network, len(classes), **model_kwargs)
    min_frames = getattr(model, "min_frames", 1)
    if args.clip_length < min_frames:
        raise ValueError(f"{args.network} needs clips of at least {min_frames} frames, --clip-length is "
                         f"{args.clip_length}{model._min_frames_hint() if hasattr(model, '_min_frames_hint') else ''}")

    resume_path = _resume_path(args)
    resume_ckpt = None
    if resume_path is not None:
        resume_ckpt = load_checkpoint(resume_path)
        check_same_model(resume_ckpt, args.network, len(classes), resume_path)
        if list(resume_ckpt["classes"]) != classes:
            raise CheckpointError(f"{resume_path}: checkpoint classes differ from the dataset's classes")
    elif args.pretrained_3d is not None:
        report = network.load_weights(model, args.pretrained_3d)
        if not report.loaded:
            raise CheckpointError(f"--pretrained-3d {args.pretrained_3d}: no tensor matches {args.network} by "
                                  f"name and shape (a checkpoint of another model?)")
        log.info("--pretrained-3d: %s", report)
    elif args.pretrained_2d is not None:
        report = network.inflate_2d_resnet(model, args.pretrained_2d)
        if not report.loaded:
            raise CheckpointError(f"--pretrained-2d {args.pretrained_2d}: nothing could be inflated into "
                                  f"{args.network}")

    # Multigrid (issue 5): the schedule decides shapes, epochs and lr steps; both off = the plain baseline.
    multigrid = None
    end_epoch, lr_steps = args.end_epoch, list(args.lr_steps)
    if args.long_cycles or args.short_cycles:
        from data.multigrid import MultigridSchedule, build_multigrid_loader_factory, convert_sub_batchnorm

        multigrid = MultigridSchedule.from_args(args, min_clip_length=min_frames)
        end_epoch, lr_steps = multigrid.end_epoch, list(multigrid.lr_steps)
        model = convert_sub_batchnorm(model, multigrid.bn_group_size)
        if dist_info.is_main:
            log.info("%s", multigrid.describe())
            if multigrid.smallest_crop < MIN_MULTIGRID_CROP:
                log.warning("multigrid: the smallest crop is %d px, below the networks' total spatial stride of %d: "
                            "their last stages see 1x1 maps and such clips may carry too little signal to learn "
                            "from (on the demo data 16-px clips stayed at chance); use a base --clip-size of at "
                            "least %d with --short-cycles, %d without (docs/BENCHMARKS.md, multigrid)",
                            multigrid.smallest_crop, MIN_MULTIGRID_CROP, 2 * MIN_MULTIGRID_CROP,
                            math.ceil(MIN_MULTIGRID_CROP * 2 ** 0.5))

    model.to(device)
    if args.precision != "fp32":
        keep_batchnorm_fp32(model)
    precision = Precision(args.precision, device)
    optimizer = build_optimizer(_param_groups(model, args), args)
    scheduler = StepLRSchedule(optimizer, args.lr_base, lr_steps, args.lr_factor, args.warmup_epochs)

    if multigrid is not None:
        factory = MultigridLoaders(build_multigrid_loader_factory(
            train_ds, multigrid, workers=args.workers, seed=args.random_seed, distributed=dist_info.distributed))
    else:
        factory = FixedLoader(
            lambda: build_loader(train_ds, args.batch_size, train=True, workers=args.workers, seed=args.random_seed,
                                 distributed=dist_info.distributed),
            train_ds, {"batch_size": args.batch_size, "clip_length": args.clip_length, "crop_size": args.clip_size,
                       "lr_scale": 1.0})
    if len(train_ds) < args.batch_size * dist_info.world_size and multigrid is None:
        raise ValueError(f"the {args.train_split!r} split has {len(train_ds)} videos, fewer than one batch of "
                         f"{args.batch_size} x {dist_info.world_size} process(es): lower --batch-size")

    precise_bn = None
    bn_batches = args.precise_bn_batches
    if bn_batches is None:
        bn_batches = PRECISE_BN_BATCHES if multigrid is not None else 0
    if bn_batches > 0:
        bn_ds = train_dataset(classes)  # its own copy: multigrid reshapes train_ds from epoch to epoch
        precise_bn = PreciseBN(
            lambda: build_loader(bn_ds, args.batch_size, train=True, workers=args.workers, seed=args.random_seed + 1,
                                 distributed=dist_info.distributed),
            bn_batches, args.clip_length, args.clip_size, dataset=bn_ds, always=multigrid is None)
        if dist_info.is_main:
            log.info("precise BN: BN statistics recomputed over %d base-shape training batches before each "
                     "validation and at the end", bn_batches)

    val_loader = None
    if val_ds is not None:
        if dist_info.distributed:
            batches = torch.utils.data.BatchSampler(ShardSampler(len(val_ds), dist_info.rank, dist_info.world_size),
                                                    args.batch_size, drop_last=False)
            val_loader = build_loader(val_ds, args.batch_size, train=False, workers=args.workers,
                                      seed=args.random_seed, batch_sampler=batches)
        else:
            val_loader = build_loader(val_ds, args.batch_size, train=False, workers=args.workers,
                                      seed=args.random_seed)

    if dist_info.distributed:
        ddp_model: nn.Module = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        ddp_model = model

    meta = {
        "format": "videotrain-ckpt-1", "network": args.network, "num_classes": len(classes), "classes": classes,
        "model_kwargs": model_kwargs, "args": _args_for_checkpoint(args),
        "preprocess": {"clip_length": args.clip_length, "crop_size": args.clip_size, "resize_short": resize_short,
                       "frame_interval": args.val_frame_interval, "mean": list(MEAN), "std": list(STD)},
    }
    best_so_far = None
    if resume_ckpt is not None:
        best_so_far = (resume_ckpt.get("metrics") or {}).get("best")
    if dist_info.is_main:
        Path(args.model_dir).mkdir(parents=True, exist_ok=True)
    history = CSVHistory(args.model_dir)
    checkpointer = Checkpointer(args.model_dir, args.network, meta, save_frequency=args.save_frequency,
                                keep_last=args.keep_last, best_so_far=best_so_far)
    callbacks = CallbackList([SpeedMonitor(log_interval=args.log_interval), MetricPrinter(args.log_interval),
                              history, PlotCurves(Path(args.model_dir) / "curves.png", history), checkpointer,
                              *temporal_gates_callbacks(args, model, checkpointer, resume_ckpt), *extra_callbacks])
    max_batches = DEBUG_BATCHES if args.debug_mode else None
    trainer = Trainer(ddp_model, optimizer, factory, scheduler=scheduler, end_epoch=end_epoch, val_loader=val_loader,
                      num_val_videos=len(val_ds.samples) if val_ds is not None else 0, num_classes=len(classes),
                      precision=precision, dist_info=dist_info, callbacks=callbacks, seed=args.random_seed,
                      max_batches=max_batches, val_frequency=args.val_frequency, max_nonfinite=args.max_nonfinite,
                      clip_grad_norm=args.clip_grad_norm, precise_bn=precise_bn)
    if resume_ckpt is not None:
        try:
            trainer.load_state_dict(resume_ckpt)
        except (RuntimeError, KeyError) as e:
            raise CheckpointError(f"{resume_path}: cannot restore the training state ({str(e).splitlines()[0]})"
                                  ) from None
        if trainer.start_epoch > end_epoch:
            raise ValueError(f"{resume_path} ends at epoch {trainer.start_epoch - 1}, already at --end-epoch "
                             f"{end_epoch}: raise --end-epoch to train further")
        log.info("resumed from %s: continuing at epoch %d", resume_path, trainer.start_epoch)
    elif dist_info.is_main and list_checkpoints(args.model_dir, args.network):
        log.warning("%s already holds %s checkpoints: a new run from epoch 1 replaces them as it goes (use "
                    "--resume-epoch to continue instead)", args.model_dir, args.network)
    return Setup(args=args, dist=dist_info, trainer=trainer, classes=classes, model=model,
                 checkpointer=checkpointer, history=history, resumed_from=resume_path)


def run(args: argparse.Namespace, dist_info: DistInfo | None = None) -> TrainResult:
    """Prepare and train; returns where the results are (rank 0 writes them)."""
    return train(prepare(args, dist_info))


def train(setup: Setup) -> TrainResult:
    """Run a prepared training to the end and log where its outputs are."""
    args = setup.args
    if setup.dist.is_main:
        n_params = sum(p.numel() for p in setup.model.parameters())
        log.info("training %s (%.2fM parameters) on %s, %d classes, epochs %d..%d, precision %s%s",
                 args.network, n_params / 1e6, setup.dist.device, len(setup.classes), setup.trainer.start_epoch,
                 setup.trainer.end_epoch, args.precision,
                 f", {setup.dist.world_size} processes" if setup.dist.distributed else "")
        log.info("optimizer %s, lr %g (weight decay %g), batch %d per process%s", args.optimizer, args.lr_base,
                 args.weight_decay, args.batch_size, f", momentum {args.momentum}" if args.optimizer == "sgd" else "")
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


def _plain_log_files() -> None:
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler) and not isinstance(h.formatter, _PlainFormatter):
            h.setFormatter(_PlainFormatter(h.formatter))


def main(argv: Sequence[str] | None = None, defaults: dict[str, Any] | None = None,
         extra_args: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    """Entry point of `python -m train` and the per-dataset scripts; returns the exit code (0)."""
    args = parse_args(argv, defaults, extra_args)
    try:
        if args.gpus and len(args.gpus) > 1 and not launched_by_torchrun():
            select_device(args.gpus)  # no GPUs at all: say that first
            cmd = torchrun_command(len(args.gpus), list(sys.argv[1:] if argv is None else argv),
                                   _script_for_torchrun())
            die(f"--gpus {','.join(map(str, args.gpus))} trains on {len(args.gpus)} GPUs with one process each: "
                f"run  {cmd}")
        device = select_device(args.gpus, int(os.environ.get("LOCAL_RANK", 0)))
        if args.precision == "fp16" and device.type != "cuda":
            die("--precision fp16 needs a CUDA GPU; on the CPU use --precision bf16 (or fp32)")
        _check_dataset_root(args.dataset)
        _check_writable_dir(Path(args.model_dir), "--model-dir")
        _check_writable_dir(Path(args.log_file).parent, "--log-file folder")
        resume = _resume_path(args)
        if resume is not None:
            load_checkpoint(resume)  # a corrupt file fails here, before anything is written
        for flag, path in (("--pretrained-3d", args.pretrained_3d), ("--pretrained-2d", args.pretrained_2d)):
            if path is not None and not path.is_file():
                die(f"{flag} {path}: no such file")
    except (ValueError, OSError, DistributedSetupError) as e:
        die(str(e))

    dist_info = None
    try:
        dist_info = init_distributed(args.gpus)
        level = "INFO" if dist_info.is_main else "WARNING"
        setup_logging(level)
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
            _plain_log_files()
            for handler in set(logging.getLogger().handlers) - before:
                if isinstance(handler, logging.FileHandler):
                    for record in buffer.buffer:
                        handler.handle(record)
        train(setup)
    except NonFiniteLossError as e:
        die(str(e), code=1)
    except (ValueError, OSError) as e:
        die(str(e))
    finally:
        if dist_info is not None:
            cleanup()
    return 0


def split_option(dataset: str, splits: Sequence[int] = (1, 2, 3)) -> Callable[[argparse.ArgumentParser], None]:
    """``--split N`` of a per-dataset script whose labels are ``labels/<dataset>_split<N>.csv``."""
    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--split", type=int, choices=tuple(splits), default=splits[0],
                            help=f"official train/test split (labels/{dataset}_split<N>.csv unless --labels is given)")
    return add


def run_dataset_script(argv: Sequence[str] | None, defaults: dict[str, Any],
                       add_option: Callable[[argparse.ArgumentParser], None],
                       option_defaults: Callable[[argparse.Namespace], dict[str, Any]]) -> int:
    """Entry of a per-dataset script: its own option (``--split``, ``--variant``) picks further defaults
    (labels, dataset root), which the user's explicit arguments still override; then `main`."""
    pre = argparse.ArgumentParser(add_help=False)
    add_option(pre)
    picked = pre.parse_known_args(argv)[0]  # a bad choice exits here with argparse's one-line error
    return main(argv, defaults={**defaults, **option_defaults(picked)}, extra_args=add_option)

