"""Training checkpoints: atomic save, validated load, RNG capture, and model rebuilding for inference tools.

File layout (docs/ARCHITECTURE.md): `<model-dir>/<network>_ep-<epoch:04d>.pth` and `<model-dir>/<network>_best.pth`,
each a dict with `format == "videotrain-ckpt-1"`. Everything stored is loadable with `weights_only=True`
(tensors, numbers, strings, lists, dicts, tuples), so loading a checkpoint never runs pickled code.
"""
from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from data.atomic import atomic_write
from network.weights import CheckpointError, load_error_reason

__all__ = [
    "CheckpointError", "FORMAT", "best_checkpoint_path", "build_model_from_checkpoint", "capture_rng_state",
    "check_same_model", "checkpoint_path", "CheckpointWriteError", "list_checkpoints", "load_checkpoint",
    "numbered_checkpoints",
    "model_state_dict", "nonfinite_tensors", "remove_stale_temp_files", "restore_rng_state", "save_checkpoint", "unwrap_model", "validate_checkpoint",
]

log = logging.getLogger(__name__)

FORMAT = "videotrain-ckpt-1"
REQUIRED_KEYS = ("format", "network", "num_classes", "classes", "model_kwargs", "preprocess", "model", "epoch")
PREPROCESS_KEYS = ("clip_length", "crop_size", "resize_short", "frame_interval", "mean", "std")


def checkpoint_path(model_dir: str | os.PathLike, network: str, epoch: int) -> Path:
    return Path(model_dir) / f"{network}_ep-{epoch:04d}.pth"


def best_checkpoint_path(model_dir: str | os.PathLike, network: str) -> Path:
    return Path(model_dir) / f"{network}_best.pth"


def numbered_checkpoints(model_dir: str | os.PathLike, network: str, numbers: str) -> dict[tuple[int, ...], Path]:
    """The checkpoints ``<network>_<numbers>.pth`` in `model_dir` (`numbers` a regex whose groups are integers,
    e.g. ``ep-(\\d+)``), keyed by those integers, in order."""
    pattern = re.compile(rf"^{re.escape(network)}_{numbers}\.pth$")
    found = {}
    if Path(model_dir).is_dir():
        for p in Path(model_dir).iterdir():
            m = pattern.match(p.name)
            if m:
                found[tuple(int(g) for g in m.groups())] = p
    return dict(sorted(found.items()))


def list_checkpoints(model_dir: str | os.PathLike, network: str) -> dict[int, Path]:
    """Epoch -> path of the per-epoch checkpoints of `network` in `model_dir`, in order."""
    return {epoch: p for (epoch,), p in numbered_checkpoints(model_dir, network, r"ep-(\d+)").items()}


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, quota, file too large); the message names the file."""


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write `state` to `path` atomically: a temporary file in the same folder, fsync, then rename over `path`.

    A crash mid-write leaves the previous file (if any) intact and no half-written checkpoint under `path`.
    A failed write (e.g. a full disk) raises `CheckpointWriteError` after removing the temporary file.
    """
    path = Path(path)
    recorder = None
    try:
        with atomic_write(path, "wb") as f:
            recorder = _RecordingWriter(f)
            torch.save(state, recorder)
    except (OSError, RuntimeError) as e:
        # torch turns the writer's OSError into "RuntimeError: [enforce fail at inline_container.cc...]":
        # the first OSError the file itself raised says what really happened.
        cause = recorder.error if recorder is not None and recorder.error is not None else e
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else _write_reason(cause)
        kept = "the previous file is intact" if path.exists() else "earlier checkpoints are intact"
        raise CheckpointWriteError(f"{path}: cannot save the checkpoint ({reason}); {kept}") from None
    return path


class _RecordingWriter:
    """A binary file that remembers the first OSError of a write (torch hides it behind its own message)."""

    def __init__(self, f: Any) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        try:
            self._f.flush()
        except OSError as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def _write_reason(e: BaseException) -> str:
    text = str(e)
    for errno_name, words in (("ENOSPC", "No space left on device"), ("EFBIG", "File too large"),
                              ("EDQUOT", "Disk quota exceeded")):
        if words.lower() in text.lower() or errno_name in text:
            return words
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return first[:160]


_TEMP = re.compile(r"^\..+\.tmp-(\d+)-[0-9a-f]+$")


def remove_stale_temp_files(model_dir: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of checkpoint writes whose process is gone (killed mid-save); returns them."""
    removed = []
    folder = Path(model_dir)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TEMP.match(p.name)
        if m is None or not p.is_file() or _process_alive(int(m.group(1))):
            continue
        try:
            p.unlink()
        except FileNotFoundError:
            continue
        removed.append(p)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted save in %s", len(removed), folder)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # not written by this process yet: any such file is a leftover of a reused pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def nonfinite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of a state dict that hold NaN or inf."""
    return [k for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def validate_checkpoint(ckpt: Any, path: str | os.PathLike = "<checkpoint>") -> dict[str, Any]:
    """Check the structure of a loaded checkpoint; raises `CheckpointError` naming the problem."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a training checkpoint (a {type(ckpt).__name__}, expected a dict)")
    if ckpt.get("format") != FORMAT:
        hint = " (a bare state_dict or another tool's file: use --pretrained-3d to load its weights)"
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint{hint}")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    if not isinstance(ckpt["model"], dict) or not ckpt["model"]:
        raise CheckpointError(f"{path}: checkpoint holds no model weights")
    if len(ckpt["classes"]) != ckpt["num_classes"]:
        raise CheckpointError(f"{path}: {len(ckpt['classes'])} class names for {ckpt['num_classes']} classes")
    lacking = [k for k in PREPROCESS_KEYS if k not in ckpt["preprocess"]]
    if lacking:
        raise CheckpointError(f"{path}: preprocess lacks {', '.join(lacking)}")
    _rename_frame_based_r2d(ckpt, path)
    return ckpt


def _rename_frame_based_r2d(ckpt: dict[str, Any], path: str | os.PathLike) -> None:
    """Earlier versions called the frame-based 2D ResNet (f-R2D) `r2d_18`, the name R2D (frames stacked into the
    first conv) has now; such a checkpoint (its first conv `conv1.weight` reads 3 channels) loads as `fr2d_18`."""
    if ckpt["network"] != "r2d_18":
        return
    conv1 = ckpt["model"].get("conv1.weight")
    if isinstance(conv1, torch.Tensor) and conv1.dim() == 4 and conv1.shape[1] == 3:
        ckpt["network"] = "fr2d_18"
        log.info("%s: saved as r2d_18 by an earlier version (the frame-based network), loaded as fr2d_18", path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint written by `save_checkpoint` (safe: `weights_only=True`)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated/garbage files
        raise CheckpointError(f"{path}: corrupt or unreadable checkpoint ({load_error_reason(e)})") from None
    return validate_checkpoint(ckpt, path)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict without `module.`/`_orig_mod.` prefixes, on the CPU."""
    return {k: v.detach().cpu() for k, v in unwrap_model(model).state_dict().items()}


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (if present) CUDA generator states, in weights_only-loadable types."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state` (missing parts are left alone)."""
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                             n["cached_gaussian"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_same_model(ckpt: dict[str, Any], network: str, num_classes: int, path: str | os.PathLike) -> None:
    """Raise `CheckpointError` unless `ckpt` was trained for this network and number of classes."""
    if ckpt["network"] != network:
        raise CheckpointError(f"{path}: checkpoint of network {ckpt['network']!r}, not {network!r}")
    if ckpt["num_classes"] != num_classes:
        raise CheckpointError(f"{path}: checkpoint has {ckpt['num_classes']} classes, the dataset has "
                              f"{num_classes}")


def build_model_from_checkpoint(ckpt: dict[str, Any], device: str | torch.device = "cpu",
                                ) -> tuple[nn.Module, list[str], dict[str, Any]]:
    """Rebuild the trained model (eval mode) from a loaded checkpoint: `(model, classes, preprocess)`."""
    import network

    validate_checkpoint(ckpt)
    name = ckpt["network"]
    try:
        model = network.build_model(name, ckpt["num_classes"], **ckpt["model_kwargs"])
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"checkpoint of network {name!r} cannot be rebuilt: {e}") from None
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CheckpointError(f"checkpoint weights do not fit network {name!r}: {first[:200]}") from None
    model.to(device).eval()
    return model, list(ckpt["classes"]), dict(ckpt["preprocess"])
