"""Inference from a trained checkpoint: the device to run on, the model, and the clip preprocessing it expects.

Shared by the evaluation, prediction, feature-extraction and ONNX-export tools, so that all of them rebuild a
model and its validation transform the same way:

    loaded = load_model("runs/x_best.pth", resolve_device("auto"))
    transform = build_val_transform(loaded.preprocess)
    interval = eval_interval(loaded.preprocess["frame_interval"])

torchvision's Kinetics-400 weights files (``r2plus1d_18-91a641e6.pth``, ...) load too, with torchvision's class
names and preprocessing (`train.pretrained`): ``load_model(path, network="r2plus1d_18")``, or without `network`
when the file's tensors fit one of the three models exactly.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
from dataclasses import dataclass, field

import torch
from torch import nn

from data.fixed_resize import fixed_resize_val_transform
from data.sampling import eval_interval
from data.transforms import ClipTransform, val_transform
from network.weights import CheckpointError
from train.checkpoint import build_model_from_checkpoint, load_checkpoint, validate_checkpoint
from train.pretrained import is_torchvision_state, load_torchvision_video

__all__ = ["DEVICE_HELP", "CheckpointError", "LoadedModel", "add_device_argument", "build_val_transform",
           "eval_interval", "load_model", "parse_device", "resolve_device"]

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
               require_classes: bool = False, network: str | None = None) -> LoadedModel:
    """Load a trained checkpoint (``train.checkpoint`` format) into an eval-mode model on `device`.

    A checkpoint without class names still loads unless `require_classes`: classes become ``["0", "1", ...]``
    with a warning. With `network` the file is torchvision's Kinetics-400 weights of that model (see
    `train.pretrained`); a bare state_dict that fits one of them exactly is recognised without it. Raises
    ``CheckpointError`` (missing, corrupt, other format, unknown network, weights that do not fit) with a message
    naming the file.
    """
    dev = resolve_device(device)
    path = str(checkpoint_path)
    if network is not None:
        return _load_torchvision(path, network, dev)
    warnings: list[str] = []
    try:
        ckpt = load_checkpoint(path) if require_classes else _read_checkpoint(path, warnings)
    except CheckpointError:
        detected = is_torchvision_state(path) if os.path.isfile(path) else None
        if detected is None:
            raise
        return _load_torchvision(path, detected, dev)
    try:
        model, classes, preprocess = build_model_from_checkpoint(ckpt)
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: {_first_line(e)}") from None
    model.eval().to(dev)
    return LoadedModel(model, str(ckpt["network"]), list(classes), dict(preprocess), dev, warnings)


def _load_torchvision(path: str, network: str, device: torch.device) -> LoadedModel:
    model, info = load_torchvision_video(path, network, device)
    return LoadedModel(model, info.network, list(info.classes), dict(info.preprocess), device)


def _read_checkpoint(path: str, warnings: list[str]) -> dict:
    """``load_checkpoint``, except that missing class names are replaced by indices (with a warning)."""
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
        raw["classes"] = [str(i) for i in range(n)]
        try:
            ckpt = validate_checkpoint(raw, path)
        except CheckpointError:
            raise CheckpointError(str(first_error)) from None
        warnings.append(f"{path}: the checkpoint has no class names; classes are shown as indices 0..{n - 1}")
        log.warning(warnings[-1])
        return ckpt


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def build_val_transform(preprocess: dict) -> ClipTransform:
    """The validation clip transform for a checkpoint's ``preprocess`` dict (crop, resize, mean, std).

    A ``resize`` entry ``[H, W]`` (torchvision's models) resizes to that fixed size before the centre crop;
    otherwise the shorter side is resized to ``resize_short``.
    """
    norm = {k: tuple(preprocess[k]) for k in ("mean", "std") if preprocess.get(k) is not None}
    norm["channel_order"] = preprocess.get("channel_order") or "rgb"  # "bgr": SRTG reference checkpoints
    if preprocess.get("resize"):
        return fixed_resize_val_transform(int(preprocess["crop_size"]), preprocess["resize"], **norm)
    return val_transform(int(preprocess["crop_size"]), resize_short=preprocess.get("resize_short"), **norm)
