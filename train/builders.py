"""Set-up of a training run from its arguments: datasets, model, loaders, callbacks and the trainer.

`prepare(args)` calls the builders in order and returns a `Setup`; each builder takes the parsed arguments and
what the previous ones built, so a reader can follow one run's set-up from top to bottom. Every problem is a
`ValueError`/`OSError` (`CheckpointError`, `FrameStoreError`) with a one-line message, raised before anything is
written.
"""
from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import network
from data import VideoDataset, build_loader, train_transform, val_transform
from data.labels import read_labels
from data.rank_logging import SAME_ON_EVERY_RANK
from data.transforms import MEAN, STD, NormalizeBatch, default_resize_short
from network.sub_batchnorm import convert_sub_batchnorm
from train.arguments import DEBUG_BATCHES, PRECISE_BN_BATCHES
from train.auto_resume import find_resume_checkpoint
from train.bad_clips import bad_clip_callbacks
from train.callbacks import Callback, CallbackList, Checkpointer, CSVHistory, MetricPrinter, PlotCurves, SpeedMonitor
from train.checkpoint import CheckpointError, check_same_model, checkpoint_path, list_checkpoints, load_checkpoint
from train.determinism import check_deterministic, enable_deterministic, replace_global_pooling
from train.distributed import DistInfo, ShardSampler, select_device, use_device
from train.loaders import FixedLoader, MultigridLoaders
from train.lr_schedule import StepLRSchedule
from train.multigrid import MultigridSchedule
from train.precise_bn import PreciseBN
from train.precision import Precision, keep_batchnorm_fp32
from train.pretrained import TORCHVISION_VIDEO_MODELS, missing_weights_message
from train.recipe import build_criterion, build_ema, build_mixer, build_preemption, build_sync_bn
from train.size_checks import check_clip_fits
from train.speed_options import compile_model, configure_model, wrap_input
from train.temporal_gates import temporal_gates_callbacks
from train.trainer import LoaderFactory, Trainer, seed_everything

__all__ = ["RunComplete", "Setup", "Datasets", "prepare", "build_datasets", "build_run_model", "build_multigrid",
           "build_optimizer", "build_train_loaders", "build_precise_bn", "build_val_loader", "build_callbacks",
           "resume_path"]

log = logging.getLogger(__name__)

# Total spatial stride of every network in the zoo: smaller multigrid crops leave 1x1 maps to the last stages.
MIN_MULTIGRID_CROP = 32


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


@dataclass
class Datasets:
    """The run's datasets: `train` (reshaped by multigrid), `val` (None without a validation split) and the
    parameters needed to build more copies of the training set (`make_train`)."""

    train: VideoDataset
    val: VideoDataset | None
    classes: list[str]
    resize_short: int
    args: argparse.Namespace

    def make_train(self) -> VideoDataset:
        """Another copy of the training set (precise BN reads it at the base shape while multigrid reshapes)."""
        return _train_dataset(self.args, self.resize_short, self.classes)


def resume_path(args: argparse.Namespace) -> Path | None:
    """The checkpoint `--resume`/`--resume-epoch` names (None for a fresh run); a missing epoch is an error.

    `--resume auto` is resolved here, once: to the newest complete checkpoint in --model-dir, or to a fresh run.
    """
    if args.resume is not None and str(args.resume) == "auto":
        args.resume_auto = True  # a finished run is then "already complete", not an error
        found = find_resume_checkpoint(args.model_dir, args.network)
        if found is None:
            log.info("--resume auto: no complete %s checkpoint in %s, starting from epoch 1", args.network,
                     args.model_dir)
        args.resume = found
        return found
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


def _model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = dict(args.model_arg)
    if args.dropout is not None:
        kw["dropout"] = args.dropout
    if args.width_mult is not None:
        kw["width_mult"] = args.width_mult
    if "frames" not in kw and "frames" in network.model_kwargs(args.network):
        kw["frames"] = args.clip_length  # R2D stacks a fixed number of frames: the clips it is trained on
    return kw


def _args_for_checkpoint(args: argparse.Namespace) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return {k: plain(v) for k, v in vars(args).items()}


def _train_dataset(args: argparse.Namespace, resize_short: int, classes: list[str] | None = None) -> VideoDataset:
    return VideoDataset(args.dataset, args.labels, split=args.train_split, clip_length=args.clip_length,
                        frame_interval=list(args.train_frame_interval), classes=classes, bad_clips=args.bad_clips,
                        transform=train_transform(args.clip_size, resize_short, flip=args.flip,
                                                  color_jitter=args.color_jitter, srtg_augment=args.srtg_augment,
                                                  normalize=False))


def build_datasets(args: argparse.Namespace) -> Datasets:
    """The training set and, when the label CSV has the validation split, the validation set.

    Both give uint8 clips: the trainer normalises each batch on its device (`data.transforms.NormalizeBatch`).
    """
    resize_short = args.resize_short or default_resize_short(args.clip_size)
    train_ds = _train_dataset(args, resize_short)
    check_clip_fits(train_ds, args.clip_size, resize_short)
    classes = list(train_ds.classes)
    val_ds = None
    if any(s.split == args.val_split for s in read_labels(train_ds.labels_csv)):
        val_ds = VideoDataset(args.dataset, args.labels, split=args.val_split, clip_length=args.clip_length,
                              frame_interval=args.val_frame_interval, classes=classes,
                              transform=val_transform(args.clip_size, resize_short, normalize=False),
                              clips_per_video=args.val_clips_per_video, train=False)
    else:
        log.warning("no %r split in %s: training without validation (no best checkpoint)", args.val_split,
                    train_ds.labels_csv, extra=SAME_ON_EVERY_RANK)
    return Datasets(train_ds, val_ds, classes, resize_short, args)


def build_run_model(args: argparse.Namespace, num_classes: int, resume: dict[str, Any] | None) -> nn.Module:
    """The network, initialised from `--pretrained-3d`/`--pretrained-2d` unless a checkpoint is resumed."""
    model = network.build_model(args.network, num_classes, **_model_kwargs(args))
    min_frames = getattr(model, "min_frames", 1)
    if args.clip_length < min_frames:
        hint = model.min_frames_hint() if hasattr(model, "min_frames_hint") else ""
        raise ValueError(f"{args.network} needs clips of at least {min_frames} frames, --clip-length is "
                         f"{args.clip_length}{hint}")
    if resume is not None:
        return model
    if args.pretrained_3d is not None:
        if not Path(args.pretrained_3d).is_file() and args.network in TORCHVISION_VIDEO_MODELS:
            raise CheckpointError(f"--pretrained-3d {missing_weights_message(args.pretrained_3d, args.network)}")
        report = network.load_weights(model, args.pretrained_3d)
        if not report.loaded:
            raise CheckpointError(f"--pretrained-3d {args.pretrained_3d}: no tensor matches {args.network} by "
                                  f"name and shape (a checkpoint of another model?)")
        log.info("--pretrained-3d: %s", report)
    elif args.pretrained_2d is not None:
        try:
            report = network.inflate_2d_resnet(model, args.pretrained_2d)
        except ValueError as e:
            raise CheckpointError(f"--pretrained-2d {args.pretrained_2d}: {e}") from None
        if not report.loaded:
            raise CheckpointError(f"--pretrained-2d {args.pretrained_2d}: nothing could be inflated into "
                                  f"{args.network}")
    return model


def build_multigrid(args: argparse.Namespace, min_frames: int, is_main: bool) -> MultigridSchedule | None:
    """The multigrid schedule of `--long-cycles`/`--short-cycles` (None when both are off: the plain baseline)."""
    if not (args.long_cycles or args.short_cycles):
        return None
    schedule = MultigridSchedule.from_args(args, min_clip_length=min_frames)
    if is_main:
        log.info("%s", schedule.describe())
        if schedule.smallest_crop < MIN_MULTIGRID_CROP:
            log.warning("multigrid: the smallest crop is %d px, below the networks' total spatial stride of %d: "
                        "their last stages see 1x1 maps and such clips may carry too little signal to learn "
                        "from (on the demo data 16-px clips stayed at chance); use a base --clip-size of at "
                        "least %d with --short-cycles, %d without (docs/BENCHMARKS.md, multigrid)",
                        schedule.smallest_crop, MIN_MULTIGRID_CROP, 2 * MIN_MULTIGRID_CROP,
                        math.ceil(MIN_MULTIGRID_CROP * 2 ** 0.5), extra=SAME_ON_EVERY_RANK)
    return schedule


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


def build_train_loaders(args: argparse.Namespace, data: Datasets, multigrid: MultigridSchedule | None,
                        dist_info: DistInfo) -> LoaderFactory:
    """The trainer's per-epoch train loader: fixed, or reshaped epoch by epoch by the multigrid schedule."""
    if multigrid is not None:
        return MultigridLoaders(data.train, multigrid, workers=args.workers, seed=args.random_seed,
                                distributed=dist_info.distributed)
    if len(data.train) < args.batch_size * dist_info.world_size:
        raise ValueError(f"the {args.train_split!r} split has {len(data.train)} videos, fewer than one batch of "
                         f"{args.batch_size} x {dist_info.world_size} process(es): lower --batch-size")
    return FixedLoader(
        lambda: build_loader(data.train, args.batch_size, train=True, workers=args.workers, seed=args.random_seed,
                             distributed=dist_info.distributed),
        data.train, args.batch_size, args.clip_length, args.clip_size)


def build_precise_bn(args: argparse.Namespace, data: Datasets, multigrid: MultigridSchedule | None,
                     dist_info: DistInfo) -> PreciseBN | None:
    """BN statistics recomputed at the base shape before validation (default on with multigrid only)."""
    batches = args.precise_bn_batches
    if batches is None:
        batches = PRECISE_BN_BATCHES if multigrid is not None else 0
    if batches <= 0:
        return None
    bn_ds = data.make_train()  # its own copy: multigrid reshapes the training set from epoch to epoch
    precise_bn = PreciseBN(
        lambda: build_loader(bn_ds, args.batch_size, train=True, workers=args.workers, seed=args.random_seed + 1,
                             distributed=dist_info.distributed),
        batches, args.clip_length, args.clip_size, dataset=bn_ds, always=multigrid is None,
        input_transform=NormalizeBatch(MEAN, STD))
    if dist_info.is_main:
        log.info("precise BN: BN statistics recomputed over %d base-shape training batches before each "
                 "validation and at the end", batches)
    return precise_bn


def build_val_loader(args: argparse.Namespace, data: Datasets, dist_info: DistInfo) -> Any:
    """The validation loader (each rank a disjoint shard when distributed), or None without a validation set."""
    if data.val is None:
        return None
    if dist_info.distributed:
        batches = torch.utils.data.BatchSampler(ShardSampler(len(data.val), dist_info.rank, dist_info.world_size),
                                                args.batch_size, drop_last=False)
        return build_loader(data.val, args.batch_size, train=False, workers=args.workers, seed=args.random_seed,
                            batch_sampler=batches)
    return build_loader(data.val, args.batch_size, train=False, workers=args.workers, seed=args.random_seed)


def set_threads(args: argparse.Namespace, resume: dict[str, Any] | None, is_main: bool) -> int:
    """Set torch's intra-op thread count: `--threads`, else a resumed run's recorded count, else the environment's.

    CPU kernels split their sums by thread, so the count changes the last bits of every result: a resumed run
    keeps the count it was trained with (a requeue may land on a node with other defaults), and runs compared
    across layouts must be given the same `--threads`.
    """
    recorded = (resume or {}).get("threads")
    threads = args.threads or recorded
    if threads:
        torch.set_num_threads(int(threads))
    if is_main and args.threads and recorded and int(recorded) != args.threads:
        log.warning("--threads %d: the checkpoint was trained with %d threads per process; the continuation is "
                    "valid but not bit-identical to an uninterrupted run", args.threads, int(recorded),
                    extra=SAME_ON_EVERY_RANK)
    return torch.get_num_threads()


def checkpoint_meta(args: argparse.Namespace, data: Datasets) -> dict[str, Any]:
    """What every checkpoint of the run records besides the training state: model, classes, preprocessing."""
    return {
        "format": "videotrain-ckpt-1", "network": args.network, "num_classes": len(data.classes),
        "threads": torch.get_num_threads(),
        "classes": data.classes, "model_kwargs": _model_kwargs(args), "args": _args_for_checkpoint(args),
        "preprocess": {"clip_length": args.clip_length, "crop_size": args.clip_size,
                       "resize_short": data.resize_short, "frame_interval": args.val_frame_interval,
                       "mean": list(MEAN), "std": list(STD)},
    }


def build_callbacks(args: argparse.Namespace, meta: dict[str, Any], model: nn.Module, resume: dict[str, Any] | None,
                    dist_info: DistInfo, extra: Sequence[Callback] = ()) -> tuple[CallbackList, Checkpointer,
                                                                                 CSVHistory]:
    """Speed monitor, metric printer, CSV history, curves, checkpointer, the temporal-gate switch (and `extra`),
    in the order they run."""
    best_so_far = (resume.get("metrics") or {}).get("best") if resume is not None else None
    if dist_info.is_main:
        Path(args.model_dir).mkdir(parents=True, exist_ok=True)
    history = CSVHistory(args.model_dir)
    checkpointer = Checkpointer(args.model_dir, args.network, meta, save_frequency=args.save_frequency,
                                keep_last=args.keep_last, best_so_far=best_so_far)
    callbacks = CallbackList([SpeedMonitor(log_interval=args.log_interval), MetricPrinter(args.log_interval),
                              history, PlotCurves(Path(args.model_dir) / "curves.png", history), checkpointer,
                              *temporal_gates_callbacks(args, model, checkpointer, resume), *extra])
    if getattr(args, "tensorboard", False) and dist_info.is_main:
        from train.tensorboard import TensorBoardLogger

        callbacks.append(TensorBoardLogger(Path(args.model_dir) / "tensorboard", args=_args_for_checkpoint(args),
                                           classes=meta["classes"], log_interval=args.log_interval))
    return callbacks, checkpointer, history


def _load_resume(args: argparse.Namespace, num_classes: int, classes: list[str]) -> tuple[Path | None, Any]:
    path = resume_path(args)
    if path is None:
        return None, None
    ckpt = load_checkpoint(path)
    check_same_model(ckpt, args.network, num_classes, path)
    if list(ckpt["classes"]) != classes:
        raise CheckpointError(f"{path}: checkpoint classes differ from the dataset's classes")
    _check_same_shape_args(ckpt, args, path)
    return path, ckpt


def _check_same_shape_args(ckpt: dict[str, Any], args: argparse.Namespace, path: Path) -> None:
    """A resumed model must be built as the checkpoint's was: name the option that differs (e.g. the width)."""
    stored = dict(ckpt.get("model_kwargs") or {})
    asked = _model_kwargs(args)
    for key in sorted(set(stored) | set(asked)):
        if key in ("dropout", "temporal_gates"):
            continue  # no weights depend on them (the gates are switched by --temporal-gates-from)
        if stored.get(key) != asked.get(key):
            flag = "--width-mult" if key == "width_mult" else f"--model-arg {key}=..."
            raise CheckpointError(f"{path}: checkpoint was trained with {key}={stored.get(key, 'default')}, this run "
                                  f"asks for {key}={asked.get(key, 'default')}: give the same {flag} to resume it")


class RunComplete(Exception):
    """`--resume auto` found the run finished: nothing to train (the CLI says so and exits 0)."""


def _restore(trainer: Trainer, ckpt: dict[str, Any], path: Path, end_epoch: int, auto: bool = False) -> None:
    if auto and int(ckpt["epoch"]) >= end_epoch and not ckpt.get("mid_epoch"):
        # A requeued job whose previous attempt finished (e.g. signalled during its last validation).
        raise RunComplete(f"{path}: the run is already complete (epoch {int(ckpt['epoch'])} of --end-epoch "
                          f"{end_epoch}); nothing to do")
    try:
        trainer.load_state_dict(ckpt)
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f"{path}: cannot restore the training state ({str(e).splitlines()[0]})") from None
    if trainer.start_epoch > end_epoch:
        raise ValueError(f"{path} ends at epoch {trainer.start_epoch - 1}, already at --end-epoch {end_epoch}: "
                         f"raise --end-epoch to train further")
    log.info("resumed from %s: continuing at epoch %d", path, trainer.start_epoch)


def _make_deterministic(model: nn.Module, args: argparse.Namespace, precision: Precision,
                        device: torch.device) -> None:
    """Swap in deterministic equivalents; on CUDA, refuse a model that still uses a non-deterministic kernel."""
    replaced = replace_global_pooling(model)
    if replaced:
        log.debug("--deterministic: %d global average poolings computed as means", replaced)
    if device.type == "cuda":
        clips = torch.randn(2, 3, args.clip_length, args.clip_size, args.clip_size, device=device)
        check_deterministic(model, clips, precision.autocast, args.network)


def prepare(args: argparse.Namespace, dist_info: DistInfo | None = None,
            extra_callbacks: Sequence[Callback] = ()) -> Setup:
    """Build datasets, model, optimizer, schedule, loaders, callbacks and the trainer (resumed if asked)."""
    dist_info = dist_info or DistInfo(device=use_device(select_device(args.gpus)))
    device = dist_info.device
    seed_everything(args.random_seed)
    if args.deterministic:
        enable_deterministic()
    elif device.type == "cuda":
        # cuDNN tunes each input shape once per process and caches the choice: multigrid's shapes are tuned the
        # first time they come and reused in every later epoch (docs/training.md, GPU).
        torch.backends.cudnn.benchmark = True

    data = build_datasets(args)
    resumed_from, resume = _load_resume(args, len(data.classes), data.classes)
    set_threads(args, resume, dist_info.is_main)
    model = build_run_model(args, len(data.classes), resume)
    multigrid = build_multigrid(args, getattr(model, "min_frames", 1), dist_info.is_main)
    end_epoch, lr_steps = args.end_epoch, list(args.lr_steps)
    if multigrid is not None:
        end_epoch, lr_steps = multigrid.end_epoch, list(multigrid.lr_steps)
        model = convert_sub_batchnorm(model, multigrid.bn_group_size)

    model.to(device)
    configure_model(model, args)
    precision = Precision(args.precision, device)
    if args.precision == "bf16" and device.type == "cpu" and dist_info.is_main:
        log.warning("--precision bf16 on the CPU: oneDNN's AVX-512 bf16 convolutions have returned wrong weight "
                    "gradients (finite, up to 1e35) now and then on some CPUs, so a run can differ run to run; "
                    "prefer fp32 on the CPU, or set ONEDNN_MAX_CPU_ISA=AVX2 (docs/training.md, GPU)",
                    extra=SAME_ON_EVERY_RANK)
    if args.deterministic:
        _make_deterministic(model, args, precision, device)
    optimizer = build_optimizer(_param_groups(model, args), args)
    scheduler = StepLRSchedule(optimizer, args.lr_base, lr_steps, args.lr_factor, args.warmup_epochs)
    train_loaders = build_train_loaders(args, data, multigrid, dist_info)
    precise_bn = build_precise_bn(args, data, multigrid, dist_info)
    val_loader = build_val_loader(args, data, dist_info)
    model = build_sync_bn(model, args, dist_info)
    if args.precision != "fp32" and device.type != "cuda":
        # After the SyncBN conversion, which would drop the hooks. Not on CUDA: cuDNN keeps BN statistics in
        # fp32 for half inputs, and fp32 copies before every BN would more than double the saved activations.
        keep_batchnorm_fp32(model)
    ema = build_ema(model, args)
    ddp_model: nn.Module = wrap_input(model, args)
    if dist_info.distributed:
        ddp_model = nn.parallel.DistributedDataParallel(ddp_model, device_ids=[device.index] if device.type == "cuda"
                                                        else None)
    ddp_model = compile_model(ddp_model, args)
    callbacks, checkpointer, history = build_callbacks(args, checkpoint_meta(args, data), model, resume, dist_info,
                                                       [*bad_clip_callbacks(args, data.train), *extra_callbacks])
    trainer = Trainer(ddp_model, optimizer, train_loaders, scheduler=scheduler, end_epoch=end_epoch,
                      val_loader=val_loader, num_val_videos=len(data.val.samples) if data.val is not None else 0,
                      num_classes=len(data.classes), precision=precision, dist_info=dist_info, callbacks=callbacks,
                      seed=args.random_seed, max_batches=DEBUG_BATCHES if args.debug_mode else None,
                      val_frequency=args.val_frequency, max_nonfinite=args.max_nonfinite,
                      clip_grad_norm=args.clip_grad_norm, precise_bn=precise_bn,
                      criterion=build_criterion(args), mixer=build_mixer(args), ema=ema,
                      grad_accum=args.grad_accum, preemption=build_preemption(args),
                      metrics_interval=args.log_interval, input_transform=NormalizeBatch(MEAN, STD))
    if resume is not None:
        _restore(trainer, resume, resumed_from, end_epoch, auto=getattr(args, "resume_auto", False))
    elif dist_info.is_main and list_checkpoints(args.model_dir, args.network):
        log.warning("%s already holds %s checkpoints: a new run from epoch 1 replaces them as it goes (use "
                    "--resume-epoch to continue instead)", args.model_dir, args.network, extra=SAME_ON_EVERY_RANK)
    return Setup(args=args, dist=dist_info, trainer=trainer, classes=data.classes, model=model,
                 checkpointer=checkpointer, history=history, resumed_from=resumed_from)
