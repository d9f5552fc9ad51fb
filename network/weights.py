"""Loading weights from local files: any checkpoint by name and shape, and 2D ResNet -> 3D inflation.

`load_weights` reads a bare state_dict or a checkpoint dict (`model` / `state_dict` entry), strips the
`module.` (DataParallel/DDP) and `_orig_mod.` (torch.compile) prefixes, copies every tensor whose name and shape
match and reports the rest; a checkpoint of another architecture gives a report, not an exception.
`inflate_2d_resnet` takes a torchvision 2D ResNet state_dict: same-shape tensors are copied, 2D kernels become 3D
ones by repeating them over time and dividing by the temporal depth (a clip of identical frames then gives the
2D response away from the clip ends). Files are read with `torch.load(..., weights_only=True)`: no code runs.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union

import torch
from torch import Tensor, nn

from . import reference_keys

__all__ = ["CheckpointError", "LoadReport", "load_weights", "inflate_2d_resnet", "read_state_dict", "read_checkpoint",
           "load_error_reason"]

log = logging.getLogger(__name__)

StateSource = Union[str, "os.PathLike[str]", Mapping[str, Any]]
_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(ValueError):
    """A checkpoint or weights file that is missing, corrupt, of another format or does not fit the model.

    The one error type for every checkpoint problem (weights loading, training checkpoints, inference tools);
    the one-line message names the file.
    """


@dataclass
class LoadReport:
    """What a load did: `loaded` model keys, `skipped` source keys with the reason, `missing` model keys."""

    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every model tensor was loaded and every source tensor used."""
        return not self.skipped and not self.missing

    def __str__(self) -> str:
        total = len(self.loaded) + len(self.missing)
        text = f"loaded {len(self.loaded)}/{total} model tensors"
        if self.skipped:
            first = "; ".join(f"{k}: {why}" for k, why in list(self.skipped.items())[:4])
            more = f"; ... {len(self.skipped) - 4} more" if len(self.skipped) > 4 else ""
            text += f", skipped {len(self.skipped)} checkpoint tensors ({first}{more})"
        if self.missing:
            first = ", ".join(self.missing[:4])
            more = f", ... {len(self.missing) - 4} more" if len(self.missing) > 4 else ""
            text += f", {len(self.missing)} model tensors not in the checkpoint ({first}{more})"
        return text


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _describe(src: StateSource) -> str:
    return os.fspath(src) if isinstance(src, (str, os.PathLike)) else "<state_dict>"


def load_error_reason(e: Exception) -> str:
    """One readable line out of torch.load's multi-paragraph errors (whole sentences, no terminal codes)."""
    msg = _ANSI.sub("", str(e))
    if "WeightsUnpickler error:" in msg:
        detail = " ".join(msg.split("WeightsUnpickler error:", 1)[1].split())
        detail = detail.split(" Please use")[0].split(" Check the documentation")[0].rstrip(".")
        if "Unsupported global" in detail:
            return f"it holds Python objects besides tensors, which weights_only loading refuses ({detail})"
        return f"not a PyTorch checkpoint, or corrupt ({detail})"
    if isinstance(e, EOFError) or not msg.strip():
        return "file is empty or truncated"
    first = " ".join(msg.split()).split(". ")[0][:300]
    return f"corrupt or truncated file ({first})" if "zip archive" in first else first


def read_state_dict(src: StateSource) -> dict[str, Tensor]:
    """Tensors of a checkpoint file or mapping, keys stripped of `module.` / `_orig_mod.`.

    Accepts a bare state_dict or a dict holding one under `model` or `state_dict`. Raises `CheckpointError` for a
    missing, corrupt or non-checkpoint file.
    """
    return _state_of(_read_object(src), _describe(src))


def read_checkpoint(src: StateSource) -> tuple[Any, dict[str, Tensor]]:
    """The object a checkpoint file (or mapping) holds and its tensors as `read_state_dict` gives them.

    The object keeps the top-level keys (``epoch``, ``optimizer``, ...) that tell a reference checkpoint apart
    (`network.reference_keys.detect_format`). Raises `CheckpointError` as `read_state_dict`.
    """
    obj = _read_object(src)
    return obj, _state_of(obj, _describe(src))


def _read_object(src: StateSource) -> Any:
    if isinstance(src, Mapping):
        return src
    name = _describe(src)
    if not os.path.isfile(src):
        raise CheckpointError(f"checkpoint {name}: no such file")
    try:
        return torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types for bad files (pickle, zip, EOF, Runtime)
        raise CheckpointError(f"cannot read checkpoint {name}: {load_error_reason(e)}") from e


def _state_of(obj: Any, name: str) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {name}: expected a state_dict, found a {type(obj).__name__}")
    tensors = {_strip_prefixes(str(k)): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        keys = ", ".join(list(map(str, obj))[:8])
        raise CheckpointError(f"checkpoint {name}: no tensors found (top-level keys: {keys})")
    return tensors


def load_weights(model: nn.Module, src: StateSource, strict: bool = False) -> LoadReport:
    """Copy every tensor of `src` whose (prefix-stripped) name and shape match `model`; report the rest.

    Checkpoints of the SRTG and MiCT-Net-PyTorch code are recognised and their names mapped
    (`network.reference_keys`); one that cannot be this model's (another depth) raises `CheckpointError`.
    With `strict=True` any skipped or missing tensor raises `CheckpointError` and nothing is loaded.
    """
    obj = _read_object(src)
    state = _state_of(obj, _describe(src))
    try:
        state, _ = reference_keys.adapt(obj, state, model, strict)
    except ValueError as e:
        raise CheckpointError(f"checkpoint {_describe(src)}: {e}") from None
    own = model.state_dict()
    report = LoadReport()
    take: dict[str, Tensor] = {}
    for key, value in state.items():
        if key not in own:
            report.skipped[key] = "not in model"
        elif tuple(value.shape) != tuple(own[key].shape):
            report.skipped[key] = f"shape {tuple(value.shape)} != model {tuple(own[key].shape)}"
        else:
            take[key] = value
    report.loaded = [k for k in own if k in take]
    report.missing = [k for k in own if k not in take]
    if strict and not report.complete:
        raise CheckpointError(f"checkpoint {_describe(src)} does not match the model strictly: {report}")
    _assign(model, own, take)
    _log_report(f"weights from {_describe(src)}", report)
    return report


def inflate_2d_resnet(model: nn.Module, src: StateSource) -> LoadReport:
    """Initialise `model` from a torchvision 2D ResNet state_dict (file or mapping).

    The model says which of its tensors come from which 2D tensor (`model.pretrained_2d_map()`); equal shapes are
    copied, a 2D kernel `(O, I, kH, kW)` fills a 3D one `(O, I, kT, kH, kW)` repeated over time and divided by kT,
    and a 2D kernel over frames stacked into the channels `(O, I*L, kH, kW)` (R2D; channel c*L + t) repeated over
    the L frames and divided by L. Tensors with no usable counterpart are reported (e.g. a 1000-class ImageNet `fc`
    into a 101-class model). A model with no 2D ResNet counterpart raises `ValueError`.
    """
    name = getattr(model, "model_name", type(model).__name__)
    if not hasattr(model, "pretrained_2d_map"):
        raise ValueError(f"{name} has no 2D ResNet stages to initialise from a 2D ResNet")
    try:
        mapping: dict[str, str] = model.pretrained_2d_map()
    except NotImplementedError:
        raise ValueError(f"{name} has no 2D ResNet stages to initialise from a 2D ResNet") from None
    state = read_state_dict(src)
    own = model.state_dict()
    report = LoadReport()
    take: dict[str, Tensor] = {}
    used: set[str] = set()
    for key, key2d in mapping.items():
        if key not in own or key2d not in state:
            continue
        used.add(key2d)
        value, target = state[key2d], own[key]
        if value.shape == target.shape:
            take[key] = value
        elif (value.dim() == 4 and target.dim() == 5 and value.shape[:2] == target.shape[:2]
              and value.shape[2:] == target.shape[3:]):
            depth = target.shape[2]
            take[key] = value.unsqueeze(2).repeat(1, 1, depth, 1, 1) / depth
        elif (value.dim() == 4 and target.dim() == 4 and value.shape[0] == target.shape[0]
              and target.shape[1] % value.shape[1] == 0 and value.shape[2:] == target.shape[2:]):
            frames = target.shape[1] // value.shape[1]
            take[key] = value.repeat_interleave(frames, dim=1) / frames
        else:
            report.skipped[key2d] = f"shape {tuple(value.shape)} does not fit {key} {tuple(target.shape)}"
    for key2d in state:
        if key2d not in used:
            report.skipped[key2d] = "no counterpart in the model"
    report.loaded = [k for k in own if k in take]
    report.missing = [k for k in own if k not in take]
    _assign(model, own, take)
    _log_report(f"2D ResNet weights from {_describe(src)} (inflated)", report)
    return report


def _assign(model: nn.Module, own: dict[str, Tensor], take: dict[str, Tensor]) -> None:
    # load_state_dict (rather than raw copies) keeps module hooks and dtype/device conversion in one place
    model.load_state_dict({**own, **take}, strict=True)


def _log_report(what: str, report: LoadReport) -> None:
    if not report.loaded:
        log.warning("%s: nothing matched the model (%s)", what, report)
        return
    log.info("%s: %s", what, report)
    for key, why in report.skipped.items():
        log.debug("skipped %s: %s", key, why)
    for key in report.missing:
        log.debug("not loaded: %s", key)
