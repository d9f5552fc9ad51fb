"""Lossless benchmark sources: exact round trip, 360 px tall with an even width, groups found by folder."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from tools import synthetic
from tools.bench import lossless_sources
from tools.bench.lossless_sources import decoded_planes, find_sources, scaled_size, write_lossless


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("src")
    return synthetic.generate(out, classes=1, videos_per_class=1, frames=6, size=(30, 50), progress=False)[0]


def _expected_planes(src: Path, size: tuple[int, int]) -> list[np.ndarray]:
    with av.open(str(src)) as c:
        return [f.reformat(width=size[0], height=size[1], format="yuv420p", interpolation="BICUBIC").to_ndarray()
                for f in c.decode(video=0)]


def test_scaled_size_keeps_aspect_with_even_width_and_exact_height():
    assert scaled_size(640, 272, 360) == (848, 360)
    assert scaled_size(176, 144, 360) == (440, 360)
    assert scaled_size(1280, 720, 360) == (640, 360)
    assert scaled_size(175, 143, None) == (174, 142)
    with pytest.raises(ValueError):
        scaled_size(0, 10, 360)


def test_prepared_file_is_360_tall_even_wide_and_decodes_to_exactly_the_frames_written(clip, tmp_path):
    prepared = write_lossless(clip, tmp_path / "out" / "video", 360)
    assert prepared.path.suffix == ".mp4" and prepared.codec == "libx264"
    assert (prepared.width, prepared.height) == (600, 360) and prepared.width % 2 == 0
    got = decoded_planes(prepared.path)
    expected = _expected_planes(clip, (600, 360))
    assert prepared.frames == len(got) == len(expected) == 6
    assert all(g.shape == (540, 600) and np.array_equal(g, e) for g, e in zip(got, expected))


def test_native_size_copy_keeps_the_frame_size(clip, tmp_path):
    prepared = write_lossless(clip, tmp_path / "native", None)
    assert (prepared.width, prepared.height) == (50, 30)
    assert all(np.array_equal(g, e) for g, e in zip(decoded_planes(prepared.path), _expected_planes(clip, (50, 30))))


def test_a_codec_that_loses_pixels_is_replaced_by_the_next_lossless_one(clip, tmp_path, monkeypatch):
    monkeypatch.setattr(lossless_sources, "LOSSLESS_CODECS",
                        (("libx264", ".mp4", {"crf": "45"}), ("ffv1", ".avi", {})))
    prepared = write_lossless(clip, tmp_path / "video", 360)
    assert prepared.codec == "ffv1" and prepared.path.suffix == ".avi"
    assert not (tmp_path / "video.mp4").exists()
    assert all(np.array_equal(g, e) for g, e in zip(decoded_planes(prepared.path), _expected_planes(clip, (600, 360))))


def test_no_lossless_codec_is_a_clear_error_naming_the_source(clip, tmp_path, monkeypatch):
    monkeypatch.setattr(lossless_sources, "LOSSLESS_CODECS", (("libx264", ".mp4", {"crf": "45"}),))
    with pytest.raises(ValueError, match=f"{clip.name}.*no lossless codec.*frame 0 differs"):
        write_lossless(clip, tmp_path / "video", 360)
    assert not list(tmp_path.iterdir())


def test_a_file_that_is_not_a_video_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(ValueError, match="bad.mp4: cannot read as video"):
        write_lossless(bad, tmp_path / "out", 360)


def test_sources_are_grouped_by_sub_folder_with_unique_names(tmp_path):
    for rel in ("camera/bikes.mp4", "camera/more/bikes.mp4", "animation/bunny.mkv", "loose.avi",
                "camera/notes.txt", ".hidden/x.mp4", "empty/readme.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    groups = find_sources(tmp_path)
    assert groups == {
        "animation": {"bunny": tmp_path / "animation/bunny.mkv"},
        "camera": {"bikes": tmp_path / "camera/bikes.mp4", "more_bikes": tmp_path / "camera/more/bikes.mp4"},
        tmp_path.name: {"loose": tmp_path / "loose.avi"},
    }
