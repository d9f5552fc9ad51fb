"""``tools.predict --frames N`` (fewer frames per clip over the same span) and ``tools.bench.frames``."""
from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch

from data.store import encode_jpeg, write_frames_db
from data.transforms import MEAN, STD
from tests.test_predict import make_checkpoint, make_dataset
from tools import predict
from tools.bench import frames as bench_frames

pytestmark = pytest.mark.usefixtures("one_thread")


def _numbered_video(video_dir, n_frames: int = 40):
    """A converted video whose frame i is flat grey ``6 * i``: the pixels a model sees name the frame."""
    frames = (np.arange(n_frames, dtype=np.uint8) * 6)[:, None, None, None].repeat(48, 1).repeat(64, 2).repeat(3, 3)
    write_frames_db(video_dir, (encode_jpeg(f, 95) for f in frames), {"fps": 25, "source": "generated"})
    return video_dir


@contextlib.contextmanager
def _model_inputs():
    """Records every clip batch a model is called on (each module sees it; kept once, from the outermost)."""
    calls: list[torch.Tensor] = []

    def record(module, args):
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and x.ndim == 5 and x.shape[1] == 3 and \
                not any(x.data_ptr() == c.data_ptr() for c in calls[-1:]):
            calls.append(x)

    hook = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        yield calls
    finally:
        hook.remove()


def _frames_seen(calls: list[torch.Tensor]) -> list[list[int]]:
    """The frame numbers of each clip in the recorded model inputs (un-normalised green channel / 6)."""
    return [((clip[1] * STD[1] + MEAN[1]) * 255 / 6).mean(dim=(1, 2)).round().int().tolist()
            for x in calls for clip in x]


def test_frames_spreads_fewer_frames_over_the_same_span(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "m.pth", network="r3d_18", clip_length=8, frame_interval=2)
    video = _numbered_video(tmp_path / "v")
    with _model_inputs() as first:
        assert predict.main(["--checkpoint", str(ckpt), "--frames", "4", "--clips", "2", "--json", str(video)]) == 0
    with _model_inputs() as calls:
        assert predict.main(["--checkpoint", str(ckpt), "--clips", "1", "--json", str(video)]) == 0
    result = json.loads(capsys.readouterr().out.split("\n]")[0] + "]")[0]
    assert (result["clip_length"], result["frame_interval"]) == (4, 4) and not result["looped"]
    # 2 evenly spaced clips of 4 frames, 4 apart: each covers 13 of the 16 frames a model clip (8 every 2) covers.
    seen = _frames_seen(first)
    assert len(seen) == 2 and all(len(c) == 4 for c in seen), seen
    assert all(np.diff(c).tolist() == [4, 4, 4] for c in seen), seen
    assert seen[0][0] < seen[1][0] and seen[1][-1] <= 39, seen
    # Without --frames the model's own clip: 8 frames, 2 apart.
    [full] = _frames_seen(calls)
    assert np.diff(full).tolist() == [2] * 7, full
    assert predict.clip_interval(8, 2, 4) == 4 and predict.clip_interval(8, 2, 16) == 1
    assert predict.clip_interval(16, 2, 5) == 6  # 5 frames over the 32-frame span
    assert predict.clip_interval(8, 4, 12) == 2  # 3 would reach 34 frames, past the 32-frame window


def test_cli_stride_places_the_timeline_windows(tmp_path, capsys):
    """`--timeline --window 10 --stride 4` on 40 frames: windows start every 4 frames, plus one ending on the last
    frame; each window's clip is made of frames inside it. Without --stride the windows do not overlap."""
    ckpt = make_checkpoint(tmp_path / "m.pth", network="r3d_18", clip_length=8, frame_interval=2)
    video = _numbered_video(tmp_path / "v")
    with _model_inputs() as calls:
        assert predict.main(["--checkpoint", str(ckpt), "--clips", "1", "--timeline", "--window", "10",
                             "--stride", "4", "--json", "--out", str(tmp_path / "p.json"), str(video)]) == 0
    [result] = json.loads(capsys.readouterr().out.split("\n]")[0] + "]")
    assert result["stride"] == 4
    assert [(w["start_frame"], w["end_frame"]) for w in result["timeline"]] == \
        [(0, 10), (4, 14), (8, 18), (12, 22), (16, 26), (20, 30), (24, 34), (28, 38), (30, 40)]
    # The model saw the video-level clip (8 frames every 2, centred) and, per window, 8 frames spread over its 10.
    starts = [w["start_frame"] for w in result["timeline"]]
    expected = [list(range(12, 28, 2))] + [[s + o for o in (0, 1, 2, 3, 5, 6, 7, 8)] for s in starts]
    assert sorted(_frames_seen(calls)) == sorted(expected)
    assert predict.main(["--checkpoint", str(ckpt), "--clips", "1", "--timeline", "--window", "10", "--json",
                         "--out", str(tmp_path / "q.json"), str(video)]) == 0
    [plain] = json.loads(capsys.readouterr().out.split("\n]")[0] + "]")
    assert [w["start_frame"] for w in plain["timeline"]] == [0, 10, 20, 30]


def test_frames_below_the_models_minimum_is_refused(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "m.pth", network="mict_resnet18", version="v2")
    with pytest.raises(SystemExit) as exc:
        predict.main(["--checkpoint", str(ckpt), "--frames", "1", str(tmp_path / "v.mp4")])
    assert exc.value.code == 2 and "needs at least" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        predict.main(["--checkpoint", str(ckpt), "--frames", "0", str(tmp_path / "v.mp4")])


def test_bench_frames_sweeps_accuracy_and_speed(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds", {"a": ("cycling", "test", 30, 1), "b": ("archery", "test", 24, 2),
                                          "c": ("cycling", "test", 24, 3)})
    ckpt = make_checkpoint(tmp_path / "m.pth", network="r3d_18", clip_length=8)
    # A model that answers "cycling" whatever it sees: 2 of the 3 videos right at every frame count.
    saved = torch.load(ckpt, weights_only=True)
    saved["model"]["fc.bias"] = torch.tensor([0.0, 0.0, 1e4, 0.0])
    torch.save(saved, ckpt)
    assert bench_frames.main(["--checkpoint", str(ckpt), "--dataset", str(root), "--frames", "2", "8",
                              "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["frames"] for r in rows] == [2, 8] and [r["frame_interval"] for r in rows] == [8, 2]
    assert [(r["videos"], r["video_top1"]) for r in rows] == [(3, pytest.approx(200 / 3))] * 2
    assert all(np.isfinite(r["clips_per_s"]) and r["clips_per_s"] > 0 for r in rows)
    with pytest.raises(SystemExit):
        bench_frames.main(["--checkpoint", str(ckpt), "--dataset", str(root), "--split", "val", "--frames", "2"])
    assert "no videos in split 'val'" in capsys.readouterr().err
