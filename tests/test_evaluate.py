"""Evaluation metrics on hand-computed examples, and the `tools.evaluate` command on a tiny real dataset."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import network
from tests.train_util import make_store
from tools import evaluate as ev_tool
from train.checkpoint import model_state_dict, save_checkpoint
from train.metrics import VideoAccumulator, confusion_matrix, per_class_accuracy, topk_correct
from train.trainer import evaluate

torch.set_num_threads(1)


def test_topk_counts():
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    target = torch.tensor([2, 0, 0])
    # top-1: only sample 1; top-2: samples 0 and 1; top-5 clamps to the 3 classes: all
    assert topk_correct(logits, target, (1, 2, 5)) == [1, 2, 3]


# Two videos of 3 classes, two clips each (logits chosen so that softmax is easy to reason about):
#   video 0 (class 0): clip A strongly class 0, clip B weakly class 1      -> clip@1 1/2, mean softmax -> class 0
#   video 1 (class 2): clip C weakly class 1, clip D weakly class 1        -> clip@1 0/2, video wrong (class 1)
LOGITS = torch.tensor([[5.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.9], [0.0, 1.0, 0.8]])
LABELS = torch.tensor([0, 0, 2, 2])
VIDEOS = torch.tensor([0, 0, 1, 1])


def test_video_accumulator_hand_computed():
    acc = VideoAccumulator(num_videos=2, num_classes=3)
    acc.add(LOGITS[:3], LABELS[:3], VIDEOS[:3], loss=1.0)  # batches split a video's clips
    acc.add(LOGITS[3:], LABELS[3:], VIDEOS[3:], loss=3.0)
    r = acc.result(topk=2)
    assert r.clips == 4 and r.videos == 2
    assert r.clip_top1 == 25.0  # only clip A
    assert r.clip_top5 == 100.0  # top-5 of 3 classes
    assert r.loss == pytest.approx((1.0 * 3 + 3.0 * 1) / 4)  # sample-weighted
    # video 0: mean softmax of A and B; class 0 wins
    a, b = LOGITS[0].softmax(0), LOGITS[1].softmax(0)
    assert np.allclose(r.video_probs[0], ((a + b) / 2).numpy())
    assert r.video_pred.tolist() == [0, 1] and r.video_target.tolist() == [0, 2]
    assert r.video_top1 == 50.0
    assert r.video_top5 == 100.0  # top-2 here: class 2 is second for video 1
    assert r.confusion.tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 0]]
    assert r.per_class[0] == 100.0 and math.isnan(r.per_class[1]) and r.per_class[2] == 0.0


def test_confusion_and_per_class_by_hand():
    cm = confusion_matrix(np.array([0, 1, 1, 2, 2, 2]), np.array([0, 0, 1, 2, 2, 1]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 2]]
    assert per_class_accuracy(cm).tolist() == pytest.approx([50.0, 50.0, 100.0])


def test_video_accumulator_merges_ranks_exactly():
    # Ranks saw disjoint clips (video 1's clips are split between them): merging gives the single-process result.
    full = VideoAccumulator(2, 3)
    full.add(LOGITS, LABELS, VIDEOS, 1.0)
    r0, r1 = VideoAccumulator(2, 3), VideoAccumulator(2, 3)
    r0.add(LOGITS[[0, 2]], LABELS[[0, 2]], VIDEOS[[0, 2]], 1.0)
    r1.add(LOGITS[[1, 3]], LABELS[[1, 3]], VIDEOS[[1, 3]], 1.0)
    s0 = [t.clone() for t in (r0.prob_sum, r0.clip_count, r0.video_label, r0.clips.as_tensor())]
    s1 = [t.clone() for t in (r1.prob_sum, r1.clip_count, r1.video_label, r1.clips.as_tensor())]
    sums = iter([s0[0] + s1[0], s0[1] + s1[1], s0[3] + s1[3]])
    r0.reduce(lambda t: next(sums), lambda t: torch.maximum(s0[2], s1[2]))
    a, b = full.result(), r0.result()
    assert (a.video_top1, a.clip_top1, a.clips) == (b.video_top1, b.clip_top1, b.clips)
    assert np.allclose(a.video_probs, b.video_probs)


class LookupModel(nn.Module):
    """Returns LOGITS[i] for a clip whose pixels all equal i (so a test decides every clip's scores)."""

    def forward(self, x):
        return LOGITS[x[:, 0, 0, 0, 0].round().long()]


def test_evaluate_loop_aggregates_by_video_index():
    clips = torch.arange(4.0).view(4, 1, 1, 1, 1).expand(4, 3, 2, 4, 4)
    loader = [(clips[:3], LABELS[:3], VIDEOS[:3]), (clips[3:], LABELS[3:], VIDEOS[3:])]
    r = evaluate(LookupModel(), loader, num_videos=2, num_classes=3, device=torch.device("cpu"))
    assert (r.clip_top1, r.video_top1, r.videos) == (25.0, 50.0, 2)
    expected_loss = nn.functional.cross_entropy(LOGITS, LABELS).item()
    assert r.loss == pytest.approx(expected_loss, rel=1e-5)


# ---------------------------------------------------------------------------------------------- the tool
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("eval_store"), classes=3, videos_per_class=4)


def _write_checkpoint(path, classes, net="mict_resnet18"):
    torch.manual_seed(0)
    kw = {"version": "v2", "width_mult": 0.125}
    model = network.build_model(net, len(classes), **kw)
    return save_checkpoint({
        "format": "videotrain-ckpt-1", "network": net, "num_classes": len(classes), "classes": list(classes),
        "model_kwargs": kw, "model": model_state_dict(model), "epoch": 1, "metrics": {},
        "preprocess": {"clip_length": 8, "crop_size": 32, "resize_short": 37, "frame_interval": 1,
                       "mean": [0.43216, 0.394666, 0.37645], "std": [0.22803, 0.22145, 0.216989]}}, path)


def test_evaluate_tool_writes_report_json_csv_png(store, tmp_path, capsys):
    classes = (store / "classes.txt").read_text().split()
    ckpt = _write_checkpoint(tmp_path / "m.pth", classes)
    assert ev_tool.main(["--checkpoint", str(ckpt), "--dataset", str(store), "--clips-per-video", "2",
                         "--workers", "0", "--batch-size", "3", "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert "video@1" in out and "clip@1" in out and "per-class video accuracy" in out
    report = json.loads((tmp_path / "eval_train.json").read_text())
    assert report["clips"] == 2 * report["videos"] and report["videos"] == 9  # 3 train videos per class
    assert sorted(report["per_class"]) == sorted(classes)
    assert np.array(report["confusion"]).sum() == report["videos"]
    assert (tmp_path / "confusion_train.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "per_class_train.csv").read_text().startswith("class,accuracy,correct,videos")


def test_evaluate_tool_report_of_a_known_model(store, tmp_path, capsys):
    """A model that answers the second class whatever it sees, on 3 train videos per class: every row of the
    confusion matrix (true class) puts its 3 videos in column 1, one class in three is right."""
    classes = (store / "classes.txt").read_text().split()
    ckpt = _write_checkpoint(tmp_path / "m.pth", classes)
    saved = torch.load(ckpt, weights_only=True)
    saved["model"]["fc.bias"] = torch.tensor([0.0, 1e4, 0.0])
    torch.save(saved, ckpt)
    assert ev_tool.main(["--checkpoint", str(ckpt), "--dataset", str(store), "--clips-per-video", "2",
                         "--workers", "0", "--split", "train"]) == 0
    capsys.readouterr()
    report = json.loads((tmp_path / "eval_train.json").read_text())
    assert report["confusion"] == [[0, 3, 0], [0, 3, 0], [0, 3, 0]]
    assert report["video_top1"] == pytest.approx(100 / 3) and report["clip_top1"] == pytest.approx(100 / 3)
    assert report["per_class"] == {classes[0]: 0.0, classes[1]: 100.0, classes[2]: 0.0}
    rows = (tmp_path / "per_class_train.csv").read_text().splitlines()[1:]
    assert sorted(rows) == sorted([f"{classes[0]},0.00,0,3", f"{classes[1]},100.00,3,3", f"{classes[2]},0.00,0,3"])


def test_evaluate_tool_bad_inputs(store, tmp_path, capsys):
    classes = (store / "classes.txt").read_text().split()
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    fewer = _write_checkpoint(tmp_path / "fewer.pth", classes[:2])  # the labels name a class it lacks
    for argv in (["--checkpoint", str(bad), "--dataset", str(store)],
                 ["--checkpoint", str(fewer), "--dataset", str(store)],
                 ["--checkpoint", str(fewer), "--dataset", str(tmp_path / "missing")]):
        with pytest.raises(SystemExit) as e:
            ev_tool.main([*argv, "--workers", "0"])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), err
