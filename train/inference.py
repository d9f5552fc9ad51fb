"""Inference from a trained checkpoint: the device to run on, the model, and the clip preprocessing it expects.

Shared by the evaluation, prediction, feature-extraction and ONNX-export tools, so that all of them rebuild a
model and its validation transform the same way:

    loaded = load_model("runs/x_best.pth", resolve_device("auto"))
    transform = build_val_transform(loaded.preprocess)
    interval = eval_interval(loaded.preprocess["frame_interval"])

torchvision's Kinetics-400 weights files (``r2plus1d_18-91a641e6.pth``, ...) load too, with torchvision's class
names and preprocessing (`train.pretrained`): ``load_model(path, network="r2plus1d_18")``, or without `network`
when the file's tensors fit one of the three models exactly. So do checkpoints of the SRTG and MiCT-Net-PyTorch
code, with the network named (``load_model(path, network="srtg_r3d_50", classes=names)``) and the reference's
preprocessing (`train.reference_checkpoints`). `override_preprocess` applies the tools' ``--clip-length``,
``--frame-interval`` and ``--crop-size`` to any of them.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from data.fixed_resize import fixed_resize_val_transform
from data.sampling import eval_interval
from data.transforms import ClipTransform, val_transform
from network.weights import CheckpointError
from train.checkpoint import build_model_from_checkpoint, load_checkpoint, validate_checkpoint
from train.pretrained import TORCHVISION_VIDEO_MODELS, is_torchvision_state, load_torchvision_video
from train.reference_checkpoints import load_reference_model, missing_network_message, read_reference

__all__ = ["CLASSES_HELP", "DEVICE_HELP", "NETWORK_HELP", "WEIGHTS_HELP", "CheckpointError", "LoadedModel", "add_device_argument",
           "add_preprocess_arguments", "build_val_transform", "eval_interval", "load_model", "override_preprocess",
           "parse_device", "resolve_device"]

log = logging.getLogger(__name__)

DEVICE_HELP = "auto (CUDA when available, else the CPU), cpu, cuda or cuda:N"
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def parse_device(text: str) -> str:
    """argparse type of ``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (checked, not yet resolved)."""
    value = text.strip().lower()
    if not _DEVICE.match(value):
        raise argparse.ArgumentTypeError(f"--device takes {DEVICE_HELP}, got {text!r}")
    return value


def add_device_argument(parser: argparse.ArgumentParser, default: str = "auto", help: str = DEVICE_HELP) -> None:
    """The ``--device`` option every inference and benchmark tool spells the same way."""
    parser.add_argument("--device", type=parse_device, default=default, metavar="{auto,cpu,cuda,cuda:N}",
                        help=help)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"``: CUDA when available, else CPU. Asking for a CUDA device that is not there raises
    ``ValueError`` with a one-line message."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(parse_device(device))
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device} asked for, but no CUDA device is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return dev


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference plus what the checkpoint says about its input."""

    model: nn.Module
    network: str
    classes: list[str]
    preprocess: dict
    device: torch.device
    warnings: list[str] = field(default_factory=list)


def load_model(checkpoint_path: str | os.PathLike, device: str | torch.device | None = "cpu",
               require_classes: bool = False, network: str | None = None,
               classes: Sequence[str] | None = None) -> LoadedModel:
    """Load a trained checkpoint (``train.checkpoint`` format) into an eval-mode model on `device`.

    A checkpoint without class names still loads unless `require_classes`: classes become ``["0", "1", ...]``
    (or `classes`) with a warning. With `network` the file is torchvision's Kinetics-400 weights of that model
    (see `train.pretrained`), or a checkpoint of the SRTG or MiCT-Net-PyTorch code, built as the reference builds
    it and given the reference's preprocessing (`train.reference_checkpoints`); a bare state_dict that fits one of
    torchvision's models exactly is recognised without it. `classes` names the classes of a file that carries
    none (reference checkpoints: ``class_0, ...`` with a warning without them, an error when
    `require_classes`); a file's own names win. Raises ``CheckpointError`` (missing, corrupt, other format,
    unknown network, weights that do not fit, a reference checkpoint without `network`) naming the file.
    """
    dev = resolve_device(device)
    path = str(checkpoint_path)
    if network is not None:
        reference = read_reference(path) if os.path.isfile(path) else None
        if reference is not None:
            return _load_reference(path, network, reference, dev, classes, require_classes)
        if network not in TORCHVISION_VIDEO_MODELS:
            what = "no such weights file" if not os.path.isfile(path) else (
                "not a checkpoint of the SRTG or MiCT-Net-PyTorch code, and torchvision publishes Kinetics-400 "
                f"weights for {', '.join(TORCHVISION_VIDEO_MODELS)}, not {network!r} (a model trained here loads "
                "with --checkpoint)")
            raise CheckpointError(f"{path}: {what}")
        return _load_torchvision(path, network, dev)
    warnings: list[str] = []
    try:
        ckpt = load_checkpoint(path) if require_classes else _read_checkpoint(path, warnings, classes)
    except CheckpointError:
        detected = is_torchvision_state(path) if os.path.isfile(path) else None
        if detected is None:
            reference = read_reference(path) if os.path.isfile(path) else None
            if reference is not None:
                raise CheckpointError(missing_network_message(path, *reference)) from None
            raise
        return _load_torchvision(path, detected, dev)
    try:
        model, names, preprocess = build_model_from_checkpoint(ckpt)
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: {_first_line(e)}") from None
    model.eval().to(dev)
    return LoadedModel(model, str(ckpt["network"]), list(names), dict(preprocess), dev, warnings)


def _load_reference(path: str, network: str, reference: tuple[str, dict], device: torch.device,
                    classes: Sequence[str] | None, require_classes: bool) -> LoadedModel:
    fmt, state = reference
    model, names, preprocess, warnings = load_reference_model(path, network, fmt, state, classes, require_classes)
    return LoadedModel(model.to(device), network, names, preprocess, device, warnings)


def _load_torchvision(path: str, network: str, device: torch.device) -> LoadedModel:
    model, info = load_torchvision_video(path, network, device)
    return LoadedModel(model, info.network, list(info.classes), dict(info.preprocess), device)


def _read_checkpoint(path: str, warnings: list[str], classes: Sequence[str] | None = None) -> dict:
    """``load_checkpoint``, except that missing class names are replaced by `classes` or indices (warning)."""
    try:
        return load_checkpoint(path)
    except CheckpointError as first_error:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # unreadable: the validated loader's message says why
            raise CheckpointError(str(first_error)) from None
        n = raw.get("num_classes") if isinstance(raw, dict) else None
        if not isinstance(n, int) or n < 1 or raw.get("classes"):
            raise CheckpointError(str(first_error)) from None
        given = classes is not None and len(classes) == n
        raw["classes"] = [str(c) for c in classes] if given else [str(i) for i in range(n)]
        try:
            ckpt = validate_checkpoint(raw, path)
        except CheckpointError:
            raise CheckpointError(str(first_error)) from None
        if given:
            return ckpt
        warnings.append(f"{path}: the checkpoint has no class names; classes are shown as indices 0..{n - 1}")
        log.warning(warnings[-1])
        return ckpt


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


WEIGHTS_HELP = ("weights file of another code base: torchvision's Kinetics-400 (e.g. r2plus1d_18-91a641e6.pth), or a "
                "checkpoint of the SRTG or MiCT-Net-PyTorch code (with --network)")
NETWORK_HELP = ("architecture of --weights: r3d_18, mc3_18 or r2plus1d_18 for torchvision's (default: from the "
                "tensors); for an SRTG or MiCT-Net-PyTorch checkpoint the network it holds, e.g. srtg_r3d_50 or "
                "mict_resnet18 (built as the reference does; without it the error lists the names that fit)")
CLASSES_HELP = ("class names, one per line in the classifier's order (like classes.txt), for a weights file "
                "that carries none (SRTG, MiCT-Net-PyTorch); a file's own names win")


def add_preprocess_arguments(parser: argparse.ArgumentParser) -> None:
    """``--clip-length``, ``--frame-interval``, ``--crop-size``: override the model's preprocessing."""
    g = parser.add_argument_group("preprocessing (default: what the checkpoint or weights file was trained with)")
    g.add_argument("--clip-length", type=int, default=None, metavar="T", help="frames per clip")
    g.add_argument("--frame-interval", type=int, default=None, metavar="N", help="take every N-th frame")
    g.add_argument("--crop-size", type=int, default=None, metavar="S",
                   help="centre crop size; the resize keeps the model's resize/crop ratio")


def override_preprocess(loaded: LoadedModel, clip_length: int | None = None, frame_interval: int | None = None,
                        crop_size: int | None = None) -> LoadedModel:
    """`loaded` with its clip length, frame interval or crop size replaced (None keeps the model's value).

    A new crop scales the resize with it (shorter side, or torchvision's fixed ``resize``), so the field of view
    stays the model's; an explicit interval replaces a frame-rate-derived one. Raises ``ValueError`` (one line)
    for values below 1 or a clip shorter than the model takes.
    """
    for flag, value in (("--clip-length", clip_length), ("--frame-interval", frame_interval),
                        ("--crop-size", crop_size)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    pre = dict(loaded.preprocess)
    if clip_length is not None:
        min_frames = int(getattr(loaded.model, "min_frames", 1))
        if clip_length < min_frames:
            raise ValueError(f"--clip-length {clip_length}: {loaded.network} needs at least {min_frames} frames "
                             f"per clip")
        pre["clip_length"] = int(clip_length)
    if frame_interval is not None:
        pre["frame_interval"] = int(frame_interval)
        pre.pop("frame_rate", None)
    if crop_size is not None:
        ratio = int(crop_size) / int(pre["crop_size"])
        pre["crop_size"] = int(crop_size)
        if pre.get("resize_short"):
            pre["resize_short"] = max(int(crop_size), round(int(pre["resize_short"]) * ratio))
        if pre.get("resize"):
            pre["resize"] = [max(int(crop_size), round(int(v) * ratio)) for v in pre["resize"]]
    return replace(loaded, preprocess=pre)


def build_val_transform(preprocess: dict) -> ClipTransform:
    """The validation clip transform for a checkpoint's ``preprocess`` dict (crop, resize, mean, std).

    A ``resize`` entry ``[H, W]`` (torchvision's models) resizes to that fixed size before the centre crop;
    otherwise the shorter side is resized to ``resize_short``. ``channel_order`` ``"bgr"`` (SRTG reference
    checkpoints) feeds the channels reversed, with mean and std in that order.
    """
    norm = {k: tuple(preprocess[k]) for k in ("mean", "std") if preprocess.get(k) is not None}
    norm["channel_order"] = preprocess.get("channel_order") or "rgb"  # "bgr": SRTG reference checkpoints
    if preprocess.get("resize"):
        return fixed_resize_val_transform(int(preprocess["crop_size"]), preprocess["resize"], **norm)
    return val_transform(int(preprocess["crop_size"]), resize_short=preprocess.get("resize_short"), **norm)
