"""The converter's mjpeg encoder: standard JPEG that OpenCV decodes, optimal tables, resume keyed on its setting."""
from __future__ import annotations

import csv
import sqlite3

import cv2
import numpy as np
import pytest

from data.store import open_video
from tests.videos_util import frame_value, frame_values, make_video
from tools import convert, synthetic
from tools.ingest.jpeg_encoders import MjpegEncoder, opencv_encoder


def _yuvj420p(rgb: np.ndarray) -> np.ndarray:
    import av

    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuvj420p").to_ndarray()


def _textured(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    return base


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def test_mjpeg_frames_are_baseline_jpeg_with_optimal_tables_that_opencv_decodes():
    rgb = _textured()
    enc = MjpegEncoder(64, 48, qscale=2)
    jpeg = enc.encode(_yuvj420p(rgb))
    assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
    assert b"\xff\xdd" not in jpeg[:jpeg.index(b"\xff\xda")]  # no restart interval (slice threads would add one)
    assert b"\xff\xc0" in jpeg  # baseline DCT frame
    dec = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert dec.shape == (48, 64, 3) and _psnr(dec[..., ::-1], rgb) > 30
    # Optimal Huffman tables: smaller than OpenCV's standard tables at a similar PSNR on the same frame.
    std = opencv_encoder(95, optimize=False)(np.ascontiguousarray(rgb[..., ::-1]))
    assert len(jpeg) < len(std)


def test_mjpeg_qscale_trades_bytes_for_quality_and_each_frame_is_independent():
    rgb = _textured(seed=1)
    planes = _yuvj420p(rgb)
    fine, coarse = MjpegEncoder(64, 48, 2), MjpegEncoder(64, 48, 20)
    a, b = fine.encode(planes), coarse.encode(planes)
    assert len(b) < len(a)
    dec = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR)[..., ::-1] for j in (a, b)]
    assert _psnr(dec[0], rgb) > _psnr(dec[1], rgb)
    assert fine.encode(planes) == a  # intra only: the same frame gives the same bytes


def test_mjpeg_encoder_refuses_bad_settings_and_frames():
    with pytest.raises(ValueError, match="qscale"):
        MjpegEncoder(64, 48, 1)
    with pytest.raises(ValueError, match="64x48"):
        MjpegEncoder(64, 48, 4).encode(np.zeros((48, 64), np.uint8))


def _meta(video_dir) -> dict[str, str]:
    with open_video(video_dir) as v:
        return dict(v.meta)


def test_converter_with_mjpeg_stores_decodable_frames_and_resumes_on_its_settings(tmp_path):
    src = tmp_path / "videos"
    make_video(src / "walk" / "a.mp4")
    root = tmp_path / "ds"
    args = [str(src), str(root), "--workers", "1", "--jpeg-encoder", "mjpeg", "--qscale", "3"]
    assert convert.main(args) == 0
    d = root / "jpg" / "walk" / "a"
    with open_video(d) as v:
        frames = v.read(list(range(len(v))))
        assert len(v) == 12 and v.frame_size == (32, 48)
    assert all(abs(a - b) <= 4 for a, b in zip(frame_values(frames), [frame_value(i) for i in range(12)]))
    with sqlite3.connect(d / "frames.db") as conn:  # what is stored decodes with plain cv2.imdecode
        blob = conn.execute("SELECT jpeg FROM frames LIMIT 1").fetchone()[0]
    assert cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR).shape == (32, 48, 3)
    meta = _meta(d)
    assert (meta["encoder"], meta["qscale"], meta["quality"], meta["jpeg_optimize"]) == ("mjpeg", "3", "", "1")
    stamp = (d / "frames.db").stat().st_mtime_ns

    assert convert.main(args) == 0  # same settings: skipped
    assert (d / "frames.db").stat().st_mtime_ns == stamp
    assert convert.main([*args[:-1], "5"]) == 0  # another qscale: converted again
    assert _meta(d)["qscale"] == "5"
    assert convert.main(args[:4]) == 0  # back to the default OpenCV encoder: converted again
    meta = _meta(d)
    assert meta["encoder"] == "opencv" and meta["quality"] == "90" and "qscale" not in meta
    stamp = (d / "frames.db").stat().st_mtime_ns
    assert convert.main(args[:4]) == 0  # and an OpenCV database stays complete for an OpenCV run
    assert (d / "frames.db").stat().st_mtime_ns == stamp


def test_mjpeg_converter_on_real_sized_frames_keeps_them_close_to_the_source(tmp_path):
    src = synthetic.generate(tmp_path / "videos", classes=1, videos_per_class=1, frames=4, size=(64, 96),
                             progress=False)[0]
    root = tmp_path / "ds"
    assert convert.main([str(tmp_path / "videos"), str(root), "--workers", "1", "--jpeg-encoder", "mjpeg",
                         "--qscale", "2"]) == 0
    import av

    with av.open(str(src)) as c:
        ref = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    with open_video(root / "jpg" / src.parent.name / src.stem) as v:
        got = v.read(list(range(len(v))))
    assert got.shape == ref.shape and _psnr(got, ref) > 32


def test_bad_qscale_and_mjpeg_with_labels_exit_2(tmp_path, capsys):
    src = tmp_path / "videos"
    make_video(src / "walk" / "a.mp4")
    with pytest.raises(SystemExit) as exc:
        convert.main([str(src), str(tmp_path / "ds"), "--qscale", "40"])
    assert exc.value.code == 2 and "--qscale must be in 2..31" in capsys.readouterr().err
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as f:
        csv.writer(f).writerows([["label", "youtube_id", "time_start", "time_end", "split"]])
    with pytest.raises(SystemExit) as exc:
        convert.main(["--labels", str(labels), "--source-root", str(src), str(tmp_path / "ds"),
                      "--jpeg-encoder", "mjpeg"])
    assert exc.value.code == 2 and "not supported with --labels" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_verify_reconverts_an_mjpeg_database_with_the_mjpeg_encoder(tmp_path):
    import contextlib
    import io

    from tools import verify

    src = tmp_path / "videos"
    make_video(src / "walk" / "a.mp4")
    root = tmp_path / "ds"
    assert convert.main([str(src), str(root), "--workers", "1", "--jpeg-encoder", "mjpeg", "--qscale", "7"]) == 0
    d = root / "jpg" / "walk" / "a"
    with sqlite3.connect(d / "frames.db") as conn:
        conn.execute("DELETE FROM frames WHERE idx = 2")
    with contextlib.redirect_stderr(io.StringIO()):
        assert verify.main([str(root), "--reconvert", str(src)]) == 0
    meta = _meta(d)
    assert (meta["encoder"], meta["qscale"], meta["n_frames"]) == ("mjpeg", "7", "12")


def test_full_range_planes_match_swscale_within_one_level_and_resize_when_asked():
    import av

    from tools.ingest.jpeg_encoders import yuvj420p_planes

    rgb = _textured(seed=2)
    limited = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    fast = yuvj420p_planes(limited, 64, 48)
    slow = limited.to_ndarray(format="yuvj420p")
    assert fast.shape == slow.shape == (72, 64)
    assert int(np.abs(fast.astype(int) - slow.astype(int)).max()) <= 1
    full = limited.reformat(format="yuvj420p")
    assert np.array_equal(yuvj420p_planes(full, 64, 48), full.to_ndarray())  # already full range: as is
    assert yuvj420p_planes(limited, 32, 24).shape == (36, 32)
