"""Checkpoints written by the reference code bases: recognise them and map their tensor names to ours.

- SRTG (Squeeze-and-Recursion-Temporal-Gates): `{'epoch', 'state_dict', 'optimizer'}` saved from
  `nn.DataParallel` (`module.` keys). Its 3D convs are `nn.Sequential` wrappers one level deeper than ours
  (`layer1.0.conv1.0.0.weight` for our `layer1.0.conv1.0.weight`; the ip-CSN depthwise conv likewise) and its SR
  block is `<block>.sar.lstm.*` for our `<block>.sr.lstm.*`. Its networks are our `layout="srtg"` ones.
- MiCT-Net-PyTorch: `{'epoch', 'state_dict', 'optimizer', 'best_pred'}`. 3D stem `conv2`/`bn2` (ours
  `stem3d.conv`/`stem3d.bn`), 2D blocks `layerN.bottlenecks.M.*` (ours `layerN.M.*`), the stage's 3D conv
  `layerN.conv`/`layerN.bn` (ours `layerN_3d.conv`/`layerN_3d.bn`).

`adapt(obj, state, model)` returns the state_dict in the model's names (unchanged for other formats) and raises
`ValueError` when a recognised checkpoint cannot be the model's (another depth, block type or layout);
`fitting_networks(format, state)` names the registered networks it does load into (checkpoints carry no name).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["detect_format", "adapt", "fitting_networks", "reference_layout", "SRTG", "MICT"]

log = logging.getLogger(__name__)

SRTG = "SRTG"
MICT = "MiCT-Net-PyTorch"
_REFERENCE_FILE_KEYS = {"epoch", "state_dict", "optimizer"}
_BLOCK = re.compile(r"^layer(\d)\.(?:bottlenecks\.)?(\d+)\.")


def detect_format(obj: Any, state: Mapping[str, Tensor]) -> str | None:
    """`SRTG`, `MICT` or None, from the file's top-level keys and the tensor names (prefixes stripped)."""
    keys = list(state)
    if any(re.match(r"layer\d\.bottlenecks\.\d+\.", k) for k in keys) and "conv2.weight" in state:
        return MICT
    if not any(k.startswith("stem.") for k in keys):
        return None
    if any(".sar.lstm." in k for k in keys):
        return SRTG
    raw_keys = obj.get("state_dict", {}) if isinstance(obj, Mapping) else {}
    is_reference_file = (isinstance(obj, Mapping) and _REFERENCE_FILE_KEYS <= set(obj) and "model" not in obj
                         and any(str(k).startswith("module.") for k in raw_keys))
    # a 3x3x3 conv nested one Sequential deeper than torchvision's names is the reference's alone
    nested = any(re.fullmatch(r"layer\d\.\d+\.conv\d\.0\.0\.weight", k) and tuple(v.shape[2:]) == (3, 3, 3)
                 for k, v in state.items())
    return SRTG if is_reference_file or nested else None


def _stage_blocks(keys: list[str]) -> tuple[int, ...]:
    counts = [0, 0, 0, 0]
    for k in keys:
        m = _BLOCK.match(k)
        if m and 1 <= int(m.group(1)) <= 4:
            counts[int(m.group(1)) - 1] = max(counts[int(m.group(1)) - 1], int(m.group(2)) + 1)
    return tuple(counts)


def _srtg_name(key: str, own: Mapping[str, Tensor]) -> str:
    key = key.replace(".sar.", ".sr.")
    if key in own:
        return key
    # the reference wraps single convs in a Sequential: drop its extra `.0` level
    flat = re.sub(r"\.0\.weight$", ".weight", key)
    return flat if flat in own else key


def _mict_name(key: str) -> str:
    key = re.sub(r"^conv2\.", "stem3d.conv.", key)
    key = re.sub(r"^bn2\.", "stem3d.bn.", key)
    key = re.sub(r"^(layer\d)\.bottlenecks\.", r"\1.", key)
    return re.sub(r"^(layer\d)\.(conv|bn)\.", r"\1_3d.\2.", key)


def _model_label(model: nn.Module) -> str:
    return getattr(model, "model_name", type(model).__name__)


def _check_srtg(state: Mapping[str, Tensor], model: nn.Module, strict: bool) -> None:
    blocks = _stage_blocks(list(state))
    own_blocks = tuple(getattr(model, "layers", ())) or _stage_blocks(list(model.state_dict()))
    bottleneck = any(re.match(r"layer\d\.\d+\.conv3\.", k) for k in state)
    kind = "bottleneck" if bottleneck else "basic"
    own_kind = getattr(model, "block_type", kind)
    if blocks != own_blocks or kind != own_kind:
        raise ValueError(f"SRTG checkpoint of a ResNet with {kind} blocks {list(blocks)} does not fit "
                         f"{_model_label(model)} ({own_kind} blocks {list(own_blocks)}): build the model of its depth")
    layout = getattr(model, "layout", None)
    if layout is not None and layout != "srtg":
        message = (f"SRTG checkpoint into {_model_label(model)} built with layout={layout!r}: the reference "
                   f"network has a stem max-pool and its SR after the final ReLU; build it with layout='srtg'")
        if strict:
            raise ValueError(message)
        log.warning("%s", message)


def _check_mict(state: Mapping[str, Tensor], model: nn.Module) -> None:
    blocks = _stage_blocks(list(state))
    own_blocks = _stage_blocks(list(model.state_dict()))
    if blocks != own_blocks:
        raise ValueError(f"MiCT-Net-PyTorch checkpoint of a MiCT-ResNet with blocks {list(blocks)} does not fit "
                         f"{_model_label(model)} (blocks {list(own_blocks)}): build the model of its depth")


def _mapped(fmt: str, state: Mapping[str, Tensor], model: nn.Module, strict: bool) -> dict[str, Tensor]:
    own = model.state_dict()
    if fmt == SRTG:
        _check_srtg(state, model, strict)
        return {_srtg_name(k, own): v for k, v in state.items()}
    _check_mict(state, model)
    return {_mict_name(k): v for k, v in state.items()}


def reference_layout(fmt: str) -> dict[str, str]:
    """Keyword arguments of `build_model` that give the network the reference code builds (SRTG: its layout)."""
    return {"layout": "srtg"} if fmt == SRTG else {}


def fitting_networks(fmt: str, state: Mapping[str, Tensor]) -> list[str]:
    """Registered network names that a checkpoint of format `fmt` loads into strictly (at its class count).

    Only the members of the matching depth are built (on the meta device: shapes, no memory), so this is cheap.
    """
    from .registry import build_model, list_models  # the registry imports the zoo, which imports this module
    from .resnet3d import DEPTHS, FAMILIES, family_model_name

    fc = state.get("fc.weight")
    if fc is None or fc.dim() != 2:
        return []
    if fmt == SRTG:
        kind = "bottleneck" if any(re.match(r"layer\d\.\d+\.conv3\.", k) for k in state) else "basic"
        blocks = _stage_blocks(list(state))
        prefix = "srtg_" if any(".sar.lstm." in k for k in state) else ""
        names = [prefix + family_model_name(family, depth) for family, fam in FAMILIES.items() if "srtg" in fam.layouts
                 for depth in fam.depths if DEPTHS[depth] == (kind, blocks)]
    else:
        names = [n for n in list_models() if n.startswith("mict_")]
    fits = []
    for name in names:
        try:
            with torch.device("meta"):
                model = build_model(name, int(fc.shape[0]), **reference_layout(fmt))
            mapped = _mapped(fmt, state, model, strict=True)
        except ValueError:  # another depth, block type or layout
            continue
        own = model.state_dict()
        if mapped.keys() == own.keys() and all(tuple(v.shape) == tuple(own[k].shape) for k, v in mapped.items()):
            fits.append(name)
    return fits


def adapt(obj: Any, state: dict[str, Tensor], model: nn.Module, strict: bool = False
          ) -> tuple[dict[str, Tensor], str | None]:
    """Map a reference checkpoint's tensor names to `model`'s; returns `(state, format or None)`."""
    fmt = detect_format(obj, state)
    if fmt is None:
        return state, None
    mapped = _mapped(fmt, state, model, strict)
    log.info("recognised the %s checkpoint format: %d tensor names mapped", fmt, sum(a != b for a, b in zip(state, mapped)))
    return mapped, fmt
