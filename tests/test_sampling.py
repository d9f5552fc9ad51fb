"""Temporal samplers: training randomness and looping, deterministic evenly spaced evaluation clips."""
import numpy as np
import pytest

from data.sampling import RandomClipSampler, UniformClipSampler, as_intervals, clip_span


def test_random_clip_fits_inside_video_with_chosen_interval():
    sampler = RandomClipSampler(8, [1, 2, 3])
    rng = np.random.default_rng(0)
    seen_intervals, starts = set(), set()
    for _ in range(300):
        idx = sampler(50, rng)
        assert idx.shape == (8,) and idx.dtype == np.int64
        steps = np.diff(idx)
        assert len(set(steps.tolist())) == 1, "one interval per clip, no wrap when the clip fits"
        seen_intervals.add(int(steps[0]))
        starts.add(int(idx[0]))
        assert idx[0] >= 0 and idx[-1] < 50
    assert seen_intervals == {1, 2, 3}
    assert min(starts) == 0 and max(starts) > 30  # the whole range of starts is used


def test_random_clip_loops_short_video_keeping_repeats():
    sampler = RandomClipSampler(16, 2)
    rng = np.random.default_rng(1)
    for _ in range(50):
        idx = sampler(5, rng)
        assert idx.shape == (16,)
        assert ((idx >= 0) & (idx < 5)).all()
        assert np.array_equal(idx, (idx[0] + 2 * np.arange(16)) % 5)
        assert len(np.unique(idx)) < len(idx)  # repeats are kept, never collapsed


def test_random_clip_is_reproducible_for_a_seed():
    sampler = RandomClipSampler(8, [2, 4])
    a = [sampler(100, np.random.default_rng(7)) for _ in range(3)]
    b = [sampler(100, np.random.default_rng(7)) for _ in range(3)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_uniform_single_clip_is_centred_and_deterministic():
    sampler = UniformClipSampler(8, 2, clips_per_video=1)
    idx = sampler(100)
    span = clip_span(8, 2)
    assert idx[0] == (100 - span) // 2
    assert idx[0] == 100 - 1 - idx[-1] or idx[0] + 1 == 100 - 1 - idx[-1]  # frames left ~= frames right
    assert np.array_equal(idx, sampler(100))


def test_uniform_clips_are_evenly_spaced_and_inside():
    sampler = UniformClipSampler(4, 2, clips_per_video=5)
    starts = [sampler(107, k)[0] for k in range(5)]
    gaps = np.diff(starts)
    assert (gaps > 0).all() and gaps.max() - gaps.min() <= 1
    # Symmetric placement: as many frames before the first clip as after the last one (up to rounding).
    last_end = sampler(107, 4)[-1]
    assert abs(starts[0] - (107 - 1 - last_end)) <= 1
    for k in range(5):
        idx = sampler(107, k)
        assert idx[0] >= 0 and idx[-1] < 107 and (np.diff(idx) == 2).all()


def test_uniform_clips_loop_on_short_video():
    sampler = UniformClipSampler(8, 3, clips_per_video=2)
    first, second = sampler(6, 0), sampler(6, 1)
    assert np.array_equal(first, (3 * np.arange(8)) % 6)
    assert np.array_equal(second, (3 + 3 * np.arange(8)) % 6)


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        RandomClipSampler(0, 2)
    with pytest.raises(ValueError):
        RandomClipSampler(8, [])
    with pytest.raises(ValueError):
        as_intervals([2, 0])
    with pytest.raises(ValueError):
        RandomClipSampler(8, 2)(0, np.random.default_rng())
    with pytest.raises(IndexError):
        UniformClipSampler(8, 2, clips_per_video=2)(50, 2)
