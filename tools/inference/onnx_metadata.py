"""What an exported ONNX file carries besides the graph: class names and preprocessing, in ``metadata_props``.

Every value is a string (ONNX's rule); lists and dicts are JSON. Keys written by `model_metadata`:

- ``videotrain_format``: ``onnx-1``, the marker `read_model_metadata` looks for;
- ``network``, ``num_classes``, ``classes`` (JSON list of names, index order);
- ``clip_length``, ``frame_interval``, ``crop_size``, ``resize_short``, ``mean``, ``std`` (JSON lists, RGB), ``input`` (a one-line description) and the
  whole ``preprocess`` dict as JSON, from which a predictor rebuilds the validation transform; for torchvision's
  models also ``resize`` (``[H, W]``, a fixed-size resize before the crop) and ``frame_rate`` (fps clips assume).
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["FORMAT", "OnnxInfo", "file_summary", "model_metadata", "read_model_metadata"]

FORMAT = "onnx-1"
_REQUIRED = ("clip_length", "crop_size", "frame_interval", "mean", "std")


@dataclass(frozen=True)
class OnnxInfo:
    """What `read_model_metadata` found: enough to preprocess clips and name the outputs."""

    network: str
    classes: list[str]
    preprocess: dict


def model_metadata(network: str, classes: Sequence[str] | None, preprocess: dict, clip_length: int,
                   crop_size: int, input_name: str = "clip", source: str | None = None) -> dict[str, str]:
    """The ``metadata_props`` of an export; `clip_length` / `crop_size` are the graph's (they override
    `preprocess`, since the export may fix other ones than training used)."""
    pre = dict(preprocess)
    if pre.get("crop_size") and int(pre["crop_size"]) != int(crop_size):
        # another crop than training's keeps the field of view: the resize scales with it
        ratio = int(crop_size) / int(pre["crop_size"])
        if pre.get("resize_short"):
            pre["resize_short"] = max(int(crop_size), round(pre["resize_short"] * ratio))
        if pre.get("resize"):
            pre["resize"] = [max(int(crop_size), round(v * ratio)) for v in pre["resize"]]
    pre.update(clip_length=int(clip_length), crop_size=int(crop_size))
    meta = {
        "videotrain_format": FORMAT,
        "network": network,
        "clip_length": str(pre["clip_length"]),
        "frame_interval": json.dumps(pre.get("frame_interval")),
        "crop_size": str(pre["crop_size"]),
        "resize_short": json.dumps(pre.get("resize_short")),
        "mean": json.dumps(list(pre["mean"])),
        "std": json.dumps(list(pre["std"])),
        "preprocess": json.dumps(pre),
        "input": f"{input_name}: (batch, 3, {clip_length}, {crop_size}, {crop_size}) float32 "
                 f"{str(pre.get('channel_order') or 'rgb').upper()}, (x / 255 - mean) / std",
    }
    for key in ("resize", "frame_rate"):  # torchvision's models only
        if pre.get(key):
            meta[key] = json.dumps(pre[key])
    if classes is not None:
        meta["num_classes"] = str(len(classes))
        meta["classes"] = json.dumps(list(classes))
    if source:
        meta["source_checkpoint"] = source
    return meta


def read_model_metadata(path: str | os.PathLike) -> OnnxInfo:
    """Class names and preprocessing of an ONNX file written by ``tools.export_onnx``.

    Raises ``ValueError`` (one line naming the file) for a missing/unreadable file or one without our metadata.
    """
    import onnx

    path = str(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and others for files that are not ONNX
        raise ValueError(f"{path}: not a readable ONNX file ({type(e).__name__})") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    hint = "export it with python -m tools.export_onnx --checkpoint/--weights to get class names and preprocessing"
    if meta.get("videotrain_format") != FORMAT:
        raise ValueError(f"{path}: the ONNX file has no videotrain metadata ({hint})")
    if "classes" not in meta:
        raise ValueError(f"{path}: the ONNX file has no class names (exported untrained from --network; {hint})")
    try:
        classes = [str(c) for c in json.loads(meta["classes"])]
        pre = json.loads(meta["preprocess"])
    except (KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: corrupt videotrain metadata ({e})") from None
    lacking = [k for k in _REQUIRED if pre.get(k) is None]
    if lacking or not classes:
        raise ValueError(f"{path}: videotrain metadata lacks {', '.join(lacking) or 'classes'}")
    return OnnxInfo(meta.get("network", "onnx"), classes, pre)


def file_summary(path: str | os.PathLike) -> dict:
    """Opset (default domain), IR version, producer and size in bytes of an ONNX file."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"opset": opset, "ir_version": int(proto.ir_version),
            "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
            "size_bytes": os.path.getsize(path)}
