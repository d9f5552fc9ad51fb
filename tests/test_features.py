"""tools.extract_features: shapes, per-clip layout, agreement with the model's own forward_features."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from data.dataset import VideoDataset
from data.transforms import val_transform
from network import build_model
from tests.test_predict import CLASSES, make_checkpoint, make_dataset
from tools import extract_features

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("features") / "ds"
    return make_dataset(root, {"a": ("cycling", "val", 30, 1), "b": ("archery", "val", 24, 2),
                               "c": ("diving", "train", 20, 3)})


def test_features_per_video_and_per_clip(tmp_path, dataset, capsys):
    ckpt = make_checkpoint(tmp_path / "m.pth")
    out = tmp_path / "feats" / "val.npz"
    assert extract_features.main(["--checkpoint", str(ckpt), "--dataset", str(dataset), "--split", "val",
                                  "--out", str(out), "--per-clip", "--clips-per-video", "3", "--workers", "0",
                                  "--device", "cpu"]) == 0
    assert "features 2 videos x" in capsys.readouterr().out
    z = np.load(out)
    raw = torch.load(ckpt, weights_only=True)
    model = build_model(raw["network"], raw["num_classes"], **raw["model_kwargs"])
    model.load_state_dict(raw["model"])
    model.eval()
    f = model.num_features
    assert z["features"].shape == (2, f) and z["features"].dtype == np.float32
    assert z["clip_features"].shape == (6, f)
    assert z["clip_video_index"].tolist() == [0, 0, 0, 1, 1, 1] and z["clip_index"].tolist() == [0, 1, 2] * 2
    assert z["video_ids"].tolist() == ["a", "b"] and z["label_names"].tolist() == ["cycling", "archery"]
    assert z["classes"].tolist() == CLASSES and z["labels"].tolist() == [2, 0]
    assert str(z["network"]) == "r3d_18" and str(z["split"]) == "val"
    np.testing.assert_allclose(z["features"], z["clip_features"].reshape(2, 3, f).mean(1), rtol=1e-6)
    # The same numbers as the model's forward_features on the evaluation clips.
    pre = raw["preprocess"]
    ds = VideoDataset(dataset, split="val", clip_length=pre["clip_length"], frame_interval=pre["frame_interval"],
                      transform=val_transform(pre["crop_size"], pre["resize_short"]), clips_per_video=3)
    with torch.inference_mode():
        direct = model.forward_features(torch.stack([ds[i][0] for i in (0, 4)])).numpy()
    np.testing.assert_allclose(z["clip_features"][[0, 4]], direct, rtol=1e-4, atol=1e-5)


def test_features_without_per_clip_and_all_splits(tmp_path, dataset):
    ckpt = make_checkpoint(tmp_path / "m.pth")
    out = tmp_path / "all.npz"
    assert extract_features.main(["--checkpoint", str(ckpt), "--dataset", str(dataset), "--split", "all",
                                  "--out", str(out), "--workers", "0", "--device", "cpu"]) == 0
    z = np.load(out)
    assert sorted(z.files) == ["checkpoint", "classes", "features", "label_names", "labels", "network",
                               "preprocess", "split", "video_ids"]
    assert z["features"].shape[0] == 3 and sorted(z["video_ids"].tolist()) == ["a", "b", "c"]


def test_features_bad_dataset(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "m.pth")
    with pytest.raises(SystemExit) as exc:
        extract_features.main(["--checkpoint", str(ckpt), "--dataset", str(tmp_path / "nowhere"),
                               "--out", str(tmp_path / "x.npz"), "--workers", "0"])
    assert exc.value.code == 2
    assert "error: " in capsys.readouterr().err and not (tmp_path / "x.npz").exists()
