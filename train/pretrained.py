"""torchvision's Kinetics-400 video models (R3D-18, MC3-18, R(2+1)D-18) from their published weights files.

Our `r3d_18`, `mc3_18` and `r2plus1d_18` share torchvision's module tree, so a torchvision state_dict loads into
them strictly. The class names and the preprocessing come from the installed torchvision's weight metadata
(``torchvision.models.video.R2Plus1D_18_Weights.KINETICS400_V1``), so nothing is downloaded, ever: the user
fetches the ``.pth`` file once from the URL that metadata names.

    model, info = load_torchvision_video("r2plus1d_18-91a641e6.pth", "r2plus1d_18")
    info.classes[:2]         # ['abseiling', 'air drumming']
    info.preprocess          # clip_length 16, resize 128x171, crop 112, Kinetics mean/std, 15 fps
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

import network
from network.weights import CheckpointError, read_state_dict

__all__ = ["TORCHVISION_VIDEO_MODELS", "TorchvisionVideoInfo", "detect_torchvision_network", "is_torchvision_state",
           "load_torchvision_video", "missing_weights_message", "torchvision_info"]

log = logging.getLogger(__name__)

# Our registered name -> the torchvision weights enum that describes its Kinetics-400 checkpoint.
TORCHVISION_VIDEO_MODELS = {"r3d_18": "R3D_18_Weights", "mc3_18": "MC3_18_Weights",
                            "r2plus1d_18": "R2Plus1D_18_Weights"}
# torchvision evaluates its video models on videos resampled to 15 fps (its weights' docs: frame_rate=15);
# frame stores of 30 fps video reach that with every second frame.
FRAME_RATE = 15
FRAME_INTERVAL = 2


@dataclass(frozen=True)
class TorchvisionVideoInfo:
    """What torchvision publishes about one Kinetics-400 checkpoint: where, classes, preprocessing, accuracy."""

    network: str
    url: str
    classes: list[str] = field(repr=False)
    preprocess: dict
    metrics: dict

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def torchvision_info(name: str) -> TorchvisionVideoInfo:
    """Metadata of torchvision's Kinetics-400 weights for our network `name` (offline, from torchvision itself)."""
    if name not in TORCHVISION_VIDEO_MODELS:
        raise ValueError(f"torchvision publishes Kinetics-400 weights for {', '.join(TORCHVISION_VIDEO_MODELS)}, "
                         f"not {name!r}")
    from torchvision.models import video

    weights = getattr(video, TORCHVISION_VIDEO_MODELS[name]).KINETICS400_V1
    tf = weights.transforms()
    crop, resize = int(tf.crop_size[0]), [int(v) for v in tf.resize_size]
    preprocess = {"clip_length": 16, "crop_size": crop, "resize_short": min(resize), "resize": resize,
                  "frame_interval": FRAME_INTERVAL, "frame_rate": FRAME_RATE, "mean": [float(v) for v in tf.mean],
                  "std": [float(v) for v in tf.std]}
    return TorchvisionVideoInfo(name, weights.url, list(weights.meta["categories"]), preprocess,
                                dict(weights.meta.get("_metrics", {}).get("Kinetics-400", {})))


def missing_weights_message(path: str | os.PathLike, name: str | None) -> str:
    """One line: the file is missing, and where torchvision publishes the weights of `name` (or of all three)."""
    names = [name] if name in TORCHVISION_VIDEO_MODELS else list(TORCHVISION_VIDEO_MODELS)
    where = ", ".join(f"{n}: {torchvision_info(n).url}" for n in names)
    return (f"{path}: no such weights file; torchvision publishes its Kinetics-400 weights at {where} "
            f"(download the file once; it is never fetched automatically)")


@functools.cache
def _expected_shapes(name: str, num_classes: int = 400) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = network.build_model(name, num_classes)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _fit(state: dict[str, Tensor], expected: dict[str, tuple[int, ...]]) -> tuple[int, list[str]]:
    """Tensors of `state` that fit `expected` by name and shape (classifier excluded), and the first misfits."""
    good, bad = 0, []
    for key, shape in expected.items():
        if key.startswith("fc."):
            continue
        if key not in state:
            bad.append(f"{key} missing")
        elif tuple(state[key].shape) != shape:
            bad.append(f"{key} is {tuple(state[key].shape)}, expected {shape}")
        else:
            good += 1
    return good, bad


def detect_torchvision_network(state: dict[str, Tensor]) -> str | None:
    """Which of r3d_18 / mc3_18 / r2plus1d_18 the backbone tensors of `state` fit exactly, if any."""
    for name in TORCHVISION_VIDEO_MODELS:
        if not _fit(state, _expected_shapes(name))[1] and len(state) == len(_expected_shapes(name)):
            return name
    return None


def is_torchvision_state(path: str | os.PathLike) -> str | None:
    """The network a bare state_dict file is the torchvision checkpoint of, or None (any other file)."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable files are for the regular checkpoint loader to explain
        return None
    if not isinstance(raw, dict) or "format" in raw or not all(isinstance(v, Tensor) for v in raw.values()):
        return None
    return detect_torchvision_network(read_state_dict(raw))


def load_torchvision_video(path: str | os.PathLike, name: str | None = None,
                           device: str | torch.device = "cpu") -> tuple[nn.Module, TorchvisionVideoInfo]:
    """Build `name` (detected from the tensors when None) with torchvision's Kinetics-400 weights from `path`.

    Raises `CheckpointError` with one line naming the file: missing (and where to get it), unreadable, weights of
    another architecture (naming the one it is, if known) or of another class count than Kinetics-400's 400.
    """
    path = str(path)
    if name is not None and name not in TORCHVISION_VIDEO_MODELS:
        raise CheckpointError(f"{path}: torchvision publishes Kinetics-400 weights for "
                              f"{', '.join(TORCHVISION_VIDEO_MODELS)}, not {name!r} (a model trained here loads "
                              f"from its checkpoint with --checkpoint)")
    if not os.path.isfile(path):
        raise CheckpointError(missing_weights_message(path, name))
    state = read_state_dict(path)
    found = detect_torchvision_network(state)
    if name is None:
        if found is None:
            raise CheckpointError(f"{path}: not the weights of a torchvision video model "
                                  f"({', '.join(TORCHVISION_VIDEO_MODELS)}); pass --network NAME to see what differs")
        name = found
    info = torchvision_info(name)
    expected = _expected_shapes(name)
    good, bad = _fit(state, expected)
    if bad:
        what = f"they are {found} weights" if found else f"{good}/{len(expected) - 2} backbone tensors fit"
        raise CheckpointError(f"{path}: not {name} weights ({what}; e.g. {bad[0]}); expected torchvision's "
                              f"{info.filename} layout")
    fc = state.get("fc.weight")
    if fc is None or fc.dim() != 2 or fc.shape[0] != len(info.classes) or fc.shape[1] != expected["fc.weight"][1]:
        shape = None if fc is None else tuple(fc.shape)
        raise CheckpointError(f"{path}: {name} classifier fc.weight is {shape}, expected {expected['fc.weight']} "
                              f"(the {len(info.classes)} Kinetics-400 classes); a fine-tuned model is loaded "
                              f"from its training checkpoint with --checkpoint")
    model = network.build_model(name, len(info.classes))
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CheckpointError(f"{path}: tensors {', '.join(extra[:3])} are not part of {name}")
    model.load_state_dict(state, strict=True)
    model.eval().to(device)
    log.info("%s: torchvision %s Kinetics-400 weights (%d classes; published acc@1 %s)", path, name,
             len(info.classes), info.metrics.get("acc@1", "?"))
    return model, info
