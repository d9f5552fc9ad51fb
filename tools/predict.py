"""Predict actions in raw videos (or converted ``frames.db`` folders) with a trained checkpoint.

    python -m tools.predict --checkpoint runs/mict_resnet18_best.pth clip1.mp4 clip2.avi
    python -m tools.predict --checkpoint CKPT --timeline --window 32 --stride 16 --out results/preds.json video.mp4
    python -m tools.predict --weights r2plus1d_18-91a641e6.pth --network r2plus1d_18 video.mp4   # torchvision K400
    python -m tools.predict --weights model_best.pth.tar --network mict_resnet18 --classes classes.txt video.mp4
    python -m tools.predict --onnx model.onnx video.mp4          # onnxruntime, preprocessing from the file
    python -m tools.predict --checkpoint CKPT --frames 8 video.mp4   # fewer frames per clip: faster

Video level: the softmax of ``--clips`` evenly spaced clips (the validation sampler) is averaged and the top-k
classes printed. ``--timeline`` also slides a window over the video and gives the top class of every window with
its time range, as a table and as a PNG strip of thumbnails. Each video is decoded once for both. Preprocessing is
the validation transform with the clip length, frame interval, resize and crop stored in the checkpoint (for an
SRTG or MiCT-Net-PyTorch checkpoint, the reference's; ``--clip-length``, ``--frame-interval`` and ``--crop-size``
override them).
``--frames N`` samples N frames per clip over the same time span (the interval grows), trading accuracy for
speed; a model with a ``frame_rate`` (torchvision's, 15 fps) picks the interval from each video's fps.

From Python (the demo uses this)::

    from tools.predict import predict_videos
    results = predict_videos("runs/x_best.pth", ["a.mp4", "b.mp4"], topk=5, clips=5, timeline=True, out="preds")
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from data.atomic import atomic_write_text
from data.labels import read_classes
from data.sampling import UniformClipSampler, clip_span
from data.views import CROP_CHOICES
from tools.inference.timeline_plot import save_timeline_png, thumbnail, timeline_png_path
from tools.inference.video_source import VideoSource, VideoSourceError, assemble_clips, is_frame_store, open_source
from train.console import add_process_options, die, start_process
from train.inference import (
    CLASSES_HELP,
    NETWORK_HELP,
    WEIGHTS_HELP,
    LoadedModel,
    add_device_argument,
    add_preprocess_arguments,
    eval_interval,
    load_model,
    override_preprocess,
)
from train.multiview import forward_views, view_transform
from train.size_checks import check_preprocess_fits

log = logging.getLogger(__name__)

DEFAULT_CLIPS = 5


def clip_indices(n_frames: int, clip_length: int, frame_interval: int, clips: int) -> list[np.ndarray]:
    """Frame indices of ``clips`` evenly spaced clips: exactly the validation sampler's clips."""
    sampler = UniformClipSampler(clip_length, frame_interval, clips)
    return [sampler(n_frames, k) for k in range(clips)]


def clip_interval(clip_length: int, frame_interval: int, frames: int) -> int:
    """Interval that spreads `frames` frames over the span of `clip_length` frames every `frame_interval`.

    The nearest interval to ``clip_length * frame_interval / frames``, but never one whose clip reaches past that
    window (a video that holds one model clip then holds the thinned clip too, without looping).
    """
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    window = clip_length * frame_interval
    interval = round(window / frames)
    if frames > 1:
        interval = min(interval, (window - 1) // (frames - 1))
    return max(1, interval)


def window_starts(n_frames: int, window: int, stride: int) -> list[int]:
    """First frames of the sliding windows: ``0, stride, 2 * stride, ...`` while a whole window fits, plus one
    window ending on the last frame if the strided ones stop short of it (so the whole video is covered).

    A video shorter than the window gets one window at 0 (its frames loop).
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1 frame, got {window} and {stride}")
    if n_frames <= window:
        return [0]
    starts = list(range(0, n_frames - window + 1, stride))
    if starts[-1] + window < n_frames:
        starts.append(n_frames - window)
    return starts


def window_indices(start: int, window: int, clip_length: int, n_frames: int) -> np.ndarray:
    """``clip_length`` frames evenly spread over ``[start, start + window)``, looped where the video is shorter.

    With ``window = clip_length * frame_interval`` this is exactly the training sampling interval.
    """
    offsets = (np.arange(clip_length, dtype=np.int64) * window) // clip_length
    return (start + offsets) % n_frames


class Predictor:
    """A loaded model plus its validation transform; predicts on one opened `VideoSource` at a time."""

    def __init__(self, loaded: LoadedModel, batch_size: int = 8, crops: int = 1, frames: int | None = None) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.classes = loaded.classes
        self.device = loaded.device
        pre = loaded.preprocess
        self.clip_length = int(pre["clip_length"])
        self.frame_interval = eval_interval(pre["frame_interval"])
        # The span (frames of video) one clip covers; --frames keeps it and spreads fewer frames over it.
        self._span_length, self._frame_rate = self.clip_length, pre.get("frame_rate")
        if frames is not None:
            min_frames = int(getattr(self.model, "min_frames", 1))
            if frames < min_frames:
                raise ValueError(f"--frames {frames}: {loaded.network} needs at least {min_frames} frames per clip")
            self.frame_interval = clip_interval(self.clip_length, self.frame_interval, frames)
            self.clip_length = int(frames)
        self.crops = int(crops)
        self.transform = view_transform(pre, self.crops)  # crops > 1: every clip is seen as `crops` views
        self.batch_size = max(1, int(batch_size))
        self._rng = np.random.default_rng(0)  # the val transform is deterministic; the API wants a generator
        # Set for a --crop-size given by the user: frames upscaled beyond the trainer's limit are refused.
        self.limit_upscale = False

    @classmethod
    def from_checkpoint(cls, checkpoint_path: str | os.PathLike, device: str | None = "cpu",
                        batch_size: int = 8, crops: int = 1, network: str | None = None,
                        frames: int | None = None, classes: Sequence[str] | None = None) -> Predictor:
        """Load `checkpoint_path` (see `load_model`; `network`: torchvision weights or a reference checkpoint of
        that model; `classes`: names for a file that carries none) and wrap it."""
        return cls(load_model(checkpoint_path, device, network=network, classes=classes), batch_size=batch_size,
                   crops=crops, frames=frames)

    def interval_for(self, source: VideoSource) -> int:
        """Frame interval on `source`: the model's, or from the video's fps for a model with a frame rate."""
        if not self._frame_rate or not source.fps or source.fps <= 0:
            return self.frame_interval
        base = max(1, round(source.fps / float(self._frame_rate)))
        return clip_interval(self._span_length, base, self.clip_length)

    @property
    def default_window(self) -> int:
        """Window length in frames when none is given: the frames one training clip stands for."""
        return self.clip_length * self.frame_interval

    @torch.inference_mode()
    def _probs(self, batch: list[torch.Tensor]) -> np.ndarray:
        x = torch.stack(batch).to(self.device, non_blocking=True)
        return forward_views(lambda v: torch.softmax(self.model(v).float(), dim=1), x).cpu().numpy()

    def run_clips(self, source: VideoSource, clips: Sequence[np.ndarray],
                  thumbs_for: set[int] = frozenset()) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Softmax for each index array in `clips` ``(len(clips), num_classes)``, decoding the source once.

        Also returns a small RGB thumbnail of the middle frame of each clip number in `thumbs_for`.
        """
        probs = np.zeros((len(clips), len(self.classes)), dtype=np.float32)
        thumbs: dict[int, np.ndarray] = {}
        pending: list[tuple[int, torch.Tensor]] = []

        def flush() -> None:
            out = self._probs([t for _, t in pending])
            for (k, _), p in zip(pending, out):
                probs[k] = p
            pending.clear()

        for k, frames in assemble_clips(source, clips):
            if k in thumbs_for:
                thumbs[k] = thumbnail(frames[len(frames) // 2])
            pending.append((k, self.transform(frames, self._rng)))
            if len(pending) == self.batch_size:
                flush()
        if pending:
            flush()
        return probs, thumbs

    def predict(self, source: VideoSource, clips: int = DEFAULT_CLIPS, topk: int = 5, timeline: bool = False,
                window: int | None = None, stride: int | None = None) -> dict:
        """Video-level top-k (softmax averaged over `clips` evenly spaced clips) and, optionally, the timeline.

        Returns the result dict described in `predict_videos`, without the PNG path.
        """
        if self.limit_upscale and getattr(source, "frame_size", None):
            check_preprocess_fits(self.loaded.preprocess, source.frame_size, source.path)
        n, t, iv = source.n_frames, self.clip_length, self.interval_for(source)
        warnings: list[str] = []
        span = clip_span(t, iv)
        looped = n < span
        if looped:
            warnings.append(f"{source.path}: {n} frames, shorter than one clip ({t} frames every {iv} = {span} "
                            f"frames); the clip loops over the video")
            log.warning(warnings[-1])
        all_clips = clip_indices(n, t, iv, clips)
        windows: list[int] = []
        if timeline:
            window = int(window or self.default_window)
            stride = int(stride or window)
            windows = window_starts(n, window, stride)
            if n < window:
                warnings.append(f"{source.path}: {n} frames, shorter than the {window}-frame window; "
                                f"one window, looped")
                log.warning(warnings[-1])
            if window < t:
                log.info("window of %d frames < clip length %d: frames repeat within a window", window, t)
            all_clips += [window_indices(s, window, t, n) for s in windows]

        tic = time.perf_counter()
        probs, thumbs = self.run_clips(source, all_clips, thumbs_for=set(range(clips, len(all_clips))))
        elapsed = time.perf_counter() - tic
        video_probs = probs[:clips].mean(axis=0)
        k = min(topk, len(self.classes))
        order = np.argsort(-video_probs, kind="stable")[:k]
        result = {
            "video": source.path,
            "name": source.name,
            "ok": True,
            "kind": "frames.db" if is_frame_store(source.path) else "video",
            "n_frames": n,
            "fps": round(source.fps, 4),
            "duration_s": round(source.duration, 3),
            "clips": clips,
            "crops": self.crops,
            "clip_length": t,
            "frame_interval": iv,
            "looped": looped,
            "top": [{"rank": r + 1, "index": int(i), "label": self.classes[i], "prob": float(video_probs[i])}
                    for r, i in enumerate(order)],
            "clips_per_s": round(len(all_clips) / elapsed, 2) if elapsed > 0 else None,
            "warnings": warnings,
        }
        if timeline:
            rows = []
            for j, s in enumerate(windows):
                p = probs[clips + j]
                best = int(np.argmax(p))
                end = min(s + window, n)
                rows.append({"window": j, "start_frame": s, "end_frame": end,
                             "start_s": round(s / source.fps, 3), "end_s": round(end / source.fps, 3),
                             "index": best, "label": self.classes[best], "prob": float(p[best])})
            result["timeline"] = rows
            result["window"], result["stride"] = window, stride
            result["_thumbs"] = [thumbs[clips + j] for j in range(len(windows))]
        return result


def predict_videos(checkpoint_path: str | os.PathLike, videos: Sequence[str | os.PathLike], topk: int = 5,
                   clips: int = DEFAULT_CLIPS, timeline: bool = False, window: int | None = None,
                   stride: int | None = None, out: str | os.PathLike | None = None, device: str | None = "auto",
                   batch_size: int = 8, predictor: Predictor | None = None) -> list[dict]:
    """Predict each video in `videos` (raw files or frames.db folders); one failure never stops the others.

    Each result dict has ``video``, ``ok`` and, when ``ok``: ``name``, ``n_frames``, ``fps``, ``duration_s``,
    ``looped``, ``top`` (list of ``{rank, index, label, prob}``), ``warnings`` and with `timeline` also
    ``timeline`` (list of ``{window, start_frame, end_frame, start_s, end_s, index, label, prob}``) and
    ``timeline_png`` (the strip, next to `out`: a ``.json`` file path or a folder). A failed video has
    ``ok=False`` and ``error``. `device`: ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``; `predictor`
    reuses an already loaded model. Raises ``CheckpointError`` if the checkpoint itself is unusable.
    """
    if clips < 1 or topk < 1:
        raise ValueError(f"clips and topk must be >= 1, got {clips} and {topk}")
    predictor = predictor or Predictor.from_checkpoint(checkpoint_path, device, batch_size=batch_size)
    results = []
    for video in videos:
        video = str(video)
        try:
            with open_source(video, predictor.transform.min_short_side) as source:
                result = predictor.predict(source, clips=clips, topk=topk, timeline=timeline, window=window,
                                           stride=stride)
            result["warnings"] = predictor.loaded.warnings + result["warnings"]
            if timeline:
                thumbs = result.pop("_thumbs")
                result["timeline_png"] = save_timeline_png(result, thumbs, timeline_png_path(video, out))
        except (VideoSourceError, ValueError, OSError) as e:
            # Reported once, by the caller (the table's FAILED line, or the log next to --json output).
            log.debug("%s", e)
            result = {"video": video, "ok": False, "error": str(e)}
        results.append(result)
    return results


def format_result(result: dict) -> str:
    """Human-readable text for one result: the top-k table and, if present, the timeline table."""
    if not result["ok"]:
        return f"FAILED: {result['error']}\n"
    lines = [f"{result['video']}  ({result['n_frames']} frames, {result['fps']:g} fps, {result['duration_s']:.2f} s;"
             f" {result['clips']} clip(s) of {result['clip_length']} frames every {result['frame_interval']}"
             f"{', looped' if result['looped'] else ''})"]
    width = max(len(r["label"]) for r in result["top"])
    lines += [f"  {r['rank']:>2}. {r['label']:<{width}}  {r['prob']:.4f}" for r in result["top"]]
    if "timeline" in result:
        rows = result["timeline"]
        width = max(5, max(len(r["label"]) for r in rows))
        lines.append(f"  timeline: {len(rows)} window(s) of {result['window']} frames, stride {result['stride']}")
        lines.append(f"  {'#':>4}  {'start':>8}  {'end':>8}  {'label':<{width}}  prob")
        lines += [f"  {r['window']:>4}  {r['start_s']:>7.2f}s  {r['end_s']:>7.2f}s  {r['label']:<{width}}  "
                  f"{r['prob']:.3f}" for r in rows]
        lines.append(f"  timeline strip: {result['timeline_png']}")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.predict", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="raw video files or converted frames.db folders")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="checkpoint written by the trainer (*.pth)")
    src.add_argument("--weights", help=WEIGHTS_HELP)
    src.add_argument("--onnx", help="ONNX file written by tools.export_onnx (runs with onnxruntime)")
    p.add_argument("--network", default=None, help=NETWORK_HELP)
    p.add_argument("--classes", default=None, help=CLASSES_HELP)
    add_preprocess_arguments(p)
    p.add_argument("--frames", type=int, default=None,
                   help="frames per clip (default: the model's); fewer is faster, over the same time span")
    p.add_argument("--topk", type=int, default=5, help="classes to show per video")
    p.add_argument("--clips", type=int, default=DEFAULT_CLIPS, help="evenly spaced clips averaged per video")
    p.add_argument("--timeline", action="store_true", help="also predict sliding windows over each video")
    p.add_argument("--window", type=int, default=None,
                   help="timeline window in frames (default: clip_length x frame_interval of the checkpoint)")
    p.add_argument("--stride", type=int, default=None, help="timeline stride in frames (default: the window)")
    p.add_argument("--out", default=None,
                   help="write the results as JSON to this file; timeline PNGs go next to it (or into it if it "
                        "is a folder); without it PNGs go to the current folder")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    add_device_argument(p)
    p.add_argument("--batch-size", type=int, default=8, help="clips per forward pass")
    p.add_argument("--crops", type=int, choices=CROP_CHOICES, default=1,
                   help="spatial views per clip: 1 centre crop or 3 full-height crops, softmax averaged")
    add_process_options(p)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 1 some video failed; bad input exits 2)."""
    args = parse_args(argv)
    start_process(args)
    if args.topk < 1 or args.clips < 1 or args.batch_size < 1:
        die("--topk, --clips and --batch-size must be >= 1")
    if (args.window is not None and args.window < 1) or (args.stride is not None and args.stride < 1):
        die("--window and --stride must be >= 1 frame")
    if args.frames is not None and args.frames < 1:
        die("--frames must be >= 1")
    if args.network and not args.weights:
        die("--network names the architecture of a --weights file (a checkpoint or ONNX file knows its own)")
    model_file = args.checkpoint or args.weights or args.onnx
    overrides = {"clip_length": args.clip_length, "frame_interval": args.frame_interval, "crop_size": args.crop_size}
    try:
        if args.onnx:
            from tools.inference.onnx_predict import load_onnx_model

            if args.frames is not None:
                die(f"{args.onnx}: an ONNX graph has a fixed clip length; export it again with --clip-length "
                    f"{args.frames} instead of --frames")
            if args.clip_length is not None or args.crop_size is not None:
                die(f"{args.onnx}: an ONNX graph has a fixed clip length and crop size; export it again with "
                    f"--clip-length / --crop-size instead")
            if args.classes:
                die(f"{args.onnx}: an ONNX file exported here carries its class names; --classes is for --weights")
            predictor = Predictor(load_onnx_model(args.onnx), batch_size=args.batch_size, crops=args.crops)
        else:
            names = read_classes(args.classes) if args.classes else None
            loaded = load_model(model_file, args.device, network=args.network if args.weights else None,
                                classes=names)
            if names is not None and loaded.classes != names:
                log.warning("--classes %s not used: %s carries its own class names", args.classes, model_file)
            predictor = Predictor(override_preprocess(loaded, **overrides), batch_size=args.batch_size,
                                  crops=args.crops, frames=args.frames)
            predictor.limit_upscale = args.crop_size is not None
    except ValueError as e:  # CheckpointError, a bad --classes file, or a --device that is not there
        die(str(e))
    log.info("%s: %s, %d classes, clips of %d frames every %d, crop %s", model_file, predictor.loaded.network,
             len(predictor.classes), predictor.clip_length, predictor.frame_interval,
             predictor.loaded.preprocess.get("crop_size"))
    results = predict_videos(model_file, args.videos, topk=args.topk, clips=args.clips, timeline=args.timeline,
                             window=args.window, stride=args.stride, out=args.out, predictor=predictor)
    if args.out and Path(args.out).suffix:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
        log.info("results written to %s", args.out)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("\n".join(format_result(r) for r in results), end="")
    failed = [r for r in results if not r["ok"]]
    if failed:
        if args.json:  # stdout holds the JSON: the reasons go to the log, once each
            for r in failed:
                log.error("%s", r["error"])
        log.error("%d of %d video(s) failed%s", len(failed), len(results), "" if args.json else " (above)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
