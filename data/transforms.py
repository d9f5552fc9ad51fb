"""Clip transforms: one parameter draw per clip, applied identically to every frame, vectorised over the clip.

A clip is a ``uint8`` array ``(T, H, W, 3)`` RGB. Every transform is a callable ``t(clip, rng) -> clip`` taking a
`numpy.random.Generator`; `Compose` chains them and the last one, `ToTensorNormalize`, returns a float tensor
``(3, T, H, W)``. `train_transform` / `val_transform` build the standard pipelines. The trainer's pipelines end
with `ToTensorUint8` instead and normalise whole batches on the GPU with `NormalizeBatch` (a quarter of the bytes
to ship from the workers and copy to the device, the same values).

Design notes
- Crop first. `ResizedCrop` fuses "resize the shorter side, then crop, then resize to the crop size": it computes
  the crop box in the coordinates of the frames it is given and resizes only that box, once per frame. Every
  later per-pixel op therefore runs on ``crop x crop`` pixels, never on the full frame. Because the box is
  computed relative to the input, frames decoded at reduced scale (libjpeg-turbo DCT scaling, see
  `ClipTransform.min_short_side`) give the same field of view.
- One call per clip, not per pixel. Per-pixel colour ops are lookup tables or one 3x4 colour matrix applied to
  the clip viewed as a single ``(T*H, W, 3)`` image (OpenCV saturates to uint8, no float round trip); flips and
  HSV conversions likewise run on that view. Only ops whose support crosses rows (resize, blur, warps) loop over
  the T frames, with identical parameters.
- Why not imgaug (the SRTG implementation): imgaug 0.4.0 (last release 2020) fails at import on numpy 2
  (``np.sctypes`` was removed), crashes in ``OneOf``/``SomeOf`` on numpy < 2 (``np.bool``), and even its
  ``to_deterministic()(images=batch)`` does not give all frames of a clip the same parameters. It also works
  frame by frame in Python. The SRTG set is therefore re-implemented here with OpenCV/numpy (`SRTGAugment`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch

__all__ = [
    "MEAN", "STD", "Compose", "ClipTransform", "ResizedCrop", "HorizontalFlip", "ColorJitter", "SRTGAugment",
    "ToTensorNormalize", "ToTensorUint8", "NormalizeBatch", "CHANNEL_ORDERS", "train_transform", "val_transform", "default_resize_short", "crop_resize",
]

# torchvision video models (Kinetics-400) normalisation.
MEAN = (0.43216, 0.394666, 0.37645)
STD = (0.22803, 0.22145, 0.216989)

# Channel orders a model can take its input in (frames are always decoded to RGB).
CHANNEL_ORDERS = ("rgb", "bgr")

# ITU-R 601 luma, as torchvision's rgb_to_grayscale.
_GRAY = np.array([0.299, 0.587, 0.114])

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def default_resize_short(crop_size: int) -> int:
    """Shorter side frames are resized to before a crop of `crop_size` (8/7 of it: 128 for 112)."""
    return round(crop_size * 8 / 7)


def _check_clip(clip: np.ndarray) -> None:
    if not isinstance(clip, np.ndarray) or clip.ndim != 4 or clip.shape[-1] != 3:
        shape = getattr(clip, "shape", type(clip).__name__)
        raise ValueError(f"expected a clip array (T, H, W, 3), got {shape}")
    if clip.dtype != np.uint8:
        raise ValueError(f"expected a uint8 clip, got {clip.dtype}")


def _as_image(clip: np.ndarray) -> np.ndarray:
    """The clip as one tall image ``(T*H, W, 3)`` (a view when contiguous) for pixel-wise OpenCV ops."""
    clip = np.ascontiguousarray(clip)
    t, h, w, c = clip.shape
    return clip.reshape(t * h, w, c)


def crop_resize(clip: np.ndarray, box: tuple[int, int, int, int], crop: int) -> np.ndarray:
    """The ``(y0, x0, height, width)`` box of every frame of `clip`, resized to ``crop x crop``."""
    y0, x0, bh, bw = box
    region = clip[:, y0:y0 + bh, x0:x0 + bw]
    if (bh, bw) == (crop, crop):
        return np.ascontiguousarray(region)
    # Area averaging only when shrinking a lot (bilinear aliases there); bilinear is faster otherwise.
    interp = cv2.INTER_AREA if min(bh, bw) >= 2 * crop else cv2.INTER_LINEAR
    out = np.empty((clip.shape[0], crop, crop, 3), np.uint8)
    for i in range(clip.shape[0]):
        cv2.resize(region[i], (crop, crop), dst=out[i], interpolation=interp)
    return out


class ResizedCrop:
    """Resize the shorter side to `resize_short`, crop, and resize the crop to ``crop_size x crop_size``, fused.

    - ``scale=None`` (evaluation, or a plain random crop): the box is ``crop_size`` pixels of a frame whose shorter
      side is ``resize_short`` (i.e. the fraction ``crop_size / resize_short`` of the shorter side).
    - ``scale=(lo, hi)`` (scale jitter): the box's height and width are drawn independently as fractions
      ``U(lo, hi)`` of the shorter side (so the aspect ratio varies too, as in MiCT-Net), then resized to the crop.
    - `positions`: ``"center"``, ``"random"`` (uniform) or ``"corners"`` (one of the four corners or the centre).

    `resize_short` is kept as a ratio to the crop size, so that a different crop size (multigrid) keeps the same
    field of view at a different resolution. `min_short_side` is the resized shorter side for the current crop.
    """

    def __init__(self, crop_size: int, resize_short: int | None = None, scale: tuple[float, float] | None = None,
                 positions: str = "center"):
        if crop_size < 1:
            raise ValueError(f"crop_size must be >= 1, got {crop_size}")
        resize_short = default_resize_short(crop_size) if resize_short is None else int(resize_short)
        if resize_short < crop_size:
            raise ValueError(f"resize_short ({resize_short}) must be >= crop_size ({crop_size})")
        if scale is not None:
            lo, hi = float(scale[0]), float(scale[1])
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"scale jitter must satisfy 0 < lo <= hi <= 1, got {scale}")
            scale = (lo, hi)
        if positions not in ("center", "random", "corners"):
            raise ValueError(f"positions must be 'center', 'random' or 'corners', got {positions!r}")
        self.crop_size = int(crop_size)
        self.ratio = resize_short / crop_size
        self.scale = scale
        self.positions = positions

    @property
    def resize_short(self) -> int:
        return self.short_side_for(self.crop_size)

    def short_side_for(self, crop_size: int) -> int:
        """Shorter side the frames are (conceptually) resized to for a crop of `crop_size`."""
        return max(int(crop_size), round(crop_size * self.ratio))

    @property
    def min_short_side(self) -> int:
        return self.resize_short

    def box(self, height: int, width: int, rng: np.random.Generator | None,
            crop_size: int | None = None) -> tuple[int, int, int, int]:
        """Crop box ``(y0, x0, h, w)`` in the coordinates of a ``height x width`` frame."""
        short = min(height, width)
        if self.scale is None:
            crop = self.crop_size if crop_size is None else crop_size
            side = crop * short / self.short_side_for(crop)
            bh = bw = min(short, max(1, round(side)))
        else:
            lo, hi = self.scale
            fh, fw = rng.uniform(lo, hi, size=2)
            bh, bw = max(1, round(fh * short)), max(1, round(fw * short))
        free_y, free_x = height - bh, width - bw
        if self.positions == "center":
            return free_y // 2, free_x // 2, bh, bw
        if self.positions == "random":
            return int(rng.integers(free_y + 1)), int(rng.integers(free_x + 1)), bh, bw
        # corners: top-left, top-right, bottom-left, bottom-right, centre
        fy, fx = ((0, 0), (0, 2), (2, 0), (2, 2), (1, 1))[rng.integers(5)]
        return free_y * fy // 2, free_x * fx // 2, bh, bw

    def __call__(self, clip: np.ndarray, rng: np.random.Generator | None = None,
                 crop_size: int | None = None) -> np.ndarray:
        _check_clip(clip)
        crop = self.crop_size if crop_size is None else int(crop_size)
        _, height, width, _ = clip.shape
        return crop_resize(clip, self.box(height, width, rng, crop), crop)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(crop_size={self.crop_size}, resize_short={self.resize_short}, "
                f"scale={self.scale}, positions={self.positions!r})")


class HorizontalFlip:
    """Mirror every frame of the clip with probability `p` (one draw per clip)."""

    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def __call__(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.p <= 0 or rng.random() >= self.p:
            return clip
        # Flipping the (T*H, W, 3) view around its vertical axis flips every frame in one call.
        return cv2.flip(_as_image(clip), 1).reshape(clip.shape)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class ColorJitter:
    """Brightness, contrast and saturation factors ``U(1 - s, 1 + s)``, in random order, one draw per clip.

    The three adjustments are affine in RGB, so they are composed into one 3x4 colour matrix and applied in a
    single saturating pass (clamping happens once at the end, not after each step). Contrast blends with the mean
    grey level of the whole clip, so every frame gets the same map.
    """

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2):
        for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not 0 <= value < 1:
                raise ValueError(f"{name} jitter must be in [0, 1), got {value}")
        self.brightness, self.contrast, self.saturation = float(brightness), float(contrast), float(saturation)

    def matrix(self, mean_rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw the parameters and return the 3x4 affine colour matrix for a clip with mean colour `mean_rgb`."""
        a, o = np.eye(3), np.zeros(3)  # current map: x -> a @ x + o
        ones_gray = np.outer(np.ones(3), _GRAY)  # x -> gray(x) in all three channels
        for op in rng.permutation(3):
            amount = (self.brightness, self.contrast, self.saturation)[op]
            if amount == 0:
                continue
            f = rng.uniform(1 - amount, 1 + amount)
            if op == 0:  # brightness: f * x
                step, shift = f * np.eye(3), np.zeros(3)
            elif op == 1:  # contrast: f * x + (1 - f) * mean grey of the clip (after the steps so far)
                mean_gray = _GRAY @ (a @ mean_rgb + o)
                step, shift = f * np.eye(3), np.full(3, (1 - f) * mean_gray)
            else:  # saturation: f * x + (1 - f) * gray(x)
                step, shift = f * np.eye(3) + (1 - f) * ones_gray, np.zeros(3)
            a, o = step @ a, step @ o + shift
        return np.hstack([a, o[:, None]]).astype(np.float32)

    def __call__(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.brightness == self.contrast == self.saturation == 0:
            return clip
        image = _as_image(clip)
        mean_rgb = np.array(cv2.mean(image)[:3]) if self.contrast else np.zeros(3)
        return cv2.transform(image, self.matrix(mean_rgb, rng)).reshape(clip.shape)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation})")


class SRTGAugment:
    """The SRTG spatial augmentation set, re-implemented with OpenCV/numpy (see the module docstring).

    With probability `p_seq` a clip is augmented at all; then each op applies with probability `p`, in this order:
    Gaussian blur (sigma in {0.1, 0.2, 0.3}), per-channel add (-5..15), hue and saturation shift (+-16 on a 0-255
    scale), linear contrast around 128 (0.85..1.115), one of perspective (corner jitter sigma 0.02..0.05 of the
    size) or rotation (+-10 degrees), additive Gaussian noise (sigma up to 0.05*255). One parameter draw per clip;
    the noise is one field shared by all frames, so identical frames stay identical. Geometric warps fill from the
    mirrored image rather than with black corners. SRTG used p_seq/p = 0.65/0.3 for UCF-101 and 0.8/0.4 elsewhere.
    """

    def __init__(self, p_seq: float = 0.8, p: float = 0.4, blur_sigmas: Sequence[float] = (0.1, 0.2, 0.3),
                 add: tuple[int, int] = (-5, 15), hue_sat: float = 16.0, contrast: tuple[float, float] = (0.85, 1.115),
                 perspective: tuple[float, float] = (0.02, 0.05), rotate: float = 10.0, noise: float = 0.05 * 255):
        self.p_seq, self.p = float(p_seq), float(p)
        self.blur_sigmas = tuple(blur_sigmas)
        self.add, self.hue_sat, self.contrast = add, float(hue_sat), contrast
        self.perspective, self.rotate, self.noise = perspective, float(rotate), float(noise)

    def __call__(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check_clip(clip)
        if rng.random() >= self.p_seq:
            return clip
        # Draw every switch up front so that the number of draws does not depend on the clip.
        on = rng.random(6) < self.p
        clip = np.ascontiguousarray(clip)
        if on[0]:
            clip = self.blur(clip, float(rng.choice(self.blur_sigmas)))
        if on[1]:
            clip = self.add_per_channel(clip, rng.integers(self.add[0], self.add[1] + 1, size=3))
        if on[2]:
            clip = self.hue_saturation(clip, *rng.uniform(-self.hue_sat, self.hue_sat, size=2))
        if on[3]:
            clip = self.linear_contrast(clip, rng.uniform(*self.contrast))
        if on[4]:
            clip = self.warp(clip, rng)
        if on[5]:
            clip = self.gaussian_noise(clip, rng)
        return clip

    @staticmethod
    def blur(clip: np.ndarray, sigma: float) -> np.ndarray:
        # Per frame: on the stacked (T*H, W) view the kernel would mix the last rows of one frame into the next.
        out = np.empty_like(clip)
        for i in range(len(clip)):
            cv2.GaussianBlur(clip[i], (0, 0), sigma, dst=out[i], borderType=cv2.BORDER_REFLECT_101)
        return out

    @staticmethod
    def _lut(clip: np.ndarray, lut: np.ndarray) -> np.ndarray:
        """Apply a (256, 3) per-channel lookup table."""
        return cv2.LUT(_as_image(clip), lut.reshape(256, 1, 3)).reshape(clip.shape)

    @classmethod
    def add_per_channel(cls, clip: np.ndarray, values: np.ndarray) -> np.ndarray:
        levels = np.arange(256)[:, None]
        return cls._lut(clip, np.clip(levels + np.asarray(values)[None, :], 0, 255).astype(np.uint8))

    @classmethod
    def linear_contrast(cls, clip: np.ndarray, alpha: float) -> np.ndarray:
        lut = np.clip(np.rint(128 + alpha * (np.arange(256) - 128)), 0, 255).astype(np.uint8)
        return cls._lut(clip, np.repeat(lut[:, None], 3, axis=1))

    @classmethod
    def hue_saturation(cls, clip: np.ndarray, hue: float, saturation: float) -> np.ndarray:
        """Shift hue and saturation by values on a 0-255 scale (OpenCV's 8-bit hue runs 0-179)."""
        levels = np.arange(256)
        hue_lut = np.where(levels < 180, np.mod(levels + round(hue * 180 / 255), 180), levels)
        sat_lut = np.clip(levels + round(saturation), 0, 255)
        lut = np.stack([hue_lut, sat_lut, levels], axis=1).astype(np.uint8)
        hsv = cv2.cvtColor(_as_image(clip), cv2.COLOR_RGB2HSV)
        return cv2.cvtColor(cv2.LUT(hsv, lut.reshape(256, 1, 3)), cv2.COLOR_HSV2RGB).reshape(clip.shape)

    def warp(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Perspective or rotation (one of them, equally likely), identical for all frames."""
        _, h, w, _ = clip.shape
        out = np.empty_like(clip)
        flags, border = cv2.INTER_LINEAR, cv2.BORDER_REFLECT_101
        if rng.random() < 0.5:
            sigma = rng.uniform(*self.perspective)
            # Corners moved inwards by |N(0, sigma)| of the size; that quadrilateral is stretched to the full frame.
            jitter = np.abs(rng.normal(0.0, sigma, size=(4, 2))) * (w - 1, h - 1)
            dst = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
            src = (dst + jitter * np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]])).astype(np.float32)
            matrix = cv2.getPerspectiveTransform(src, dst)
            for i in range(len(clip)):
                cv2.warpPerspective(clip[i], matrix, (w, h), dst=out[i], flags=flags, borderMode=border)
        else:
            angle = rng.uniform(-self.rotate, self.rotate)
            matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
            for i in range(len(clip)):
                cv2.warpAffine(clip[i], matrix, (w, h), dst=out[i], flags=flags, borderMode=border)
        return out

    def gaussian_noise(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        sigma = rng.uniform(0.0, self.noise)
        field = np.rint(rng.normal(0.0, sigma, size=clip.shape[1:]))
        # Saturating uint8 add of the positive part, subtract of the negative part: exact, no int16 round trip.
        pos = np.clip(field, 0, 255).astype(np.uint8)
        neg = np.clip(-field, 0, 255).astype(np.uint8)
        out = np.empty_like(clip)
        for i in range(len(clip)):
            cv2.add(clip[i], pos, dst=out[i])
            cv2.subtract(out[i], neg, dst=out[i])
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p_seq={self.p_seq}, p={self.p})"


class ToTensorNormalize:
    """``uint8 (T, H, W, 3)`` -> ``float32`` tensor ``(3, T, H, W)``, ``(x / 255 - mean) / std`` per channel.

    `channel_order` is the model's input order: ``"rgb"``, or ``"bgr"`` for networks trained on OpenCV-decoded
    frames (the SRTG code); `mean` and `std` are given in that order.
    """

    def __init__(self, mean: Sequence[float] = MEAN, std: Sequence[float] = STD, channel_order: str = "rgb"):
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values (std > 0), got {mean}, {std}")
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {', '.join(CHANNEL_ORDERS)}, got {channel_order!r}")
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.channel_order = channel_order
        # (x / 255 - mean) / std == x * scale + shift
        self._scale = [1.0 / (255.0 * s) for s in self.std]
        self._shift = [-m / s for m, s in zip(self.mean, self.std)]
        # input plane c (RGB) goes to output channel _dest[c]
        self._dest = (0, 1, 2) if channel_order == "rgb" else (2, 1, 0)

    def __call__(self, clip: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        _check_clip(clip)
        t, h, w, _ = clip.shape
        out = torch.empty((3, t, h, w), dtype=torch.float32)
        planes_out = out.numpy().reshape(3, t * h, w)
        # De-interleave once, then one fused scale+shift+convert pass per channel straight into the tensor.
        for c, plane in enumerate(cv2.split(_as_image(clip))):
            d = self._dest[c]
            cv2.addWeighted(plane, self._scale[d], plane, 0.0, self._shift[d], dst=planes_out[d], dtype=cv2.CV_32F)
        return out

    def __repr__(self) -> str:
        order = "" if self.channel_order == "rgb" else f", channel_order={self.channel_order!r}"
        return f"{type(self).__name__}(mean={self.mean}, std={self.std}{order})"


class ToTensorUint8:
    """``uint8 (T, H, W, 3)`` -> ``uint8`` tensor ``(3, T, H, W)`` in the model's channel order, not normalised.

    A quarter of the bytes of `ToTensorNormalize`'s float output for the workers to send, for the loader to pin
    and for the host to copy to the GPU; `NormalizeBatch` then normalises the whole batch on its device, with
    the same result.
    """

    def __init__(self, channel_order: str = "rgb"):
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {', '.join(CHANNEL_ORDERS)}, got {channel_order!r}")
        self.channel_order = channel_order

    def __call__(self, clip: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        _check_clip(clip)
        planes = torch.from_numpy(np.ascontiguousarray(clip)).permute(3, 0, 1, 2)
        return (planes if self.channel_order == "rgb" else planes.flip(0)).contiguous()

    def __repr__(self) -> str:
        order = "" if self.channel_order == "rgb" else f"channel_order={self.channel_order!r}"
        return f"{type(self).__name__}({order})"


class NormalizeBatch:
    """`ToTensorNormalize`'s ``(x / 255 - mean) / std`` on a uint8 batch ``(N, 3, T, H, W)``, on the batch's device.

    `mean` and `std` are in the batch's channel order (that of the model). The arithmetic is the CPU path's
    (one fused multiply-add per value, in float32): on the CPU the results are bit for bit those of
    `ToTensorNormalize`. A floating batch is returned unchanged (it is normalised already).
    """

    def __init__(self, mean: Sequence[float] = MEAN, std: Sequence[float] = STD):
        reference = ToTensorNormalize(mean, std)
        self.mean, self.std = reference.mean, reference.std
        self._scale = torch.tensor(reference._scale, dtype=torch.float32).view(3, 1, 1, 1)
        self._shift = torch.tensor(reference._shift, dtype=torch.float32).view(3, 1, 1, 1)

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        if clips.is_floating_point():
            return clips
        if clips.dtype != torch.uint8 or clips.dim() < 4 or clips.shape[-4] != 3:
            raise ValueError(f"expected uint8 clips (..., 3, T, H, W), got {clips.dtype} {tuple(clips.shape)}")
        if self._scale.device != clips.device:
            self._scale = self._scale.to(clips.device)
            self._shift = self._shift.to(clips.device)
        return torch.addcmul(self._shift, clips.float(), self._scale)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean}, std={self.std})"


class Compose:
    """Chain clip transforms; the clip-level entry point the dataset uses (a `ClipTransform`).

    ``crop_size`` (settable, e.g. by the multigrid long cycle) and ``min_short_side`` refer to the first
    transform that has a crop size (a `ResizedCrop`); ``__call__(clip, rng, crop_size=...)`` overrides the crop
    size for one call (the multigrid short cycle).
    """

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)
        self._crop = next((t for t in self.transforms if hasattr(t, "short_side_for")), None)

    @property
    def crop_size(self) -> int | None:
        return None if self._crop is None else self._crop.crop_size

    @crop_size.setter
    def crop_size(self, value: int) -> None:
        if self._crop is None:
            raise AttributeError("this transform has no crop to resize")
        if int(value) < 1:
            raise ValueError(f"crop_size must be >= 1, got {value}")
        self._crop.crop_size = int(value)

    @property
    def min_short_side(self) -> int | None:
        """Smallest stored shorter side this pipeline needs at its current crop size (None: full size)."""
        return self.short_side_for(None)

    def short_side_for(self, crop_size: int | None = None) -> int | None:
        """As `min_short_side`, for a crop size that may differ from the current one."""
        if self._crop is None:
            return None
        return self._crop.short_side_for(self._crop.crop_size if crop_size is None else crop_size)

    def __call__(self, clip: np.ndarray, rng: np.random.Generator, crop_size: int | None = None):
        for t in self.transforms:
            if t is self._crop and crop_size is not None:
                clip = t(clip, rng, crop_size=crop_size)
            else:
                clip = t(clip, rng)
        return clip

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"{type(self).__name__}([{inner}\n])"


ClipTransform = Compose


def train_transform(crop_size: int, resize_short: int | None = None,
                    scale_jitter: tuple[float, float] | None = (0.8, 1.0), flip: bool = True,
                    color_jitter: float = 0.2, srtg_augment: bool = False, *, crop_positions: str = "random",
                    srtg_p: tuple[float, float] = (0.8, 0.4), mean: Sequence[float] = MEAN,
                    std: Sequence[float] = STD, normalize: bool = True) -> ClipTransform:
    """Training pipeline: scale-jittered crop, [SRTG set], flip, colour jitter, normalise.

    `normalize=False` ends with `ToTensorUint8` instead: uint8 clips for `NormalizeBatch` on the device.

    `scale_jitter` (lo, hi): crop height and width as independent fractions of the shorter side; None gives a
    plain ``crop_size`` crop of frames resized to `resize_short` (default ``round(crop_size * 8 / 7)``).
    `crop_positions`: "random" or "corners" (four corners or centre, MiCT-Net style). `srtg_p`: (p_seq, p).
    """
    steps: list[Transform] = [ResizedCrop(crop_size, resize_short, scale_jitter, crop_positions)]
    if srtg_augment:
        steps.append(SRTGAugment(*srtg_p))
    if flip:
        steps.append(HorizontalFlip(0.5))
    if color_jitter:
        steps.append(ColorJitter(color_jitter, color_jitter, color_jitter))
    steps.append(ToTensorNormalize(mean, std) if normalize else ToTensorUint8())
    return Compose(steps)


def val_transform(crop_size: int, resize_short: int | None = None, *, mean: Sequence[float] = MEAN,
                  std: Sequence[float] = STD, channel_order: str = "rgb", normalize: bool = True) -> ClipTransform:
    """Evaluation pipeline: resize the shorter side to `resize_short`, centre crop `crop_size`, normalise
    (`normalize=False`: uint8 clips, as `train_transform`)."""
    return Compose([ResizedCrop(crop_size, resize_short, None, "center"),
                    ToTensorNormalize(mean, std, channel_order) if normalize else ToTensorUint8(channel_order)])
