"""Export a model to ONNX with a dynamic batch axis, check it against PyTorch with onnxruntime, time both.

    python -m tools.export_onnx --checkpoint runs/r3d_18_best.pth --out r3d_18.onnx --bench
    python -m tools.export_onnx --network r2plus1d_18 --num-classes 101 --out r2plus1d_18.onnx   # untrained
    python -m tools.export_onnx --weights r2plus1d_18-91a641e6.pth --network r2plus1d_18 --out r2plus1d_18.onnx
    python -m tools.export_onnx --all --out-dir onnx_check --width-mult 0.25 --clip-length 16 --crop-size 64

The graph takes ``clip`` ``(batch, 3, T, H, W)`` float32, normalised as in the checkpoint's ``preprocess`` (stored
in the ONNX metadata with the class names, see `tools.inference.onnx_metadata`), and returns ``logits``
``(batch, num_classes)``; ``tools.predict --onnx`` runs it from that metadata alone. T and the crop size
are fixed at export time. Parity: onnxruntime's outputs on random input (batch 1 and 3, so the dynamic axis is
exercised) must match PyTorch's within ``--rtol`` (1e-4) of the largest PyTorch logit. ``--all`` tries every
registered model and prints which exported and, for any that did not, why.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from train.console import add_process_options, die, start_process

log = logging.getLogger(__name__)

OPSET = 18
INPUT_NAME, OUTPUT_NAME = "clip", "logits"


class ExportError(RuntimeError):
    """A model that could not be exported or whose ONNX outputs do not match PyTorch (message says why)."""


@dataclass
class ExportResult:
    """What `export_and_check` did: file, size, exporter used, parity error and (optional) speeds."""

    path: str
    size_bytes: int
    exporter: str
    rel_error: float
    torch_clips_per_s: float | None = None
    ort_clips_per_s: float | None = None


def export_onnx(model: nn.Module, out: str | os.PathLike, input_shape: Sequence[int], opset: int = OPSET,
                metadata: dict[str, str] | None = None) -> str:
    """Write `model` (eval mode, CPU) to one self-contained ONNX file with a dynamic batch axis.

    `input_shape` is ``(3, T, H, W)``. The torch.export-based exporter is tried first, then the TorchScript one;
    if both fail, `ExportError` carries both reasons. Returns the exporter used (``"dynamo"`` or ``"torchscript"``).
    """
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx"):  # per-pass INFO lines drown the tool's output
        logging.getLogger(noisy).setLevel(logging.WARNING)
    model = model.eval().cpu()
    example = torch.randn(2, *input_shape)
    out = str(out)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for exporter in ("dynamo", "torchscript"):
        try:
            # The exporter prints progress lines to stdout; the tool's own output is the summary.
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                if exporter == "dynamo":
                    batch = torch.export.Dim("batch", min=1, max=4096)
                    torch.onnx.export(model, (example,), out, dynamo=True, external_data=False, opset_version=opset,
                                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                      dynamic_shapes=({0: batch},), verbose=False)
                else:
                    torch.onnx.export(model, (example,), out, dynamo=False, opset_version=opset,
                                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                      dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        except Exception as e:  # exporters raise many types; keep each reason for the message
            errors.append(f"{exporter}: {type(e).__name__}: {_first_line(e)}")
            log.debug("%s exporter failed", exporter, exc_info=True)
            continue
        _add_metadata(out, metadata or {})
        if errors:
            log.info("exported with the %s exporter (%s)", exporter, errors[0])
        return exporter
    raise ExportError("; ".join(errors))


def _add_metadata(path: str, metadata: dict[str, str]) -> None:
    import onnx

    if not metadata:
        return
    proto = onnx.load(path)
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, path)


def _session(path: str, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


@torch.inference_mode()
def check_parity(model: nn.Module, path: str, input_shape: Sequence[int], batches: Sequence[int] = (1, 3),
                 rtol: float = 1e-4, seed: int = 0) -> float:
    """Largest ``max|onnx - torch| / max|torch|`` over random inputs of each batch size; `ExportError` above `rtol`."""
    session = _session(path)
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for b in batches:
        x = torch.randn(b, *input_shape, generator=gen)
        ref = model.eval().cpu()(x).numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        if got.shape != ref.shape:
            raise ExportError(f"ONNX output shape {got.shape} != PyTorch {ref.shape} at batch {b}")
        err = float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-12))
        worst = max(worst, err)
    if worst > rtol:
        raise ExportError(f"ONNX outputs differ from PyTorch: relative error {worst:.2e} > {rtol:.0e}")
    return worst


@torch.inference_mode()
def benchmark(model: nn.Module, path: str, input_shape: Sequence[int], batch: int = 1, seconds: float = 3.0,
              threads: int | None = None) -> tuple[float, float]:
    """CPU clips/s of PyTorch and of onnxruntime on the same input, same thread count (one warm-up run each)."""
    threads = threads or torch.get_num_threads()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(batch, *input_shape)
        session = _session(path, threads)
        feed = {INPUT_NAME: x.numpy()}
        model = model.eval().cpu()
        torch_rate = _rate(lambda: model(x), batch, seconds)
        ort_rate = _rate(lambda: session.run([OUTPUT_NAME], feed), batch, seconds)
    finally:
        torch.set_num_threads(previous)
    return torch_rate, ort_rate


def _rate(fn, batch: int, seconds: float) -> float:
    fn()  # warm-up: allocations, oneDNN/ORT kernel selection
    runs, tic = 0, time.perf_counter()
    while True:
        fn()
        runs += 1
        elapsed = time.perf_counter() - tic
        if elapsed >= seconds or runs >= 1000:
            return runs * batch / elapsed


def export_and_check(model: nn.Module, out: str | os.PathLike, input_shape: Sequence[int],
                     metadata: dict[str, str] | None = None, rtol: float = 1e-4, bench: bool = False,
                     bench_batch: int = 1, bench_seconds: float = 3.0, threads: int | None = None,
                     opset: int = OPSET) -> ExportResult:
    """Export, check parity with onnxruntime and optionally time both; raises `ExportError` on any failure."""
    exporter = export_onnx(model, out, input_shape, opset=opset, metadata=metadata)
    err = check_parity(model, str(out), input_shape, rtol=rtol)
    result = ExportResult(str(out), os.path.getsize(out), exporter, err)
    if bench:
        result.torch_clips_per_s, result.ort_clips_per_s = benchmark(
            model, str(out), input_shape, batch=bench_batch, seconds=bench_seconds, threads=threads)
    return result


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0][:300] if lines else type(e).__name__


def _build_untrained(name: str, num_classes: int, width_mult: float | None, clip_length: int) -> nn.Module:
    from network import build_model, model_kwargs

    kwargs: dict = {}
    if "frames" in model_kwargs(name):
        kwargs["frames"] = clip_length  # R2D is built for one clip length: the exported one
    if width_mult is not None:
        if "width_mult" not in model_kwargs(name):
            log.warning("%s has no width_mult; exporting it at full width", name)
        else:
            kwargs["width_mult"] = width_mult
    return build_model(name, num_classes, **kwargs)


def export_all(out_dir: str | os.PathLike, clip_length: int, crop_size: int, num_classes: int = 10,
               width_mult: float | None = 0.25, bench: bool = False, rtol: float = 1e-4,
               names: Sequence[str] | None = None) -> list[dict]:
    """Try every registered model (or `names`): one row per model with ``ok`` and either the result or why not."""
    from network import list_models

    rows = []
    for name in names or list_models():
        row: dict = {"network": name}
        try:
            model = _build_untrained(name, num_classes, width_mult, clip_length)
            shape = (3, clip_length, crop_size, crop_size)
            res = export_and_check(model, Path(out_dir) / f"{name}.onnx", shape, rtol=rtol, bench=bench,
                                   metadata={"network": name})
            row.update(ok=True, **res.__dict__)
        except (ExportError, ValueError, RuntimeError, TypeError) as e:
            row.update(ok=False, reason=_first_line(e))
        log.info("%s: %s", name, "ok" if row["ok"] else f"FAILED: {row['reason']}")
        rows.append(row)
    return rows


def format_rows(rows: Sequence[dict]) -> str:
    """The `export_all` table as text."""
    lines = [f"{'network':<20} {'status':<7} {'size MB':>8} {'rel err':>9} {'torch clip/s':>13} "
             f"{'ORT clip/s':>11}  exporter / reason"]
    for r in rows:
        if r["ok"]:
            speed = (f"{r['torch_clips_per_s']:>13.2f} {r['ort_clips_per_s']:>11.2f}"
                     if r.get("ort_clips_per_s") else f"{'-':>13} {'-':>11}")
            lines.append(f"{r['network']:<20} {'ok':<7} {r['size_bytes'] / 1e6:>8.2f} {r['rel_error']:>9.1e} "
                         f"{speed}  {r['exporter']}")
        else:
            lines.append(f"{r['network']:<20} {'FAILED':<7} {'-':>8} {'-':>9} {'-':>13} {'-':>11}  {r['reason']}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.export_onnx", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="trained checkpoint (*.pth)")
    src.add_argument("--weights", help="weights file of another code base: torchvision's Kinetics-400 "
                                       "(r3d_18 / mc3_18 / r2plus1d_18), or a checkpoint of the SRTG or "
                                       "MiCT-Net-PyTorch code (with --network)")
    src.add_argument("--all", action="store_true", help="try every registered model (untrained) into --out-dir")
    p.add_argument("--network", help="registered model name: exported untrained (needs --num-classes), or the "
                                     "architecture of --weights")
    p.add_argument("--classes", default=None,
                   help="class names (one per line) stored in the ONNX file, for --weights that carry none")
    p.add_argument("--out", help="ONNX file to write (--checkpoint / --network)")
    p.add_argument("--out-dir", default="onnx_models", help="folder for --all")
    p.add_argument("--num-classes", type=int, default=None, help="classes of an untrained --network export")
    p.add_argument("--width-mult", type=float, default=None, help="channel width of an untrained export")
    p.add_argument("--clip-length", type=int, default=None,
                   help="frames per clip (default: the checkpoint's, else 16)")
    p.add_argument("--crop-size", type=int, default=None, help="crop size (default: the checkpoint's, else 112)")
    p.add_argument("--opset", type=int, default=OPSET)
    p.add_argument("--rtol", type=float, default=1e-4, help="allowed relative difference to PyTorch")
    p.add_argument("--bench", action="store_true", help="time PyTorch and onnxruntime on the CPU")
    p.add_argument("--bench-batch", type=int, default=1)
    p.add_argument("--bench-seconds", type=float, default=3.0)
    add_process_options(p, threads_help="CPU threads for both runtimes")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 1 a model did not export; bad input exits 2)."""
    args = parse_args(argv)
    start_process(args)
    if not (args.checkpoint or args.weights or args.all or args.network):
        die("give one of --checkpoint, --weights, --network or --all")
    if args.network and (args.checkpoint or args.all):
        die("--network goes with --weights or alone (untrained export), not with --checkpoint or --all")
    if args.all:
        rows = export_all(args.out_dir, args.clip_length or 16, args.crop_size or 112,
                          width_mult=args.width_mult, bench=args.bench, rtol=args.rtol)
        print(json.dumps(rows, indent=2) if args.json else format_rows(rows))
        return 0 if all(r["ok"] for r in rows) else 1
    if not args.out:
        die("--out MODEL.onnx is required with --checkpoint or --network")

    if args.checkpoint or args.weights:
        from tools.inference.onnx_metadata import model_metadata
        from train.inference import CheckpointError, load_model

        source = args.checkpoint or args.weights
        from data.labels import read_classes

        try:
            names = read_classes(args.classes) if args.classes else None
            loaded = load_model(source, "cpu", network=args.network if args.weights else None, classes=names)
        except (CheckpointError, ValueError) as e:
            die(str(e))
        model, pre = loaded.model, loaded.preprocess
        clip_length = args.clip_length or int(pre["clip_length"])
        crop = args.crop_size or int(pre["crop_size"])
        metadata = model_metadata(loaded.network, loaded.classes, pre, clip_length, crop, INPUT_NAME,
                                  source=os.path.basename(source))
    else:
        if not args.num_classes or args.num_classes < 1:
            die("--network needs --num-classes N (N >= 1)")
        try:
            clip_length, crop = args.clip_length or 16, args.crop_size or 112
            model = _build_untrained(args.network, args.num_classes, args.width_mult, clip_length)
        except (ValueError, TypeError) as e:
            die(str(e))
        metadata = {"network": args.network, "untrained": "true"}
    metadata.setdefault("input", f"{INPUT_NAME}: (batch, 3, {clip_length}, {crop}, {crop}) float32, normalised RGB")
    shape = (3, clip_length, crop, crop)
    name = metadata["network"]
    try:
        res = export_and_check(model, args.out, shape, metadata=metadata, rtol=args.rtol, bench=args.bench,
                               bench_batch=args.bench_batch, bench_seconds=args.bench_seconds,
                               threads=args.threads, opset=args.opset)
    except ExportError as e:
        die(f"{name} cannot be exported to ONNX: {e}", code=1)
    except ValueError as e:  # the model's own input check (e.g. too few frames)
        die(str(e))
    from tools.inference.onnx_metadata import file_summary

    summary = file_summary(res.path)
    row = {"network": name, "ok": True, "input_shape": ["batch", *shape], **res.__dict__,
           "opset": summary["opset"], "ir_version": summary["ir_version"], "metadata_keys": sorted(metadata)}
    if args.json:
        print(json.dumps(row, indent=2))
    else:
        print(f"{res.path}: {res.size_bytes:,} bytes ({res.size_bytes / 1e6:.2f} MB), {name}, input (batch, "
              f"{', '.join(map(str, shape))}), {res.exporter} exporter, opset {summary['opset']}, "
              f"IR version {summary['ir_version']}")
        print(f"metadata: {', '.join(sorted(metadata))}")
        print(f"parity with PyTorch (batch 1 and 3): max relative error {res.rel_error:.2e} (limit {args.rtol:.0e})")
        if res.ort_clips_per_s:
            print(f"CPU speed, batch {args.bench_batch}, {args.threads or torch.get_num_threads()} thread(s): "
                  f"PyTorch {res.torch_clips_per_s:.2f} clips/s, onnxruntime {res.ort_clips_per_s:.2f} clips/s "
                  f"({res.ort_clips_per_s / res.torch_clips_per_s:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
