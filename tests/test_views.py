"""Multi-view testing: the 3-crop views, the view count of the tools and the softmax averaging over views."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from data.views import MultiViewTransform, average_views, flatten_views, view_offsets
from tests.test_evaluate import LABELS, LOGITS, LookupModel, _write_checkpoint
from tests.train_util import make_store
from tools import evaluate as ev_tool
from train.trainer import evaluate

torch.set_num_threads(1)


def _ramp(t: int, h: int, w: int, axis: int) -> np.ndarray:
    """Frames whose red channel is the pixel's column (axis 1) or row (axis 0) index."""
    idx = np.arange(w if axis == 1 else h, dtype=np.uint8)
    plane = np.broadcast_to(idx[None, :] if axis == 1 else idx[:, None], (h, w))
    clip = np.zeros((t, h, w, 3), np.uint8)
    clip[..., 0] = plane
    return clip


def _red(view: torch.Tensor) -> np.ndarray:
    # undo the normalisation of channel 0 back to 0..255 values
    return (view[0].numpy() * 0.22803 + 0.43216) * 255.0


def test_three_full_height_crops_are_left_centre_right_of_landscape_frames():
    assert view_offsets(100, 32, 3) == [0, 34, 68] and view_offsets(100, 32, 1) == [34]
    clip = _ramp(4, 32, 96, axis=1)  # already at the crop size on the short side: no resize
    views = MultiViewTransform(32, crops=3)(clip)
    assert views.shape == (3, 3, 4, 32, 32)
    for view, start in zip(views, (0, 32, 64)):
        red = _red(view)
        assert np.allclose(red[:, :, 0], start, atol=0.5) and np.allclose(red[:, :, -1], start + 31, atol=0.5)
        assert np.allclose(red[:, 0, :], red[:, -1, :])  # full height: every row the same


def test_three_crops_of_portrait_frames_are_top_centre_bottom_after_resizing_the_short_side():
    clip = _ramp(2, 128, 64, axis=0)  # portrait, short side 64 -> resized to 32 x 64 (w x h)
    views = MultiViewTransform(32, crops=3)(clip)
    assert views.shape == (3, 3, 2, 32, 32)
    tops = [_red(v)[0, 0, 0] for v in views]
    bottoms = [_red(v)[0, -1, 0] for v in views]
    assert tops[0] < 4 and bottoms[-1] > 123  # the first view starts at the top, the last ends at the bottom
    assert tops[0] < tops[1] < tops[2]
    one = MultiViewTransform(32, crops=1, resize_short=37)(clip)
    assert one.shape == (1, 3, 2, 32, 32)


def test_evaluate_averages_the_softmax_over_every_view_of_a_video():
    # Two clips (videos 0 and 1) of two views each; LookupModel scores view i with LOGITS[i].
    clips = torch.arange(4.0).view(2, 2, 1, 1, 1, 1).expand(2, 2, 3, 2, 4, 4)
    labels, videos = LABELS[[0, 2]], torch.tensor([0, 1])
    r = evaluate(LookupModel(), [(clips, labels, videos)], num_videos=2, num_classes=3, device=torch.device("cpu"))
    assert r.clips == 4 and r.videos == 2
    expected = torch.stack([LOGITS[[0, 1]].softmax(1).mean(0), LOGITS[[2, 3]].softmax(1).mean(0)])
    assert np.allclose(r.video_probs, expected.numpy(), atol=1e-6)
    flat, lab, vid = flatten_views(clips, labels, videos)
    assert flat.shape == (4, 3, 2, 4, 4) and lab.tolist() == [0, 0, 2, 2] and vid.tolist() == [0, 0, 1, 1]
    assert torch.allclose(average_views(LOGITS.softmax(1), 2), expected)
    with pytest.raises(ValueError):
        average_views(LOGITS[:3], 2)


def test_evaluate_tool_counts_clips_times_crops_views(tmp_path, capsys):
    store = make_store(tmp_path / "data", classes=2, videos_per_class=3, size=(32, 48))
    classes = (store / "classes.txt").read_text().split()
    ckpt = _write_checkpoint(tmp_path / "m.pth", classes)
    assert ev_tool.main(["--checkpoint", str(ckpt), "--dataset", str(store), "--clips-per-video", "2",
                         "--crops", "3", "--workers", "0", "--batch-size", "2", "--split", "train"]) == 0
    assert "clips per video: 2 x 3 crops" in capsys.readouterr().out
    report = json.loads((tmp_path / "eval_train.json").read_text())
    assert report["crops"] == 3 and report["clips"] == 6 * report["videos"] > 0


def test_predict_and_extract_features_average_the_same_three_crop_views_as_evaluate(tmp_path):
    from data.dataset import VideoDataset
    from tests.test_predict import make_checkpoint, make_dataset
    from tools import extract_features, predict
    from tools.inference.video_source import open_source
    from train.inference import load_model
    from train.multiview import view_transform

    root = make_dataset(tmp_path / "ds", {"v0": ("cycling", "val", 40, 1), "v1": ("diving", "val", 33, 2)})
    ckpt = make_checkpoint(tmp_path / "m.pth")
    result, _ = ev_tool.evaluate_checkpoint(ckpt, root, split="val", clips_per_video=2, crops=3, workers=0)
    assert result.clips == 2 * 2 * 3
    predictor = predict.Predictor.from_checkpoint(ckpt, "cpu", crops=3)
    with open_source(str(root / "jpg" / "cycling" / "v0"), predictor.transform.min_short_side) as source:
        r = predictor.predict(source, clips=2, topk=4)
    assert r["crops"] == 3
    probs = {row["index"]: row["prob"] for row in r["top"]}
    np.testing.assert_allclose([probs[i] for i in range(4)], result.video_probs[0], atol=1e-5)

    loaded = load_model(ckpt, "cpu")
    z = extract_features.extract_features(loaded, root, split="val", clips_per_video=2, crops=3, progress=False)
    pre = loaded.preprocess
    ds = VideoDataset(root, split="val", clip_length=pre["clip_length"], frame_interval=pre["frame_interval"],
                      transform=view_transform(pre, 3), clips_per_video=2, train=False)
    views = ds[0][0]  # (3 crops, C, T, S, S) of video 0, clip 0
    with torch.inference_mode():
        direct = loaded.model.forward_features(views).mean(0).numpy()
    np.testing.assert_allclose(z["clip_features"][0], direct, rtol=1e-4, atol=1e-5)
    assert z["clip_features"].shape[0] == 4 and z["features"].shape[0] == 2
