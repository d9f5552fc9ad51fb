"""The converter's JPEG encoders: OpenCV's libjpeg-turbo from BGR frames (the default) and FFmpeg's mjpeg from the
decoded YUV 4:2:0 planes (``--jpeg-encoder mjpeg``: no RGB round trip, the encoder ``dataset2database`` runs).

Both write baseline JFIF JPEG that ``cv2.imdecode`` (and any JPEG reader) decodes. On real footage at equal PSNR
mjpeg stores 3-8% fewer bytes than OpenCV (docs/BENCHMARKS.md); OpenCV's ``--quality`` is finer grained.
"""
from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import cv2
import numpy as np

ENCODERS = ("opencv", "mjpeg")
DEFAULT_ENCODER = "opencv"
# FFmpeg's -q:v scale for mjpeg: 2 (best) .. 31 (smallest).
MIN_QSCALE, MAX_QSCALE = 2, 31
DEFAULT_QSCALE = 2  # the finest: on camera footage still below OpenCV q90 (42 vs 45 dB, docs/BENCHMARKS.md)


# Limited ("TV", 16-235 / 16-240) to full ("PC", 0-255) range, the JPEG convention: the same linear map as
# FFmpeg's swscale (within 1 level), as a table lookup 6x faster than swscale's range conversion.
_LUMA_TO_FULL = np.clip(np.round((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)
_CHROMA_TO_FULL = np.clip(np.round((np.arange(256) - 128) * 255 / 224 + 128), 0, 255).astype(np.uint8)
_JPEG_RANGE = 2  # AVCOL_RANGE_JPEG


def yuvj420p_planes(frame, width: int, height: int) -> np.ndarray:
    """A decoded PyAV frame as the full-range yuv420p array (height * 3/2 rows) mjpeg encodes, at width x height.

    The common case, a 4:2:0 frame already at that size, skips swscale: its planes are copied and, when they are
    limited range, mapped to full range through a lookup table. Anything else goes through swscale.
    """
    name = frame.format.name
    if (frame.width, frame.height) == (width, height) and name in ("yuv420p", "yuvj420p") and width % 2 == 0 \
            and height % 2 == 0:
        planes = frame.to_ndarray()
        if name == "yuvj420p" or frame.color_range == _JPEG_RANGE:
            return planes
        out = np.empty_like(planes)
        out[:height] = cv2.LUT(planes[:height], _LUMA_TO_FULL)
        out[height:] = cv2.LUT(planes[height:], _CHROMA_TO_FULL)
        return out
    return frame.to_ndarray(format="yuvj420p", width=width, height=height, interpolation="AREA")


def opencv_encoder(quality: int, optimize: bool = True) -> Callable[[np.ndarray], bytes]:
    """BGR array -> JPEG bytes at OpenCV `quality`, optimised Huffman tables unless `optimize` is False."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_OPTIMIZE, int(optimize)]

    def encode(bgr: np.ndarray) -> bytes:
        ok, buf = cv2.imencode(".jpg", bgr, params)
        if not ok:
            raise ValueError("JPEG encoding failed")
        return buf.tobytes()

    return encode


class MjpegEncoder:
    """FFmpeg's mjpeg encoder at a fixed qscale with optimised Huffman tables, fed yuvj420p planes.

    One thread on purpose: FFmpeg's slice threads add restart markers and silently fall back to the standard
    Huffman tables (25% larger files measured).
    """

    def __init__(self, width: int, height: int, qscale: int) -> None:
        import av

        if not MIN_QSCALE <= qscale <= MAX_QSCALE:
            raise ValueError(f"qscale must be in {MIN_QSCALE}..{MAX_QSCALE}, got {qscale}")
        self.width, self.height = width, height
        self._ctx = av.CodecContext.create("mjpeg", "w")
        self._ctx.width, self._ctx.height, self._ctx.pix_fmt = width, height, "yuvj420p"
        self._ctx.time_base = Fraction(1, 25)  # irrelevant to intra-only JPEG, but the encoder needs one
        self._ctx.thread_count = 1
        self._ctx.options = {"huffman": "optimal", "flags": "+qscale", "qmin": str(qscale), "qmax": str(qscale)}
        self._ctx.open()
        self._pts = 0

    def encode(self, planes: np.ndarray) -> bytes:
        """One frame given as its yuvj420p array (height * 3/2 rows) -> JPEG bytes."""
        import av

        if planes.shape != (self.height * 3 // 2, self.width):
            raise ValueError(f"expected a {self.width}x{self.height} yuvj420p frame, got an array of {planes.shape}")
        frame = av.VideoFrame.from_ndarray(planes, format="yuvj420p")
        frame.pts, frame.time_base = self._pts, self._ctx.time_base
        self._pts += 1
        packets = self._ctx.encode(frame)
        if len(packets) != 1:
            raise ValueError(f"mjpeg returned {len(packets)} packets for one frame")
        return bytes(packets[0])
