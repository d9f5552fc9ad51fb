"""An exported ONNX file as a model for ``tools.predict --onnx``: onnxruntime runs it, its metadata says the rest.

    loaded = load_onnx_model("model.onnx")      # LoadedModel: classes and preprocess from metadata_props
    predictor = Predictor(loaded)               # tools.predict's predictor, unchanged

No PyTorch checkpoint is needed: the class names and the preprocessing (clip length, frame interval, resize,
crop, mean, std) come from the file (`tools.inference.onnx_metadata`). The graph's clip length and crop size are fixed.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import torch
from torch import nn

from tools.inference.onnx_metadata import read_model_metadata
from train.inference import LoadedModel

__all__ = ["OnnxModule", "load_onnx_model"]

log = logging.getLogger(__name__)


class OnnxModule(nn.Module):
    """Calls an onnxruntime session on CPU tensors: ``(N, 3, T, H, W)`` float32 -> ``(N, C)`` logits."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name, self.output_name = inp.name, self.session.get_outputs()[0].name
        self.input_shape = tuple(inp.shape)  # ('batch' or N, 3, T, H, W)
        self.min_frames = int(self.input_shape[2]) if isinstance(self.input_shape[2], int) else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = self.input_shape[1:]
        got = tuple(x.shape[1:])
        if any(isinstance(e, int) and e != g for e, g in zip(expected, got)):
            raise ValueError(f"the ONNX graph takes clips {expected}, got {got}")
        feed = {self.input_name: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)}
        return torch.from_numpy(self.session.run([self.output_name], feed)[0])


def load_onnx_model(path: str | os.PathLike, threads: int | None = None) -> LoadedModel:
    """The ONNX file at `path` with its class names and preprocessing; ``ValueError`` (one line) if unusable."""
    info = read_model_metadata(path)
    try:
        module = OnnxModule(path, threads)
    except Exception as e:  # onnxruntime's InvalidGraph / Fail / NoSuchFile
        raise ValueError(f"{path}: onnxruntime cannot load it ({str(e).strip().splitlines()[0][:200]})") from None
    out_shape = module.session.get_outputs()[0].shape
    if isinstance(out_shape[-1], int) and out_shape[-1] != len(info.classes):
        raise ValueError(f"{path}: the graph gives {out_shape[-1]} outputs but the metadata names "
                         f"{len(info.classes)} classes")
    log.info("%s: %s via onnxruntime, input %s", path, info.network, module.input_shape)
    return LoadedModel(module, info.network, info.classes, info.preprocess, torch.device("cpu"))
