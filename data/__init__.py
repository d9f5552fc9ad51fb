"""Data pipeline: SQLite frame store, label files, clip samplers and transforms, dataset and loaders.

The public names below are imported on first use (PEP 562), so ``import data`` is cheap and one submodule's
import error only affects the names that come from it.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "open_video": "data.store",
    "get_reader": "data.store",
    "FrameStoreError": "data.store",
    "Sample": "data.labels",
    "read_labels": "data.labels",
    "read_classes": "data.labels",
    "VideoDataset": "data.dataset",
    "build_loader": "data.loader",
    "collate_clips": "data.loader",
    "train_transform": "data.transforms",
    "val_transform": "data.transforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
