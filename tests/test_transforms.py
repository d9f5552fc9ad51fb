"""Clip transforms: identical parameters on every frame, shapes, crop geometry, colour maths, normalisation."""

import numpy as np
import pytest
import torch

from data.transforms import (
    MEAN,
    STD,
    ColorJitter,
    Compose,
    HorizontalFlip,
    ResizedCrop,
    SRTGAugment,
    ToTensorNormalize,
    train_transform,
    val_transform,
)

T = 6


def still_clip(h=40, w=56, seed=0):
    """A clip whose frames are all the same random image."""
    frame = np.random.default_rng(seed).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
    return np.repeat(frame, T, axis=0)


def ramp_clip(h=40, w=56):
    """Frame t = a smooth image + 10*t: any spatial op identical over frames keeps the per-frame offsets."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([60 + xx, 60 + yy, 60 + (xx + yy) // 2], axis=-1)
    return np.stack([base + 10 * t for t in range(T)]).astype(np.uint8)


@pytest.mark.parametrize("make", [
    lambda: train_transform(24),
    lambda: train_transform(24, crop_positions="corners", scale_jitter=(0.6, 1.0)),
    lambda: train_transform(24, srtg_augment=True, srtg_p=(1.0, 1.0)),
    lambda: val_transform(24),
])
def test_identical_frames_stay_identical(make):
    transform = make()
    for seed in range(8):
        out = transform(still_clip(seed=seed), np.random.default_rng(seed))
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
        assert out.shape == (3, T, 24, 24)
        assert torch.equal(out, out[:, :1].expand_as(out)), "every frame must get the same augmentation"


def test_spatial_ops_use_one_box_for_all_frames():
    transform = Compose([ResizedCrop(20, scale=(0.5, 1.0), positions="random"), HorizontalFlip(0.5),
                         SRTGAugment(1.0, 1.0, add=(0, 0), hue_sat=0, contrast=(1, 1), noise=0, blur_sigmas=(0.1,))])
    clip = ramp_clip()
    for seed in range(6):
        out = transform(clip, np.random.default_rng(seed)).astype(np.int16)
        diffs = out[1:] - out[:-1]
        # Each frame is the previous one plus 10 wherever nothing saturated: same box, same flip, same warp.
        assert np.abs(diffs - 10).max() <= 1


def test_flip_mirrors_every_frame():
    clip = ramp_clip()
    out = HorizontalFlip(p=1.0)(clip, np.random.default_rng(0))
    assert np.array_equal(out, clip[:, :, ::-1])
    assert HorizontalFlip(p=0.0)(clip, np.random.default_rng(0)) is clip


def test_val_crop_is_centred_and_deterministic():
    clip = np.random.default_rng(3).integers(0, 256, (2, 128, 171, 3), dtype=np.uint8)
    crop = ResizedCrop(112)  # resize_short 128 == stored short side: a pure centre crop, no resampling
    assert crop.min_short_side == 128
    out = crop(clip)
    assert np.array_equal(out, clip[:, 8:120, 29:141])
    transform = val_transform(112)
    a = transform(clip, np.random.default_rng(1))
    b = transform(clip, np.random.default_rng(2))
    assert torch.equal(a, b)


def test_reduced_scale_input_gives_the_same_field_of_view():
    yy, xx = np.mgrid[0:128, 0:172]
    full = np.stack([xx, yy, (xx + yy) // 2], axis=-1).astype(np.uint8)[None]
    half = full[:, ::2, ::2].copy()  # what a 1/2-scale decode delivers
    crop = ResizedCrop(28, resize_short=32)
    a, b = crop(full).astype(int), crop(half).astype(int)
    assert a.shape == b.shape == (1, 28, 28, 3)
    assert np.abs(a - b).mean() < 2.0


def test_crop_size_override_setter_and_min_short_side():
    transform = train_transform(112)
    assert transform.crop_size == 112 and transform.min_short_side == 128
    assert transform.short_side_for(56) == 64
    clip = still_clip(64, 86)
    assert transform(clip, np.random.default_rng(0), crop_size=20).shape == (3, T, 20, 20)
    assert transform.crop_size == 112  # the override is for one call only
    transform.crop_size = 80
    assert transform.min_short_side == round(80 * 128 / 112)
    assert transform(clip, np.random.default_rng(0)).shape == (3, T, 80, 80)


def test_resized_crop_scale_and_positions():
    clip = np.zeros((1, 100, 200, 3), np.uint8)
    rng = np.random.default_rng(0)
    corner = ResizedCrop(10, scale=(0.5, 0.5), positions="corners")
    boxes = {corner.box(100, 200, rng) for _ in range(100)}
    assert boxes == {(0, 0, 50, 50), (0, 150, 50, 50), (50, 0, 50, 50), (50, 150, 50, 50), (25, 75, 50, 50)}
    jitter = ResizedCrop(10, scale=(0.6, 1.0), positions="random")
    for _ in range(50):
        y0, x0, h, w = jitter.box(100, 200, rng)
        assert 60 <= h <= 100 and 60 <= w <= 100 and y0 + h <= 100 and x0 + w <= 200
    assert jitter(clip, rng).shape == (1, 10, 10, 3)
    with pytest.raises(ValueError):
        ResizedCrop(112, resize_short=100)


def test_color_jitter_matches_sequential_float_reference():
    jitter = ColorJitter(0.4, 0.4, 0.4)
    clip = np.random.default_rng(5).integers(40, 200, (T, 8, 8, 3), dtype=np.uint8)
    out = jitter(clip, np.random.default_rng(9))
    # Redo the same draws step by step in float.
    rng = np.random.default_rng(9)
    x = clip.astype(np.float64)
    gray_w = np.array([0.299, 0.587, 0.114])
    for op in rng.permutation(3):
        f = rng.uniform(0.6, 1.4)
        if op == 0:
            x = f * x
        elif op == 1:
            x = f * x + (1 - f) * (x @ gray_w).mean()
        else:
            x = f * x + (1 - f) * (x @ gray_w)[..., None]
    assert np.abs(out.astype(float) - np.clip(x, 0, 255)).max() <= 1.0
    gray = np.full((T, 4, 4, 3), 77, np.uint8)
    no_sat = ColorJitter(0, 0, 0.5)(gray, np.random.default_rng(0))
    assert np.array_equal(no_sat, gray)  # saturation leaves grey alone


def test_srtg_ops_shapes_and_shared_noise():
    srtg = SRTGAugment()
    clip = still_clip(24, 32)
    rng = np.random.default_rng(0)
    for out in (srtg.blur(clip, 0.3), srtg.add_per_channel(clip, np.array([-5, 0, 15])),
                srtg.hue_saturation(clip, 16, -16), srtg.linear_contrast(clip, 0.85), srtg.warp(clip, rng),
                srtg.gaussian_noise(clip, rng)):
        assert out.shape == clip.shape and out.dtype == np.uint8
        assert (out == out[:1]).all()
    assert SRTGAugment(p_seq=0.0)(clip, rng) is clip
    shifted = srtg.add_per_channel(np.full((1, 2, 2, 3), 250, np.uint8), np.array([10, -5, 0]))
    assert shifted[0, 0, 0].tolist() == [255, 245, 250]  # saturating add, per channel


def test_to_tensor_normalize_layout_and_values():
    clip = np.random.default_rng(0).integers(0, 256, (T, 5, 7, 3), dtype=np.uint8)
    out = ToTensorNormalize()(clip)
    assert out.shape == (3, T, 5, 7) and out.is_contiguous()
    ref = (torch.from_numpy(clip).permute(3, 0, 1, 2).double() / 255 - torch.tensor(MEAN).view(3, 1, 1, 1)) \
        / torch.tensor(STD).view(3, 1, 1, 1)
    assert torch.allclose(out.double(), ref, atol=1e-5)


def test_bad_clips_raise():
    with pytest.raises(ValueError):
        ToTensorNormalize()(np.zeros((T, 4, 4), np.uint8))
    with pytest.raises(ValueError):
        val_transform(8)(np.zeros((T, 16, 16, 3), np.float32), np.random.default_rng())
