"""tools.predict / tools.inference.video_source: raw-video prediction equals the evaluation path, timelines, bad input.

Everything is generated in tmp_path: tiny mp4 files written with PyAV, frame stores written by the real writer,
and checkpoints of tiny-width models in the trainer's documented format.
"""
from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from data.dataset import VideoDataset
from data.labels import Sample, write_classes, write_labels
from data.loader import build_loader
from data.store import encode_jpeg, write_frames_db
from data.transforms import MEAN, STD, default_resize_short, val_transform
from network import build_model
from tools import predict
from tools.inference.video_source import PyAVSource, VideoSourceError, assemble_clips, open_source
from train.checkpoint import FORMAT

CLASSES = ["archery", "bowling", "cycling", "diving"]


pytestmark = pytest.mark.usefixtures("one_thread")


# -- generated data (also used by test_features.py) -----------------------------------------------------------
def synthetic_frames(n: int, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """`n` RGB frames of a coloured square moving over a gradient; `seed` picks colour, speed and direction."""
    rng = np.random.default_rng(seed)
    colour = rng.integers(60, 256, size=3)
    speed = rng.uniform(1.0, 3.0) * rng.choice([-1, 1])
    yy, xx = np.mgrid[0:height, 0:width]
    background = np.stack([xx * 200 // width, yy * 200 // height, np.full_like(xx, 40)], axis=-1)
    frames = np.empty((n, height, width, 3), dtype=np.uint8)
    side = height // 3
    for i in range(n):
        frame = background.copy()
        x0 = int((width / 2 + speed * i) % (width - side))
        y0 = int((height / 3 + 0.5 * speed * i) % (height - side))
        frame[y0:y0 + side, x0:x0 + side] = colour
        frames[i] = frame
    return frames


def write_video(path: str | Path, n_frames: int = 40, fps: int = 25, seed: int = 0, height: int = 48,
                width: int = 64) -> Path:
    """A real mpeg4 .mp4 (PyAV encoder) of `synthetic_frames`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"qscale": "2"}
        for rgb in synthetic_frames(n_frames, height, width, seed):
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def convert_video(video: str | Path, root: str | Path, label: str, video_id: str) -> Path:
    """What the converter does: decode the file (PyAV), store JPEGs in ``<root>/jpg/<label>/<id>/frames.db``."""
    source = PyAVSource(video)
    frames = source.read(range(source.n_frames))
    out = Path(root) / "jpg" / label / video_id
    write_frames_db(out, (encode_jpeg(f, 95) for f in frames),
                    {"fps": source.fps, "codec": "test", "quality": 95, "source": Path(video).name})
    return out


def make_dataset(root: str | Path, videos: dict[str, tuple[str, str, int, int]], classes=CLASSES) -> Path:
    """A dataset root from ``{video_id: (label, split, n_frames, seed)}``; returns the root."""
    root = Path(root)
    samples = []
    for vid, (label, split, n, seed) in videos.items():
        write_video(root / "raw" / f"{vid}.mp4", n_frames=n, seed=seed)
        convert_video(root / "raw" / f"{vid}.mp4", root, label, vid)
        samples.append(Sample(vid, label, split))
    write_labels(root / "labels" / "all.csv", samples)
    write_classes(root / "classes.txt", classes)
    return root


def make_checkpoint(path: str | Path, network: str = "r3d_18", classes=CLASSES, clip_length: int = 8,
                    crop_size: int = 32, frame_interval: int = 2, seed: int = 0, **model_kwargs) -> Path:
    """A checkpoint in the trainer's format (docs/ARCHITECTURE.md) holding a tiny-width random model."""
    torch.manual_seed(seed)
    kwargs = {"width_mult": 0.125, **model_kwargs}
    model = build_model(network, len(classes) or 4, **kwargs)
    ckpt = {
        "format": FORMAT, "network": network, "num_classes": len(classes) or 4, "classes": list(classes),
        "model_kwargs": kwargs,
        "preprocess": {"clip_length": clip_length, "crop_size": crop_size, "frame_interval": frame_interval,
                       "resize_short": default_resize_short(crop_size), "mean": list(MEAN), "std": list(STD)},
        "model": model.state_dict(), "optimizer": {}, "scheduler": {}, "scaler": {}, "epoch": 1,
        "multigrid": {}, "rng": {}, "args": {}, "metrics": {},
    }
    torch.save(ckpt, path)
    return Path(path)


def _model_from_checkpoint(ckpt_path: Path):
    """The checkpoint dict and its model, in eval mode."""
    ckpt = torch.load(ckpt_path, weights_only=True)
    model = build_model(ckpt["network"], ckpt["num_classes"], **ckpt["model_kwargs"])
    model.load_state_dict(ckpt["model"])
    return ckpt, model.eval()


def eval_path_probs(root: Path, ckpt_path: Path, clips_per_video: int) -> np.ndarray:
    """The evaluation path: val clips of `VideoDataset` on the converted db, model forward, softmax mean per video."""
    ckpt, model = _model_from_checkpoint(ckpt_path)
    pre = ckpt["preprocess"]
    ds = VideoDataset(root, split="val", clip_length=pre["clip_length"], frame_interval=pre["frame_interval"],
                      transform=val_transform(pre["crop_size"], pre["resize_short"], mean=pre["mean"],
                                              std=pre["std"]),
                      clips_per_video=clips_per_video)
    sums = np.zeros((len(ds.samples), ckpt["num_classes"]))
    with torch.inference_mode():
        for clips, _, video in build_loader(ds, batch_size=4, train=False, workers=0):
            probs = torch.softmax(model(clips), dim=1).numpy()
            np.add.at(sums, video.numpy(), probs)
    return sums / clips_per_video


def fit_head(ckpt_path: Path, root: Path, clips_per_video: int, margin: float = 4.0) -> None:
    """Give the random model a trained-like head: class ``c`` scores high on the features of its val videos.

    A random tiny network is nearly uniform over classes, which would make "same top-1" trivially true; with
    this head each video has its own, clear top-1 class and the comparison means something.
    """
    ckpt, model = _model_from_checkpoint(ckpt_path)
    pre = ckpt["preprocess"]
    ds = VideoDataset(root, split="val", clip_length=pre["clip_length"], frame_interval=pre["frame_interval"],
                      transform=val_transform(pre["crop_size"], pre["resize_short"]), clips_per_video=clips_per_video)
    with torch.inference_mode():
        feats = torch.stack([model.forward_features(ds[i][0][None])[0] for i in range(len(ds))])
    per_video = feats.view(len(ds.samples), clips_per_video, -1).mean(1)
    centred = per_video - per_video.mean(0)
    weight, bias = torch.zeros_like(model.fc.weight), torch.zeros_like(model.fc.bias)
    for v, label in enumerate(ds.labels):
        weight[label] = margin * centred[v] / centred[v].norm() ** 2
        bias[label] = -weight[label] @ per_video.mean(0)  # logit = margin * <centred feature, own direction>
    ckpt["model"]["fc.weight"], ckpt["model"]["fc.bias"] = weight, bias
    torch.save(ckpt, ckpt_path)


def all_probs(result: dict) -> np.ndarray:
    probs = np.zeros(len(CLASSES))
    for row in result["top"]:
        probs[row["index"]] = row["prob"]
    return probs


# -- tests -----------------------------------------------------------------------------------------------------
def test_video_source_reads_raw_video_and_store(tmp_path):
    video = write_video(tmp_path / "v.mp4", n_frames=20)
    store = convert_video(video, tmp_path / "root", "archery", "v")
    with open_source(video) as raw, open_source(store) as db:
        assert (raw.n_frames, db.n_frames) == (20, 20)
        assert raw.fps == pytest.approx(25.0) and db.fps == pytest.approx(25.0)
        a, b = raw.read([3, 0, 3, 19]), db.read([3, 0, 3, 19])
        assert a.shape == b.shape == (4, 48, 64, 3) and a.dtype == np.uint8
        assert np.array_equal(a[0], a[2])  # repeats are kept
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 3  # same frames, only JPEG apart
        ref = synthetic_frames(20)
        assert np.abs(a[1].astype(int) - ref[0].astype(int)).mean() < 8  # RGB order, right frame
        with pytest.raises(VideoSourceError, match="out of range"):
            raw.read([20])


def test_predict_matches_evaluation_path(tmp_path):
    clips = 3
    root = make_dataset(tmp_path / "ds", {"v0": ("cycling", "val", 40, 1), "v1": ("diving", "val", 33, 2)})
    ckpt = make_checkpoint(tmp_path / "m.pth")
    fit_head(ckpt, root, clips)
    expected = eval_path_probs(root, ckpt, clips)
    assert np.argmax(expected, axis=1).tolist() == [2, 3]  # cycling, diving: each video its own class
    videos = [root / "jpg" / "cycling" / "v0", root / "jpg" / "diving" / "v1",
              root / "raw" / "v0.mp4", root / "raw" / "v1.mp4"]
    results = predict.predict_videos(ckpt, videos, topk=len(CLASSES), clips=clips)
    assert all(r["ok"] for r in results)
    for r, exp in zip(results, [*expected, *expected]):
        assert r["top"][0]["index"] == int(np.argmax(exp)), r["video"]
        assert r["top"][0]["label"] == CLASSES[int(np.argmax(exp))]
    # Same frames (the converted db): the very same numbers as evaluation.
    np.testing.assert_allclose(all_probs(results[0]), expected[0], atol=1e-5)
    np.testing.assert_allclose(all_probs(results[1]), expected[1], atol=1e-5)
    # Raw video: decoded directly, only the JPEG step of the converter apart.
    np.testing.assert_allclose(all_probs(results[2]), expected[0], atol=0.1)
    np.testing.assert_allclose(all_probs(results[3]), expected[1], atol=0.1)
    assert [row["rank"] for row in results[2]["top"]] == [1, 2, 3, 4]
    assert sum(row["prob"] for row in results[2]["top"]) == pytest.approx(1.0, abs=1e-5)


def test_timeline_windows_times_png_and_single_decode(tmp_path, monkeypatch):
    video = write_video(tmp_path / "walk.mp4", n_frames=50, fps=25)
    ckpt = make_checkpoint(tmp_path / "m.pth")
    decodes = []
    original = PyAVSource.iter_frames

    def counting(self, indices):
        decodes.append(self.path)
        return original(self, indices)

    monkeypatch.setattr(PyAVSource, "iter_frames", counting)
    (r,) = predict.predict_videos(ckpt, [video], topk=2, clips=2, timeline=True, window=10, stride=4,
                                  out=tmp_path / "out" / "preds.json")
    assert decodes == [str(video)]  # clips and all windows from one decoding pass
    starts = list(range(0, 50 - 10 + 1, 4))
    assert len(r["timeline"]) == (50 - 10) // 4 + 1 == len(starts) == 11
    for row, s in zip(r["timeline"], starts):
        assert (row["start_frame"], row["end_frame"]) == (s, s + 10)
        assert row["start_s"] == pytest.approx(s / 25) and row["end_s"] == pytest.approx((s + 10) / 25)
        assert row["label"] == CLASSES[row["index"]] and 0 < row["prob"] <= 1
    png = Path(r["timeline_png"])
    assert png == tmp_path / "out" / "preds.walk.timeline.png"
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 50 and image.shape[1] > 100


def test_timeline_window_matches_clip_prediction(tmp_path):
    """A window equal to the training clip span, placed where the single eval clip is, gives the same output."""
    video = write_video(tmp_path / "v.mp4", n_frames=16)
    ckpt = make_checkpoint(tmp_path / "m.pth", clip_length=8, frame_interval=2)
    (r,) = predict.predict_videos(ckpt, [video], topk=4, clips=1, timeline=True, out=tmp_path)
    assert Path(r["timeline_png"]) == tmp_path / "v.timeline.png"
    assert r["window"] == r["stride"] == 16 and len(r["timeline"]) == 1  # default window: T x interval
    row = r["timeline"][0]
    assert row["index"] == r["top"][0]["index"] and row["prob"] == pytest.approx(r["top"][0]["prob"], abs=1e-6)


def test_window_helpers():
    assert predict.window_starts(100, 32, 16) == [0, 16, 32, 48, 64, 68]  # the last one ends on frame 99
    assert predict.window_starts(96, 32, 16) == [0, 16, 32, 48, 64]
    assert predict.window_starts(20, 32, 16) == [0]
    assert predict.window_indices(10, 16, 8, 100).tolist() == [10, 12, 14, 16, 18, 20, 22, 24]
    assert predict.window_indices(0, 16, 8, 5).tolist() == [0, 2, 4, 1, 3, 0, 2, 4]  # loops in short videos


def test_assemble_clips_frees_frames(tmp_path):
    video = write_video(tmp_path / "v.mp4", n_frames=30)
    clips = [np.arange(s, s + 8) for s in range(0, 23, 4)] + [np.array([0, 29, 0, 29])]
    with open_source(video) as src:
        got = dict(assemble_clips(src, clips))
        direct = src.read(np.concatenate(clips))
    assert sorted(got) == list(range(len(clips)))
    np.testing.assert_array_equal(np.concatenate([got[k] for k in range(len(clips))]), direct)


def test_short_video_loops_with_warning(tmp_path, caplog):
    video = write_video(tmp_path / "short.mp4", n_frames=6)
    ckpt = make_checkpoint(tmp_path / "m.pth", clip_length=8, frame_interval=2)
    (r,) = predict.predict_videos(ckpt, [video], topk=1, clips=2, timeline=True, out=tmp_path)
    assert r["ok"] and r["looped"] and r["n_frames"] == 6
    assert any("shorter than one clip" in w for w in r["warnings"])
    assert "loops" in caplog.text
    (row,) = r["timeline"]  # one (looped) window over the whole video
    assert (row["start_frame"], row["end_frame"], row["end_s"]) == (0, 6, pytest.approx(6 / 25))


def test_checkpoint_without_class_names(tmp_path, caplog):
    video = write_video(tmp_path / "v.mp4", n_frames=20)
    ckpt = make_checkpoint(tmp_path / "m.pth", classes=[])
    (r,) = predict.predict_videos(ckpt, [video], topk=4, clips=1)
    assert r["ok"] and sorted(row["label"] for row in r["top"]) == ["0", "1", "2", "3"]
    assert "no class names" in caplog.text and any("no class names" in w for w in r["warnings"])


def test_cli_bad_videos_do_not_stop_the_others(tmp_path, capsys):
    good = write_video(tmp_path / "good.mp4", n_frames=20)
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n")
    ckpt = make_checkpoint(tmp_path / "m.pth")
    code = predict.main(["--checkpoint", str(ckpt), "--json", "--clips", "1", "--device", "cpu",
                         str(tmp_path / "missing.mp4"), str(text), str(good)])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert [r["ok"] for r in out] == [False, False, True]
    assert "no such file" in out[0]["error"] and "missing.mp4" in out[0]["error"]
    assert "not a readable video" in out[1]["error"] and "notes.txt" in out[1]["error"]
    assert out[2]["top"][0]["label"] in CLASSES


def test_cli_table_output(tmp_path, capsys):
    video = write_video(tmp_path / "v.mp4", n_frames=20)
    ckpt = make_checkpoint(tmp_path / "m.pth")
    assert predict.main(["--checkpoint", str(ckpt), "--topk", "3", "--clips", "1", "--timeline", "--window", "8",
                         "--out", str(tmp_path / "res.json"), str(video)]) == 0
    text = capsys.readouterr().out
    assert "v.mp4" in text and "timeline: 3 window(s) of 8 frames" in text and " 3. " in text  # 0, 8, 12
    saved = json.loads((tmp_path / "res.json").read_text())
    assert saved[0]["timeline_png"] == str(tmp_path / "res.v.timeline.png")


@pytest.mark.parametrize("problem", ["unknown-network", "missing", "garbage"])
def test_cli_bad_checkpoint(tmp_path, capsys, problem):
    video = write_video(tmp_path / "v.mp4", n_frames=20)
    ckpt = tmp_path / "m.pth"
    if problem == "unknown-network":
        make_checkpoint(ckpt)
        raw = torch.load(ckpt, weights_only=True)
        raw["network"] = "resnet_from_mars"
        torch.save(raw, ckpt)
    elif problem == "garbage":
        ckpt.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(SystemExit) as exc:
        predict.main(["--checkpoint", str(ckpt), str(video)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(ckpt) in err
    if problem == "unknown-network":
        assert "resnet_from_mars" in err and "r3d_18" in err  # names the valid models
