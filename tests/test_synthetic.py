"""Synthetic demo videos: determinism, files, decodability, and classes that differ only in motion direction."""
from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from tools import synthetic
from tools.synthetic import CLASS_NAMES, CLASSES, generate, render_video, video_rng

SIZE = (64, 80)
FRAMES = 16


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def motion_stats(video: np.ndarray) -> np.ndarray:
    """Median per-step (dx, dy, clockwise degrees, log scale) of the moving object: an order-aware measurement.

    Corners tracked with Lucas-Kanade between consecutive frames, a similarity transform fitted (RANSAC) to the
    points that moved; the static background gives no moving points.
    """
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in video]
    steps = []
    for a, b in zip(gray[:-1], gray[1:]):
        pts = cv2.goodFeaturesToTrack(a, 60, 0.05, 3)
        if pts is None:
            continue
        nxt, status, _ = cv2.calcOpticalFlowPyrLK(a, b, pts, None, winSize=(9, 9), maxLevel=2)
        ok = status[:, 0] == 1
        p0, p1 = pts[ok, 0], nxt[ok, 0]
        moving = np.linalg.norm(p1 - p0, axis=1) > 0.2
        if moving.sum() < 3:
            continue
        m, _ = cv2.estimateAffinePartial2D(p0[moving], p1[moving], method=cv2.RANSAC, ransacReprojThreshold=1.0)
        if m is not None:
            steps.append((m[0, 2], m[1, 2], np.degrees(np.arctan2(m[1, 0], m[0, 0])),
                          np.log(np.hypot(m[0, 0], m[1, 0]))))
    assert steps, "no motion found at all"
    return np.median(np.array(steps), axis=0)


STAT = {"x": 0, "y": 1, "rotate": 2, "scale": 3}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "videos"
    generate(out, classes=8, videos_per_class=2, seed=3, frames=FRAMES, size=SIZE, workers=2, progress=False)
    return out


def test_files_and_nothing_else(videos):
    files = sorted(p.relative_to(videos) for p in videos.rglob("*") if p.is_file())
    expected = sorted(Path(c) / f"{c}_{i:04d}.mp4" for c in CLASS_NAMES for i in range(2))
    assert files == expected


def test_decodable_with_frame_count_and_size(videos):
    path = videos / "move_left" / "move_left_0001.mp4"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name in ("h264", "mpeg4")
        assert stream.average_rate == synthetic.DEFAULT_FPS
    clip = decode(path)
    assert clip.shape == (FRAMES, *SIZE, 3) and clip.dtype == np.uint8
    assert clip.std() > 10  # a real picture, not a flat or empty frame


def test_deterministic_bytes(videos, tmp_path):
    again = generate(tmp_path / "v", classes=8, videos_per_class=2, seed=3, frames=FRAMES, size=SIZE, workers=1,
                     progress=False)
    assert len(again) == 16
    for path in again:
        assert path.read_bytes() == (videos / path.relative_to(tmp_path / "v")).read_bytes(), path
    other = generate(tmp_path / "w", classes=1, videos_per_class=1, seed=4, frames=FRAMES, size=SIZE,
                     progress=False)
    assert other[0].read_bytes() != (videos / "move_right" / "move_right_0000.mp4").read_bytes()


def test_first_k_classes_and_same_videos_for_any_k(videos, tmp_path):
    paths = generate(tmp_path / "v", classes=3, videos_per_class=1, seed=3, frames=FRAMES, size=SIZE,
                     progress=False)
    assert [p.parent.name for p in paths] == sorted(CLASS_NAMES[:3])
    for path in paths:
        assert path.read_bytes() == (videos / path.parent.name / path.name).read_bytes()


@pytest.mark.parametrize("pair", range(4))
def test_reversal_pairs_are_exact(pair):
    """Class B of a pair is class A played backwards: the same frames, reversed, for the same random draw."""
    a, b = CLASSES[2 * pair], CLASSES[2 * pair + 1]
    assert a.motion == b.motion and not a.reverse and b.reverse
    forward = render_video(a.name, np.random.default_rng(11), FRAMES, SIZE)
    backward = render_video(b.name, np.random.default_rng(11), FRAMES, SIZE)
    np.testing.assert_array_equal(backward, forward[::-1])
    # Hence identical order-free statistics: the per-frame means as a multiset, the time-averaged frame.
    np.testing.assert_array_equal(np.sort(backward.mean(axis=(1, 2, 3))), np.sort(forward.mean(axis=(1, 2, 3))))
    np.testing.assert_allclose(backward.mean(axis=0), forward.mean(axis=0))


def test_encoded_file_is_a_reversed_partner_video(videos):
    """What is on disk for move_left is (up to codec loss) a move_right process video played backwards."""
    left = CLASS_NAMES.index("move_left")
    decoded = decode(videos / "move_left" / "move_left_0001.mp4").astype(np.float32)
    partner = render_video("move_right", video_rng(3, left, 1), FRAMES, SIZE)[::-1].astype(np.float32)
    assert np.abs(decoded - partner).mean() < 8  # codec loss on noisy frames; other videos differ by ~30+
    unrelated = render_video("move_right", video_rng(3, left, 0), FRAMES, SIZE)[::-1].astype(np.float32)
    assert np.abs(decoded - unrelated).mean() > 15


def test_motion_direction_is_recoverable_from_frame_order(videos):
    """An order-aware measurement tells every class from its partner; reversing time flips it."""
    for spec in CLASSES:
        for path in sorted((videos / spec.name).glob("*.mp4")):
            clip = decode(path)
            value = motion_stats(clip)[STAT[spec.motion]]
            sign = -1 if spec.reverse else 1
            assert sign * value > 0, (path.name, value)
            assert sign * motion_stats(clip[::-1])[STAT[spec.motion]] < 0, path.name


def test_speed_is_sane():
    """The object moves a visible but not teleporting amount per frame (pixels, degrees, scale)."""
    for ci, spec in enumerate(CLASSES):
        stats = np.array([motion_stats(render_video(spec.name, video_rng(5, ci, i), FRAMES, SIZE))
                          for i in range(2)])
        value = np.abs(stats[:, STAT[spec.motion]])
        low, high = {"x": (0.3, 4.0), "y": (0.3, 4.0), "rotate": (2.0, 30.0), "scale": (0.015, 0.12)}[spec.motion]
        assert np.all((value > low) & (value < high)), (spec.name, value)


def test_odd_size_is_encoded(tmp_path):
    if synthetic.pick_codec() != "libx264":
        pytest.skip("odd sizes need libx264 (yuv444p)")
    paths = generate(tmp_path / "v", classes=1, videos_per_class=1, seed=0, frames=4, size=(33, 47),
                     progress=False)
    assert decode(paths[0]).shape == (4, 33, 47, 3)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="classes"):
        generate(tmp_path / "a", classes=9, videos_per_class=1)
    with pytest.raises(ValueError, match="frames"):
        generate(tmp_path / "a", classes=1, videos_per_class=1, frames=1)
    with pytest.raises(ValueError, match="unknown class"):
        render_video("jump", np.random.default_rng(0))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        generate(tmp_path / "full", classes=1, videos_per_class=1, frames=4, size=SIZE, progress=False)
    generate(tmp_path / "full", classes=1, videos_per_class=1, frames=4, size=SIZE, overwrite=True, progress=False)
    assert (tmp_path / "full" / "keep.txt").exists()


def test_cli(tmp_path, capsys):
    synthetic.main([str(tmp_path / "v"), "--classes", "2", "--videos-per-class", "1", "--frames", "4",
                    "--size", "32x40", "--workers", "1"])
    assert len(list((tmp_path / "v").rglob("*.mp4"))) == 2
    with pytest.raises(SystemExit) as exc:
        synthetic.main([str(tmp_path / "v"), "--classes", "2", "--frames", "4"])
    assert exc.value.code == 2
    assert "not empty" in capsys.readouterr().err
