"""Video classification networks and their registry.

`build_model(name, num_classes, **kw)`, `list_models()`, `register_model`; weights from local files with
`load_weights` / `inflate_2d_resnet`. Every model maps `(N, 3, T, H, W)` floats to `(N, num_classes)` logits and
has `forward_features`, `forward_head`, `num_features`, `reset_classifier`, `check_input` and `min_frames`.
"""
from . import mict, mtnet, r2d, resnet3d  # noqa: F401  (import registers the models)
from .activation_checkpointing import set_activation_checkpointing, supports_activation_checkpointing
from .base import VideoClassifier, count_parameters, to_channels_last
from .registry import build_model, list_models, model_defaults, model_kwargs, register_model
from .srtg import SqueezeRecursion
from .weights import CheckpointError, LoadReport, inflate_2d_resnet, load_weights, read_state_dict

__all__ = [
    "build_model", "list_models", "model_defaults", "model_kwargs", "register_model", "VideoClassifier",
    "count_parameters", "to_channels_last", "set_activation_checkpointing", "supports_activation_checkpointing",
    "SqueezeRecursion", "CheckpointError", "LoadReport", "inflate_2d_resnet", "load_weights", "read_state_dict",
]
