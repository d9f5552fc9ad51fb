"""``tools.extract_features --plot``: the 2-D feature map is written and separated classes land apart."""
from __future__ import annotations

import numpy as np
import pytest

from data.labels import Sample, write_classes, write_labels
from data.store import encode_jpeg, write_frames_db
from tests.test_predict import make_checkpoint
from tools import extract_features
from tools.inference.feature_map import project_2d

pytestmark = pytest.mark.usefixtures("one_thread")


def _dark_and_bright_dataset(root, per_class: int = 4):
    """Two classes a model separates without training: dark noisy videos and bright noisy videos."""
    rng = np.random.default_rng(0)
    samples = []
    for label, level in (("dark", 30), ("bright", 220)):
        for i in range(per_class):
            frames = np.clip(level + rng.normal(0, 12, size=(12, 40, 48, 3)), 0, 255).astype(np.uint8)
            vid = f"{label}_{i}"
            write_frames_db(root / "jpg" / label / vid, (encode_jpeg(f, 95) for f in frames),
                            {"fps": 25, "codec": "test", "quality": 95, "source": "generated"})
            samples.append(Sample(vid, label, "val"))
    write_labels(root / "labels" / "all.csv", samples)
    write_classes(root / "classes.txt", ["bright", "dark"])
    return root


def test_plot_is_written_and_separated_classes_land_apart(tmp_path, capsys):
    root = _dark_and_bright_dataset(tmp_path / "ds")
    ckpt = make_checkpoint(tmp_path / "m.pth", network="r3d_18", classes=["bright", "dark"], clip_length=4)
    png = tmp_path / "maps" / "map.png"
    assert extract_features.main(["--checkpoint", str(ckpt), "--dataset", str(root), "--out",
                                  str(tmp_path / "f.npz"), "--plot", str(png), "--workers", "0",
                                  "--device", "cpu"]) == 0
    assert "8 videos in 2-D" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    z = np.load(tmp_path / "f.npz")
    xy, explained = project_2d(z["features"])
    dark = z["label_names"] == "dark"
    # the first principal axis splits the classes: every dark video on one side of every bright one
    a, b = xy[dark, 0], xy[~dark, 0]
    assert a.max() < b.min() or b.max() < a.min()
    gap = max(b.min() - a.max(), a.min() - b.max())
    assert gap > 0.5 * max(np.ptp(a), np.ptp(b))
    assert 0 < explained <= 1


def test_projection_is_pca_with_fixed_signs():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 5)) * [10, 3, 1, 0.1, 0.1]
    xy, explained = project_2d(x)
    assert np.allclose(np.abs(np.corrcoef(xy[:, 0], x[:, 0])[0, 1]), 1, atol=0.01)
    assert explained > 0.95
    assert np.allclose(project_2d(x)[0], xy) and np.allclose(project_2d(x[::-1])[0], xy[::-1], atol=1e-4)
    with pytest.raises(ValueError, match="at least 2 videos"):
        project_2d(x[:1])
