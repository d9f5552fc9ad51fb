"""Benchmark inputs that leave only the JPEG step to compare: each video rescaled once and stored losslessly.

``dataset2database`` always runs ``ffmpeg -vf scale=-1:360``; this converter keeps the size unless told
otherwise. Rewriting every source at exactly 360 px tall (aspect kept, even width), with FFmpeg's default bicubic
scaler, as a lossless H.264 file (``qp 0``, the source's YUV 4:2:0 planes kept) makes both scalers an identity and
makes the decoded lossless frames the PSNR reference of every store. ``write_lossless`` decodes what it wrote and
compares it plane by plane with what it encoded; when the codec did not round-trip exactly it tries the next
lossless codec (FFV1 in AVI) and fails loudly if none does.

Upscaled small clips (176x144 -> 440x360) are smoother than footage filmed at 360 px and compress better with any
JPEG encoder; ``height=None`` keeps the native size (rounded to even) for comparisons without a fixed height.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# (codec, file suffix, encoder options): the first whose decoded frames equal the encoded ones is kept.
# Suffixes are ones dataset2database lists (.mp4, .avi).
LOSSLESS_CODECS = (
    ("libx264", ".mp4", {"qp": "0", "preset": "ultrafast"}),
    ("ffv1", ".avi", {}),
)


@dataclass(frozen=True)
class PreparedSource:
    """A lossless copy of one source video: where it is, its codec, frame size and frame count."""

    path: Path
    codec: str
    width: int
    height: int
    frames: int


def scaled_size(width: int, height: int, target_height: int | None) -> tuple[int, int]:
    """(width, height) at `target_height` (None: the native height), aspect kept; both even (YUV 4:2:0)."""
    if width < 1 or height < 1:
        raise ValueError(f"bad frame size {width}x{height}")
    h = height if target_height is None else target_height
    h = max(2, h - h % 2)
    w = max(2, 2 * round(width * h / height / 2))
    return w, h


def _source_planes(src: Path, size: tuple[int, int] | None) -> Iterator[tuple[np.ndarray, Fraction, tuple[int, int]]]:
    """(yuv420p array, frame rate, size) of every frame of `src`, rescaled with the bicubic scaler."""
    import av

    with av.open(str(src)) as c:
        if not c.streams.video:
            raise ValueError(f"{src}: no video stream")
        stream = c.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        out = size or scaled_size(stream.codec_context.width, stream.codec_context.height, None)
        for frame in c.decode(stream):
            yuv = frame.reformat(width=out[0], height=out[1], format="yuv420p", interpolation="BICUBIC")
            yield yuv.to_ndarray(), Fraction(rate), out


def _encode(planes: list[np.ndarray], rate: Fraction, size: tuple[int, int], dst: Path, codec: str,
            options: dict[str, str]) -> None:
    import av

    with av.open(str(dst), "w") as out:
        stream = out.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for k, arr in enumerate(planes):
            frame = av.VideoFrame.from_ndarray(arr, format="yuv420p")
            frame.pts = k
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def decoded_planes(path: Path) -> list[np.ndarray]:
    """Every frame of `path` as its yuv420p array (height * 3/2 rows: Y, then U and V)."""
    import av

    with av.open(str(path)) as c:
        return [f.reformat(format="yuv420p").to_ndarray() for f in c.decode(video=0)]


def _first_difference(expected: list[np.ndarray], got: list[np.ndarray]) -> str | None:
    if len(expected) != len(got):
        return f"{len(got)} frames decoded, {len(expected)} written"
    for k, (a, b) in enumerate(zip(expected, got)):
        if a.shape != b.shape or not np.array_equal(a, b):
            return f"frame {k} differs"
    return None


def write_lossless(src: Path, dst_stem: Path, height: int | None = 360) -> PreparedSource:
    """Write `src` at `height` px tall (None: native) losslessly to `dst_stem` + the codec's suffix.

    Raises ValueError naming the file when it has no frames or when no codec reproduces the frames exactly.
    """
    import av

    size = None
    try:
        if height is not None:
            with av.open(str(src)) as c:
                if not c.streams.video:
                    raise ValueError(f"{src}: no video stream")
                cc = c.streams.video[0].codec_context
                size = scaled_size(cc.width, cc.height, height)
        decoded = list(_source_planes(src, size))
    except av.FFmpegError as e:
        raise ValueError(f"{src}: cannot read as video ({e.strerror or e})") from None
    if not decoded:
        raise ValueError(f"{src}: no frames could be decoded")
    planes = [p for p, _, _ in decoded]
    rate, out_size = decoded[0][1], decoded[0][2]
    dst_stem.parent.mkdir(parents=True, exist_ok=True)
    problems = []
    for codec, suffix, options in LOSSLESS_CODECS:
        dst = dst_stem.with_suffix(suffix)
        _encode(planes, rate, out_size, dst, codec, options)
        problem = _first_difference(planes, decoded_planes(dst))
        if problem is None:
            return PreparedSource(dst, codec, out_size[0], out_size[1], len(planes))
        log.warning("%s: %s is not lossless here (%s); trying the next codec", dst, codec, problem)
        dst.unlink()
        problems.append(f"{codec}: {problem}")
    raise ValueError(f"{src}: no lossless codec reproduced the frames ({'; '.join(problems)})")


def find_sources(folder: Path) -> dict[str, dict[str, Path]]:
    """Videos under `folder` by group, each as {unique name: path}: every sub-folder is a group (videos at any
    depth below it, named by their path below it with ``/`` turned into ``_``); videos lying directly in `folder`
    form a group named after it. Hidden files and folders are skipped."""
    from tools.ingest.video_folder import VIDEO_EXTENSIONS

    def videos(top: Path, recursive: bool) -> dict[str, Path]:
        found = sorted(top.rglob("*") if recursive else top.iterdir())
        return {"_".join(p.relative_to(top).with_suffix("").parts): p for p in found
                if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
                and not any(part.startswith(".") for part in p.relative_to(folder).parts)}

    groups = {d.name: videos(d, True) for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    groups = {g: v for g, v in groups.items() if v}
    loose = videos(folder, False)
    if loose:
        groups.setdefault(folder.name, {}).update(loose)
    return groups
