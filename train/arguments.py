"""The trainer's command-line arguments: the parser, its value types and the cross-checks after parsing."""
from __future__ import annotations

import argparse
import ast
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from train.bad_clips import add_bad_clip_arguments
from train.distributed import parse_gpus
from train.friendly_parser import FriendlyParser, program_name
from train.precision import PRECISIONS
from train.srtg_compat import resume_from_pretrained

__all__ = ["build_parser", "parse_args", "positive_int", "non_negative_int", "positive_float", "non_negative_float",
           "model_arg", "DEBUG_BATCHES", "PRECISE_BN_BATCHES", "SYNC_BN_MULTIGRID", "check_sync_bn_multigrid",
           "check_compile_compatible"]

DEBUG_BATCHES = 3  # train and val batches per epoch in --debug-mode
# Base-shape batches that precise BN averages over by default with multigrid (train.precise_bn).
PRECISE_BN_BATCHES = 20

SYNC_BN_MULTIGRID = ("--sync-bn cannot be combined with --long-cycles/--short-cycles: multigrid normalises fixed "
                     "groups of clips in each process (sub-batch BN), which SyncBatchNorm would replace by "
                     "statistics over every process's whole batch; leave out --sync-bn")


def _number_type(convert: Callable[[str], float], ok: Callable[[float], bool], what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what.replace(" ", "_")
    return parse


positive_int = _number_type(int, lambda v: v >= 1, "a positive integer")
non_negative_int = _number_type(int, lambda v: v >= 0, "an integer >= 0")
# Finite only: inf/nan pass `v > 0`-style checks or overflow later (an lr of inf trains a model of NaNs).
positive_float = _number_type(float, lambda v: math.isfinite(v) and v > 0, "a positive number")
non_negative_float = _number_type(float, lambda v: math.isfinite(v) and v >= 0, "a number >= 0")


def model_arg(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` with VALUE read as a Python literal when possible (`version=v2`, `first_kernel_depth=3`)."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def _flag_value(text: str) -> bool:
    """A boolean option's optional value, as the SRTG code spells it (``--fine-tune True``)."""
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def _network_names() -> list[str]:
    import network

    return network.list_models()


def build_parser(defaults: dict[str, Any] | None = None,
                 extra_args: Callable[[argparse.ArgumentParser], None] | None = None,
                 prog: str | None = None) -> argparse.ArgumentParser:
    """The trainer's parser (SRTG-compatible names), with script `defaults` and `extra_args` applied."""
    p = FriendlyParser(prog=prog or program_name(), description="Train a video action-recognition model.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--dataset", type=Path, default=None, help="dataset root (jpg/, labels/, classes.txt)")
    d.add_argument("--labels", default=None, help="label CSV (path, or name under ROOT/labels/; default all.csv)")
    d.add_argument("--train-split", default="train", help="split of the label CSV to train on")
    d.add_argument("--val-split", default="val", help="split to validate on (never used for training)")
    d.add_argument("--clip-length", type=positive_int, default=16, help="frames per clip (T)")
    d.add_argument("--clip-size", type=positive_int, default=112, help="crop size in pixels (S)")
    d.add_argument("--resize-short", type=positive_int, default=None,
                   help="shorter side before cropping (default 8/7 of --clip-size)")
    d.add_argument("--train-frame-interval", type=positive_int, nargs="+", default=[2],
                   help="frame step(s) of training clips; one is drawn per clip")
    d.add_argument("--val-frame-interval", type=positive_int, default=2, help="frame step of validation clips")
    d.add_argument("--val-clips-per-video", type=positive_int, default=1,
                   help="evenly spaced clips per validation video (video@1 averages their softmax)")
    d.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                   help="random horizontal flips (turn off when left/right motion is what the labels mean)")
    d.add_argument("--color-jitter", type=non_negative_float, default=0.2, help="brightness/contrast/saturation jitter (0: off)")
    d.add_argument("--srtg-augment", action="store_true", help="add the SRTG augmentation set (blur, hue, ...)")
    d.add_argument("--workers", type=non_negative_int, default=min(4, os.cpu_count() or 1),
                   help="DataLoader worker processes (0: load in the main process)")
    add_bad_clip_arguments(d)

    m = p.add_argument_group("model")
    m.add_argument("--network", default="mict_resnet18", choices=_network_names(), metavar="NAME",
                   help="model name: " + ", ".join(_network_names()))
    m.add_argument("--dropout", type=non_negative_float, default=None, help="dropout before the classifier (model default)")
    m.add_argument("--width-mult", type=positive_float, default=None, help="channel width multiplier")
    m.add_argument("--model-arg", type=model_arg, action="append", default=[], metavar="KEY=VALUE",
                   help="extra model keyword argument, e.g. version=v2 (repeatable)")
    m.add_argument("--pretrained-3d", "--pretrained_3d", type=Path, default=None,
                   help="initialise from a checkpoint/state_dict by name and shape (skipped tensors are logged)")
    m.add_argument("--pretrained-2d", type=Path, default=None,
                   help="initialise by inflating a torchvision 2D ResNet state_dict file")
    m.add_argument("--fine-tune", type=_flag_value, nargs="?", const=True, default=False, metavar="True|False",
                   help="train the backbone at --fine-tune-lr-mult x the lr, the classifier at the full lr (the "
                        "SRTG code's '--fine-tune True' works too)")
    m.add_argument("--fine-tune-lr-mult", type=positive_float, default=0.1, help="backbone lr multiplier")

    o = p.add_argument_group("optimisation")
    o.add_argument("--batch-size", type=positive_int, default=16, help="clips per batch and process")
    o.add_argument("--lr-base", type=positive_float, default=0.01, help="base learning rate")
    o.add_argument("--lr-steps", type=positive_int, nargs="*", default=[],
                   help="epochs after which the lr is multiplied by --lr-factor")
    o.add_argument("--lr-factor", type=positive_float, default=0.1, help="lr decay factor at each step")
    o.add_argument("--warmup-epochs", type=non_negative_float, default=0.0, help="linear lr warm-up (fractional epochs)")
    o.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd",
                   help="SGD (momentum, Nesterov) or AdamW (decoupled weight decay; converges in far fewer steps "
                        "on small datasets)")
    o.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    o.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=True, help="Nesterov momentum")
    o.add_argument("--weight-decay", type=non_negative_float, default=1e-4, help="weight decay (L2 for SGD, decoupled for AdamW)")
    o.add_argument("--clip-grad-norm", type=positive_float, default=None,
                   help="clip the gradients to this L2 norm (default: no clipping)")
    o.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing of the training loss (0: off)")
    o.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA",
                   help="mixup with lambda ~ Beta(ALPHA, ALPHA), drawn per clip (0: off; 0.8 is common)")
    o.add_argument("--cutmix", type=float, default=0.0, metavar="ALPHA",
                   help="CutMix with lambda ~ Beta(ALPHA, ALPHA), one box per clip, the same in every frame (0: off)")
    o.add_argument("--mix-prob", type=float, default=1.0, help="chance that a clip is mixed (with --mixup/--cutmix)")
    o.add_argument("--mix-switch-prob", type=float, default=0.5,
                   help="chance of CutMix rather than mixup for a mixed clip when both are on")
    o.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="keep an exponential moving average of the weights (e.g. 0.999), validated and "
                        "checkpointed next to them")
    o.add_argument("--grad-accum", type=positive_int, default=1, metavar="N",
                   help="accumulate the gradients of N batches per optimizer step (effective batch N x --batch-size)")
    o.add_argument("--end-epoch", type=positive_int, default=30, help="last epoch (1-based, inclusive)")
    o.add_argument("--temporal-gates-from", type=positive_int, default=None, metavar="EPOCH",
                   help="srtg_* models: temporal gates off before EPOCH, on from it (train.temporal_gates)")
    o.add_argument("--long-cycles", action=argparse.BooleanOptionalAction, default=False,
                   help="multigrid long cycle (train.multigrid)")
    o.add_argument("--short-cycles", action=argparse.BooleanOptionalAction, default=False,
                   help="multigrid short cycle (data.short_cycle)")
    o.add_argument("--multigrid-lr-scaling", choices=("auto", "linear", "sqrt", "none"), default="auto",
                   help="lr scaling with the long-cycle batch factor; auto: linear for SGD (Wu et al.), sqrt for "
                        "AdamW (docs/BENCHMARKS.md, multigrid)")
    o.add_argument("--multigrid-epoch-factor", type=positive_float, default=None,
                   help="stretch the multigrid schedule (SlowFast uses 1.5; default 1.0)")
    o.add_argument("--precise-bn-batches", type=non_negative_int, default=None,
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
    r.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads per process (torch.set_num_threads); default: a resumed run's recorded count, "
                        "else the environment's (OMP_NUM_THREADS). CPU results depend on it: give the same value "
                        "to get the same weights from different layouts (1 node x 2 processes, 2 nodes x 1)")
    r.add_argument("--max-nonfinite", type=positive_int, default=5,
                   help="stop after this many NaN/inf losses in a row (each is skipped, never trained on)")
    r.add_argument("--val-frequency", type=positive_int, default=1, help="validate every N epochs (and last)")
    r.add_argument("--channels-last", action="store_true",
                   help="channels_last_3d memory format for the weights and input batches (faster 3-D convolutions "
                        "on GPUs; same results)")
    r.add_argument("--compile", action="store_true",
                   help="torch.compile the model (inductor; the first steps compile; not with multigrid)")
    r.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute each residual block in the backward pass instead of storing its activations "
                        "(video ResNets, SRTG/CSN, MTNet: less memory, about one more forward per step)")
    r.add_argument("--sync-bn", action="store_true",
                   help="synchronise BatchNorm statistics across processes (DDP on CUDA GPUs only)")
    r.add_argument("--preempt-signal", default="TERM", type=str.upper, choices=("TERM", "USR1", "USR2", "NONE"),
                   help="signal that asks for a checkpoint and exit with code 75 (SLURM --signal); Ctrl-C "
                        "checkpoints too and exits with 130")
    r.add_argument("--debug-mode", action="store_true", help=f"{DEBUG_BATCHES} train/val batches per epoch")

    out = p.add_argument_group("output")
    out.add_argument("--model-dir", type=Path, default=None,
                     help="checkpoints, CSVs, curves.png and the log (default runs/<dataset>/<network>)")
    out.add_argument("--save-frequency", type=positive_int, default=1, help="checkpoint every N epochs (and last)")
    out.add_argument("--keep-last", type=non_negative_int, default=0,
                     help="keep only the newest N epoch checkpoints (0: all; the best one is always kept)")
    out.add_argument("--log-file", type=Path, default=None, help="plain-text log (default MODEL_DIR/train.log)")
    out.add_argument("--log-interval", type=positive_int, default=10, help="log every N batches")
    out.add_argument("--resume-epoch", type=positive_int, default=None,
                     help="resume from MODEL_DIR/<network>_ep-<E>.pth (model, optimizer, lr, scaler, RNG, ...)")
    out.add_argument("--resume", type=Path, default=None,
                     help="resume from this checkpoint file, or 'auto': the newest complete checkpoint in "
                          "--model-dir (epoch or mid-epoch), a fresh start when there is none")
    out.add_argument("--tensorboard", action="store_true",
                     help="write TensorBoard logs to MODEL_DIR/tensorboard (needs requirements-tensorboard.txt)")

    if extra_args is not None:
        extra_args(p)
    if defaults:
        known = {a.dest for a in p._actions}
        unknown = sorted(set(defaults) - known)
        if unknown:
            raise ValueError(f"defaults for unknown arguments: {', '.join(unknown)}")
        p.set_defaults(**defaults)
    return p


def _multigrid(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "long_cycles", False) or getattr(args, "short_cycles", False))


def check_sync_bn_multigrid(args: argparse.Namespace) -> None:
    """`ValueError` (one line) for `--sync-bn` with multigrid, whose sub-batch BN the conversion would drop."""
    if getattr(args, "sync_bn", False) and _multigrid(args):
        raise ValueError(SYNC_BN_MULTIGRID)


def check_compile_compatible(args: argparse.Namespace) -> None:
    """`ValueError` (one line) when `--compile` cannot pay off with the other options.

    Multigrid changes the clip shape from epoch to epoch and, with the short cycle, from batch to batch: a
    compiled model would recompile for every shape (8 long-cycle shapes x 3 short-cycle crops), hitting
    torch.compile's recompile limit at the 9th and falling back to eager there, after paying every compilation.
    """
    if getattr(args, "compile", False) and _multigrid(args):
        raise ValueError("--compile cannot be combined with --long-cycles/--short-cycles: every multigrid shape "
                         "would compile the model again (torch.compile gives up after 8); leave out --compile "
                         "or the multigrid cycles")


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
    if not 0 <= args.label_smoothing < 1:
        p.error(f"--label-smoothing must be in [0, 1), got {args.label_smoothing}")
    if args.mixup < 0 or args.cutmix < 0:
        p.error("--mixup and --cutmix take an alpha >= 0")
    if not (0 <= args.mix_prob <= 1 and 0 <= args.mix_switch_prob <= 1):
        p.error("--mix-prob and --mix-switch-prob must be in [0, 1]")
    if args.ema is not None and not 0 < args.ema < 1:
        p.error(f"--ema takes a decay in (0, 1), e.g. 0.999, got {args.ema}")
    for check in (check_sync_bn_multigrid, check_compile_compatible):
        try:
            check(args)
        except ValueError as e:
            p.error(str(e))
    if args.model_dir is None:
        args.model_dir = Path("runs") / (args.dataset.resolve().name or "dataset") / args.network
    if args.log_file is None:
        args.log_file = args.model_dir / "train.log"
    resume_from_pretrained(args)
    return args
