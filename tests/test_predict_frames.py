"""``tools.predict --frames N`` (fewer frames per clip over the same span) and ``tools.bench.frames``."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_predict import make_checkpoint, make_dataset, write_video
from tools import predict
from tools.bench import frames as bench_frames
from tools.inference.video_source import open_source
from train.inference import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_frames_spreads_fewer_frames_over_the_same_span(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "m.pth", network="r3d_18", clip_length=8, frame_interval=2)
    video = write_video(tmp_path / "v.mp4", n_frames=40)
    assert predict.main(["--checkpoint", str(ckpt), "--frames", "4", "--clips", "2", "--json", str(video)]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert (result["clip_length"], result["frame_interval"]) == (4, 4) and not result["looped"]
    predictor = predict.Predictor(load_model(ckpt), frames=4)
    with open_source(video) as src:
        direct = predictor.predict(src, clips=2, topk=4)
    assert [r["index"] for r in direct["top"][:1]] == [result["top"][0]["index"]]
    assert predict.clip_interval(8, 2, 4) == 4 and predict.clip_interval(8, 2, 16) == 1
    assert predict.clip_interval(16, 2, 5) == 6  # 5 frames over the 32-frame span
    assert predict.clip_interval(8, 4, 12) == 2  # 3 would reach 34 frames, past the 32-frame window


def test_frames_below_the_models_minimum_is_refused(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "m.pth", network="mict_resnet18", version="v2")
    with pytest.raises(SystemExit) as exc:
        predict.main(["--checkpoint", str(ckpt), "--frames", "1", str(tmp_path / "v.mp4")])
    assert exc.value.code == 2 and "needs at least" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        predict.main(["--checkpoint", str(ckpt), "--frames", "0", str(tmp_path / "v.mp4")])


def test_bench_frames_sweeps_accuracy_and_speed(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds", {"a": ("cycling", "test", 30, 1), "b": ("archery", "test", 24, 2)})
    ckpt = make_checkpoint(tmp_path / "m.pth", network="r3d_18", clip_length=8)
    assert bench_frames.main(["--checkpoint", str(ckpt), "--dataset", str(root), "--frames", "2", "8",
                              "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["frames"] for r in rows] == [2, 8] and [r["frame_interval"] for r in rows] == [8, 2]
    assert all(r["videos"] == 2 and 0 <= r["video_top1"] <= 100 and np.isfinite(r["clips_per_s"]) for r in rows)
    with pytest.raises(SystemExit):
        bench_frames.main(["--checkpoint", str(ckpt), "--dataset", str(root), "--split", "val", "--frames", "2"])
    assert "no videos in split 'val'" in capsys.readouterr().err
