"""torchvision's Kinetics-400 video weights: loading, class names, preprocessing, the tools, fine-tuning, bad files.

The weights are state_dicts saved from randomly initialised torchvision models (the real files are never
downloaded): only the layout matters, and that is torchvision's own.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from torchvision.models import video as tv_video

from network import build_model, load_weights
from tests.test_predict import make_dataset, write_video
from tests.train_util import make_store, tiny_train_argv
from tools import evaluate, export_onnx, predict
from tools.inference.onnx_predict import load_onnx_model
from train import cli
from train.inference import CheckpointError, build_val_transform, load_model
from train.pretrained import torchvision_info

pytestmark = pytest.mark.usefixtures("one_thread")

K400 = tv_video.R3D_18_Weights.KINETICS400_V1.meta["categories"]


@pytest.fixture(scope="module")
def r3d_weights(tmp_path_factory):
    """A torchvision r3d_18 (random init) and its state_dict file, named as torchvision names it."""
    torch.manual_seed(0)
    model = tv_video.r3d_18(weights=None).eval()
    path = tmp_path_factory.mktemp("tv") / "r3d_18-b3b3357e.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_torchvision_state_dict_loads_with_kinetics_classes_and_preprocessing(r3d_weights):
    tv_model, path = r3d_weights
    named = load_model(path, "cpu", network="r3d_18")
    detected = load_model(path, "cpu")  # a bare state_dict that fits exactly is recognised without --network
    assert named.network == detected.network == "r3d_18"
    assert named.classes == K400 and len(named.classes) == 400
    pre = named.preprocess
    assert (pre["clip_length"], pre["crop_size"], pre["resize"], pre["frame_rate"]) == (16, 112, [128, 171], 15)
    assert pre["mean"] == pytest.approx([0.43216, 0.394666, 0.37645])
    assert pre["std"] == pytest.approx([0.22803, 0.22145, 0.216989])
    x = torch.randn(1, 3, 4, 64, 64)
    with torch.inference_mode():
        assert torch.equal(named.model(x), tv_model(x))


def test_fixed_resize_matches_torchvision_preprocessing():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:240, 0:426]  # 16:9, where keeping the aspect ratio would give another crop
    base = np.stack([xx * 255 // 426, yy * 255 // 240, (xx + yy) * 255 // 666], axis=-1)
    clip = np.clip(base[None] + rng.integers(-3, 4, size=(2, 240, 426, 3)), 0, 255).astype(np.uint8)
    ours = build_val_transform(torchvision_info("r2plus1d_18").preprocess)(clip, rng)
    theirs = tv_video.R2Plus1D_18_Weights.KINETICS400_V1.transforms()(torch.from_numpy(clip).permute(0, 3, 1, 2))
    assert ours.shape == theirs.shape == (3, 2, 112, 112)
    assert float((ours - theirs).abs().mean()) < 0.03  # in units of std: interpolation differences only


def test_predict_with_torchvision_weights_names_kinetics_classes(r3d_weights, tmp_path, capsys):
    tv_model, path = r3d_weights
    video = write_video(tmp_path / "clip.mp4", n_frames=40, fps=30)
    assert predict.main(["--weights", str(path), "--network", "r3d_18", "--frames", "2", "--clips", "1",
                         "--topk", "3", "--device", "cpu", "--json", str(video)]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["ok"] and result["clip_length"] == 2
    assert result["frame_interval"] == 16  # 16 frames at 30/15 fps = a 32-frame span, spread over 2 frames
    assert [r["label"] for r in result["top"]] == [K400[r["index"]] for r in result["top"]]
    # the same clip by hand: the validation sampler's frames, torchvision's own transform and model
    from tools.inference.video_source import PyAVSource

    indices = predict.clip_indices(40, 2, 16, 1)[0]
    assert indices[1] - indices[0] == 16
    frames = PyAVSource(video).read(indices)
    x = tv_video.R3D_18_Weights.KINETICS400_V1.transforms()(torch.from_numpy(frames).permute(0, 3, 1, 2))
    with torch.inference_mode():
        expected = torch.softmax(tv_model(x[None]), dim=1)[0]
    assert result["top"][0]["index"] == int(expected.argmax())
    assert result["top"][0]["prob"] == pytest.approx(float(expected.max()), rel=0.05)


def test_wrong_architecture_or_class_count_names_what_was_expected(r3d_weights, tmp_path, capsys):
    _, path = r3d_weights
    video = write_video(tmp_path / "v.mp4", n_frames=8)
    with pytest.raises(SystemExit) as exc:
        predict.main(["--weights", str(path), "--network", "r2plus1d_18", str(video)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "not r2plus1d_18 weights" in err and "they are r3d_18 weights" in err
    state = torch.load(path, weights_only=True)
    state["fc.weight"], state["fc.bias"] = state["fc.weight"][:101], state["fc.bias"][:101]
    torch.save(state, tmp_path / "r3d_101.pth")
    with pytest.raises(CheckpointError, match=r"fc.weight is \(101, 512\), expected \(400, 512\)"):
        load_model(tmp_path / "r3d_101.pth", network="r3d_18")
    with pytest.raises(CheckpointError, match="publishes Kinetics-400 weights for r3d_18"):
        load_model(path, network="mict_resnet18")


def test_missing_weights_file_says_where_torchvision_publishes_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        predict.main(["--weights", str(tmp_path / "r2plus1d_18-91a641e6.pth"), "--network", "r2plus1d_18",
                      str(tmp_path / "v.mp4")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "no such weights file" in err
    assert tv_video.R2Plus1D_18_Weights.KINETICS400_V1.url in err and "Traceback" not in err


def test_evaluate_takes_torchvision_weights(r3d_weights, tmp_path):
    _, path = r3d_weights
    root = make_dataset(tmp_path / "ds", {"a": ("air drumming", "val", 20, 1)}, classes=["air drumming"])
    assert evaluate.main(["--weights", str(path), "--dataset", str(root), "--workers", "0", "--device", "cpu",
                          "--out", str(tmp_path / "eval")]) == 0
    summary = json.loads((tmp_path / "eval" / "eval_val.json").read_text())
    assert summary["videos"] == 1 and len(summary["classes"]) == 400 and summary["classes"][1] == "air drumming"


def test_export_takes_torchvision_weights(r3d_weights, tmp_path, capsys):
    _, path = r3d_weights
    out = tmp_path / "r3d.onnx"
    assert export_onnx.main(["--weights", str(path), "--network", "r3d_18", "--clip-length", "2", "--crop-size",
                             "32", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "opset 18" in text and "IR version" in text
    loaded = predict.Predictor(load_onnx_model(out))
    assert loaded.classes == K400 and loaded.loaded.preprocess["resize"] == [round(128 * 32 / 112),
                                                                              round(171 * 32 / 112)]


def test_torchvision_weights_start_a_fine_tuning_run(r3d_weights, tmp_path, caplog, capsys):
    _, path = r3d_weights
    store = make_store(tmp_path / "data", classes=2, videos_per_class=2, frames=8)
    run = tmp_path / "ft"
    argv = tiny_train_argv(store, run, "--debug-mode", "--pretrained-3d", str(path), "--fine-tune",
                           "--width-mult", "1", "--batch-size", "2", network="r3d_18")
    with caplog.at_level("INFO"):
        assert cli.main(argv) == 0
    # every backbone tensor loads; only the 400-way classifier does not fit the 2 classes
    assert "skipped 2 checkpoint tensors" in caplog.text and "fc.weight" in caplog.text
    report = load_weights(build_model("r3d_18", 2), path)
    assert report.missing == ["fc.weight", "fc.bias"] and len(report.loaded) == len(
        torchvision.models.video.r3d_18().state_dict()) - 2
    with pytest.raises(SystemExit) as exc:
        cli.main(tiny_train_argv(store, tmp_path / "x", "--pretrained-3d", str(tmp_path / "r3d_18-b3b3357e.pth"),
                                 network="r3d_18"))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--pretrained-3d" in err and tv_video.R3D_18_Weights.KINETICS400_V1.url in err
