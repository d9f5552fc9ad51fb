"""Checkpoints written by the SRTG and MiCT-Net-PyTorch code, as inference models: network, classes, preprocessing.

Such a file holds ``{'epoch', 'state_dict', 'optimizer'[, 'best_pred']}`` and nothing else: no network name, no
class names, no preprocessing. `network.reference_keys` recognises it and maps its tensor names; here the
network the user names is built the way the reference builds it (`layout="srtg"` for SRTG files), its class
count read from the classifier ``fc.weight``, the weights loaded strictly, and the preprocessing the reference
code evaluates with is attached. What the reference repositories do (read at their published revisions):

SRTG (alexandrosstergiou/Squeeze-and-Recursion-Temporal-Gates), whose published checkpoints are HACS models:
- ``train_hacs.py``: ``--clip-length 16``, ``--val-frame-interval 2`` (Kinetics 3, UCF-101/HMDB-51 4, in
  ``data/iterator_factory.py``'s defaults).
- ``data/iterator_factory.py`` ``get_hacs`` (and ``get_kinetics``), validation: ``iaa.Resize`` shorter side 294,
  centre crops 294 then 256, clips ``video_size=(16, 256, 256)`` whatever ``--clip-size`` was (UCF-101/HMDB-51
  crop ``--clip-size`` out of the same 294).
- ``network/config.py`` ``get_config``: mean ``[124, 117, 104] / 255``, std ``1 / (0.0167 * 255)`` for every
  channel; ``data/video_transforms.py`` ``Compose``: ``x / 255``, then ``(x - mean) / std`` per channel.
- ``data/video_iterator.py``: frames decoded with ``cv2.imdecode(..., cv2.IMREAD_COLOR)`` and never converted,
  so the networks were trained on **BGR** input (with the mean/std above in that channel order):
  ``channel_order="bgr"``.
- ``network/symbol_builder.py``: every model factory runs with its temporal gates off.

MiCT-Net-PyTorch (fmahoudeau/MiCT-Net-PyTorch), whose published checkpoints are UCF-101 MiCT-ResNet-18/34 v1:
- ``experiments/classification/mictresnet.sh``: ``test.py --version v1 --base-size 192 --crop-size 160
  --crop-vid 16``.
- ``mictnet/datasets/ucf101.py``: validation takes the first ``crop_vid`` frames without down-sampling (frame
  interval 1), PIL RGB, resizes the height to ``base_size`` (the shorter side of landscape video), centre crop.
- ``experiments/classification/test.py``: ``Normalize([.485, .456, .406], [.229, .224, .225])`` (ImageNet).

The tools' sampling differs from both references on purpose: clips are evenly spaced over the video (the
validation sampler) rather than the reference's one clip; and frames are resized with OpenCV (bilinear, area when
shrinking a lot) where the references use imgaug's default cubic (SRTG) or PIL bilinear (MiCT-Net-PyTorch), so
pixels differ slightly; ``--clip-length``, ``--frame-interval`` and
``--crop-size`` override the values above, e.g. for a UCF-101 SRTG model (interval 4).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

import network
from network import reference_keys
from network.reference_keys import MICT, SRTG
from network.weights import CheckpointError, load_weights, read_checkpoint

__all__ = ["REFERENCE_PREPROCESS", "read_reference", "missing_network_message", "load_reference_model"]

log = logging.getLogger(__name__)

_IMAGENET_MEAN, _IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

#: The validation preprocessing of each reference code base (see the module docstring for where it comes from).
REFERENCE_PREPROCESS: dict[str, dict[str, Any]] = {
    SRTG: {"clip_length": 16, "frame_interval": 2, "resize_short": 294, "crop_size": 256,
           "mean": [124 / 255, 117 / 255, 104 / 255], "std": [1 / (0.0167 * 255)] * 3, "channel_order": "bgr"},
    MICT: {"clip_length": 16, "frame_interval": 1, "resize_short": 192, "crop_size": 160,
           "mean": list(_IMAGENET_MEAN), "std": list(_IMAGENET_STD), "channel_order": "rgb"},
}


def read_reference(path: str) -> tuple[str, dict[str, Tensor]] | None:
    """``(format, tensors)`` when `path` is a checkpoint of a reference code base, else None (unreadable files
    too: the other loaders explain those)."""
    try:
        obj, state = read_checkpoint(path)
    except CheckpointError:
        return None
    fmt = reference_keys.detect_format(obj, state)
    return None if fmt is None else (fmt, state)


def _fit_hint(fmt: str, state: dict[str, Tensor]) -> str:
    fits = reference_keys.fitting_networks(fmt, state)
    return f"its tensors fit {', '.join(fits)}" if fits else "none of the registered networks fits its tensors"


def missing_network_message(path: str, fmt: str, state: dict[str, Tensor]) -> str:
    """One line: a reference checkpoint names no network; which option is missing and which names would fit."""
    article = "an" if fmt == SRTG else "a"
    return (f"{path}: {article} {fmt} checkpoint does not name its network: pass --network NAME "
            f"({_fit_hint(fmt, state)})")


def _num_classes(path: str, fmt: str, state: dict[str, Tensor]) -> int:
    fc = state.get("fc.weight")
    if fc is None or fc.dim() != 2:
        raise CheckpointError(f"{path}: {fmt} checkpoint without a classifier fc.weight (found "
                              f"{None if fc is None else tuple(fc.shape)})")
    return int(fc.shape[0])


def _class_names(path: str, fmt: str, n: int, classes: Sequence[str] | None, require: bool,
                 warnings: list[str]) -> list[str]:
    if classes is not None:
        names = [str(c) for c in classes]
        if len(names) != n:
            raise CheckpointError(f"{path}: its classifier has {n} classes, but {len(names)} class names were "
                                  f"given (--classes)")
        return names
    if require:
        raise CheckpointError(f"{path}: {fmt} checkpoints carry no class names; pass --classes FILE (one name "
                              f"per line, in the classifier's order)")
    warnings.append(f"{path}: {fmt} checkpoints carry no class names; classes are shown as class_0..class_{n - 1} "
                    f"(--classes FILE names them)")
    log.warning("%s", warnings[-1])
    return [f"class_{i}" for i in range(n)]


def load_reference_model(path: str, name: str, fmt: str, state: dict[str, Tensor],
                         classes: Sequence[str] | None = None, require_classes: bool = False
                         ) -> tuple[nn.Module, list[str], dict[str, Any], list[str]]:
    """Build `name` as the reference does, load the checkpoint at `path` strictly; eval mode, on the CPU.

    `fmt` and `state` come from `read_reference(path)`. Returns ``(model, classes, preprocess, warnings)``.
    Raises `CheckpointError` naming the file: a network that cannot hold the checkpoint (another depth, width,
    family or a model without the reference layout), class names of another count, none when `require_classes`.
    """
    n = _num_classes(path, fmt, state)
    if classes is not None and len(classes) != n or classes is None and require_classes:
        _class_names(path, fmt, n, classes, require_classes, [])  # raises before anything is built
    layout = reference_keys.reference_layout(fmt)
    if name in network.list_models():  # MTNet is the SRTG code's own design: it has no ResNet layout to choose
        layout = {k: v for k, v in layout.items() if k in network.model_kwargs(name)}
    try:
        model = network.build_model(name, n, **layout)
    except ValueError as e:  # unknown name
        raise CheckpointError(f"{path}: {fmt} checkpoint into {name}: {e} ({_fit_hint(fmt, state)})") from None
    try:
        load_weights(model, path, strict=True)
    except CheckpointError as e:
        raise CheckpointError(f"{e} ({_fit_hint(fmt, state)})") from None
    model.eval()
    warnings: list[str] = []
    names = _class_names(path, fmt, n, classes, require_classes, warnings)
    log.info("%s: %s checkpoint loaded strictly into %s (%d classes)", path, fmt, name, n)
    return model, names, dict(REFERENCE_PREPROCESS[fmt]), warnings
