"""Checkpoints of the SRTG and MiCT-Net-PyTorch code in the inference tools: `tools.evaluate` and `tools.predict`
give the numbers of the model loaded with `load_weights(..., strict=True)` fed the reference's preprocessing, and
bad input (no network, another depth or width, class names of another count) is one clear line.

Reference checkpoints fix the widths (the file carries the reference's full-width tensors), so the models are the
smallest depths at full width on 8-16 frame clips of 32 px (the tools' overrides shrink the reference's 256 px).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data.dataset import VideoDataset
from data.labels import write_classes
from data.loader import build_loader
from data.transforms import Compose, ResizedCrop, ToTensorNormalize
from data.views import MultiViewTransform
from network import build_model, load_weights
from tests.test_predict import make_dataset, write_video
from tests.test_srtg_family import _mict_reference_state, _randomise_bn, _srtg_reference_state
from tools import evaluate as ev_tool
from tools import predict
from tools.inference.video_source import assemble_clips, open_source
from train.inference import LoadedModel, load_model, override_preprocess
from train.multiview import view_transform

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["archery", "bowling", "cycling", "diving"]
SRTG_MEAN, SRTG_STD = [124 / 255, 117 / 255, 104 / 255], [1 / (0.0167 * 255)] * 3
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
CROP = 32
# name, writer, preprocessing the reference evaluates with, clip length and interval used here, tiny resize
CASES = {
    "srtg": dict(network="srtg_r3d_18", clip=8, interval=2, resize=round(294 * CROP / 256), bgr=True,
                 mean=SRTG_MEAN, std=SRTG_STD,
                 reference={"clip_length": 16, "frame_interval": 2, "resize_short": 294, "crop_size": 256,
                            "mean": SRTG_MEAN, "std": SRTG_STD, "channel_order": "bgr"}),
    "mict": dict(network="mict_resnet18", clip=16, interval=1, resize=round(192 * CROP / 160), bgr=False,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 reference={"clip_length": 16, "frame_interval": 1, "resize_short": 192, "crop_size": 160,
                            "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "channel_order": "rgb"}),
}


def _write_reference_checkpoint(path: Path, kind: str) -> Path:
    """A checkpoint file exactly as the reference code saves one, tensors under its names."""
    torch.manual_seed(0)
    if kind == "srtg":
        model = build_model("srtg_r3d_18", len(CLASSES), layout="srtg")
        _randomise_bn(model)
        with torch.no_grad():
            # untrained LSTM states (|h| << 1) multiplied in after each of the 8 blocks leave ~1e-10 of the signal:
            # open the gates so that h is near 1, and spread the logits, or the output would not depend on the input
            for name, p in model.named_parameters():
                if ".sr.lstm.bias_ih" in name:
                    p.fill_(4.0)
            model.fc.weight.mul_(50)
        torch.save({"epoch": 40, "state_dict": _srtg_reference_state(model),
                    "optimizer": {"state": {}, "param_groups": []}}, path)
    else:
        model = build_model("mict_resnet18", len(CLASSES))
        _randomise_bn(model)
        torch.save({"epoch": 60, "state_dict": _mict_reference_state(model), "optimizer": {}, "best_pred": 0.69},
                   path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The generated dataset (two val videos), a raw video, both checkpoints and a classes file."""
    tmp = tmp_path_factory.mktemp("reference")
    root = make_dataset(tmp / "data", {"a0": ("archery", "val", 24, 1), "c0": ("cycling", "val", 20, 2),
                                       "b0": ("bowling", "train", 16, 3)})
    names = tmp / "names.txt"
    write_classes(names, ["jump", "run", "swim", "throw"])
    return {"root": root, "video": write_video(tmp / "clip.mp4", n_frames=30, seed=5), "names": names,
            "srtg": _write_reference_checkpoint(tmp / "srtg_r3d_18_ep-0040.pth", "srtg"),
            "mict": _write_reference_checkpoint(tmp / "model_best.pth.tar", "mict")}


def _strict_model(kind: str, path: Path) -> torch.nn.Module:
    """The model the reference checkpoint loads into with `load_weights(..., strict=True)`."""
    case = CASES[kind]
    model = build_model(case["network"], len(CLASSES), **({"layout": "srtg"} if kind == "srtg" else {}))
    assert load_weights(model, path, strict=True).complete
    return model.eval()


def _reference_input(kind: str) -> Compose:
    """The reference's normalisation built independently: RGB normalised with the channel-reversed values, then
    the channels flipped, is the SRTG code's BGR input."""
    case = CASES[kind]
    crop = ResizedCrop(CROP, case["resize"], None, "center")
    if not case["bgr"]:
        return Compose([crop, ToTensorNormalize(case["mean"], case["std"])])
    return Compose([crop, ToTensorNormalize(case["mean"][::-1], case["std"][::-1]), lambda x, rng: x.flip(0)])


def _overrides(kind: str) -> list[str]:
    case = CASES[kind]
    return ["--clip-length", str(case["clip"]), "--frame-interval", str(case["interval"]), "--crop-size", str(CROP)]


@pytest.mark.parametrize("kind", ["srtg", "mict"])
def test_reference_checkpoint_loads_with_the_reference_network_and_preprocessing(files, kind):
    loaded = load_model(files[kind], "cpu", network=CASES[kind]["network"], classes=CLASSES)
    assert loaded.network == CASES[kind]["network"] and loaded.classes == CLASSES and not loaded.warnings
    assert loaded.preprocess == CASES[kind]["reference"]
    assert getattr(loaded.model, "layout", "srtg") == "srtg" and not loaded.model.training
    x = torch.randn(1, 3, CASES[kind]["clip"], CROP, CROP)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), _strict_model(kind, files[kind])(x), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["srtg", "mict"])
def test_evaluate_gives_the_strictly_loaded_models_loss_and_predictions(files, kind, tmp_path, capsys):
    root, k = files["root"], 2
    out = tmp_path / "eval"
    assert ev_tool.main(["--weights", str(files[kind]), "--network", CASES[kind]["network"], "--dataset", str(root),
                         "--clips-per-video", str(k), "--workers", "0", "--device", "cpu", "--out", str(out),
                         *_overrides(kind)]) == 0
    report = json.loads((out / "eval_val.json").read_text())
    assert report["classes"] == CLASSES  # from the dataset's classes.txt
    model = _strict_model(kind, files[kind])
    ds = VideoDataset(root, split="val", clip_length=CASES[kind]["clip"], frame_interval=CASES[kind]["interval"],
                      transform=_reference_input(kind), clips_per_video=k, classes=CLASSES)
    losses, probs, labels = [], np.zeros((len(ds.samples), len(CLASSES))), np.zeros(len(ds.samples), dtype=int)
    with torch.no_grad():
        for clips, target, video in build_loader(ds, batch_size=4, train=False, workers=0):
            logits = model(clips)
            losses.append(F.cross_entropy(logits, target, reduction="none"))
            np.add.at(probs, video.numpy(), logits.softmax(1).numpy())
            labels[video.numpy()] = target.numpy()
    assert report["clips"] == 2 * k and report["loss"] == pytest.approx(torch.cat(losses).mean().item(), rel=1e-4)
    expected = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
    np.add.at(expected, (labels, probs.argmax(1)), 1)
    assert report["confusion"] == expected.tolist()
    assert "video@1" in capsys.readouterr().out


def _strict_video_probs(kind: str, files: dict, clips: int) -> np.ndarray:
    model = _strict_model(kind, files[kind])
    transform = _reference_input(kind)
    with open_source(files["video"]) as source:
        indices = predict.clip_indices(source.n_frames, CASES[kind]["clip"], CASES[kind]["interval"], clips)
        batch = [transform(frames, None) for _, frames in sorted(assemble_clips(source, indices), key=lambda t: t[0])]
    with torch.no_grad():
        return model(torch.stack(batch)).softmax(1).mean(0).numpy()


@pytest.mark.parametrize("kind", ["srtg", "mict"])
def test_predict_gives_the_strictly_loaded_models_probabilities_under_the_given_class_names(files, kind, capsys):
    assert predict.main(["--weights", str(files[kind]), "--network", CASES[kind]["network"], "--classes",
                         str(files["names"]), "--clips", "2", "--topk", "4", "--json", "--device", "cpu",
                         *_overrides(kind), str(files["video"])]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["ok"] and not result["warnings"]
    assert (result["clip_length"], result["frame_interval"]) == (CASES[kind]["clip"], CASES[kind]["interval"])
    names = ["jump", "run", "swim", "throw"]
    got = {row["label"]: row["prob"] for row in result["top"]}
    assert sorted(got) == names
    expected = _strict_video_probs(kind, files, clips=2)
    np.testing.assert_allclose([got[n] for n in names], expected, rtol=1e-4, atol=1e-6)


def test_predict_without_class_names_shows_numbered_classes_with_a_warning(files, capsys):
    assert predict.main(["--weights", str(files["mict"]), "--network", "mict_resnet18", "--clips", "1", "--json",
                         "--device", "cpu", *_overrides("mict"), str(files["video"])]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert sorted(row["label"] for row in result["top"]) == [f"class_{i}" for i in range(4)]
    assert any("carry no class names" in w and "--classes" in w for w in result["warnings"])


def _one_line_error(capsys, call) -> str:
    with pytest.raises(SystemExit) as exc:
        call()
    assert exc.value.code == 2
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and stderr.strip().endswith(errors[0]) and "Traceback" not in stderr
    return errors[0]


def test_reference_checkpoint_without_network_names_the_option_and_the_networks_that_fit(files, capsys):
    err = _one_line_error(capsys, lambda: ev_tool.main(["--weights", str(files["srtg"]), "--dataset",
                                                        str(files["root"])]))
    assert str(files["srtg"]) in err and "SRTG checkpoint" in err and "--network NAME" in err
    assert "its tensors fit srtg_r3d_18)" in err
    err = _one_line_error(capsys, lambda: predict.main(["--weights", str(files["mict"]), str(files["video"])]))
    assert str(files["mict"]) in err and "MiCT-Net-PyTorch" in err and "its tensors fit mict_resnet18)" in err


def test_reference_checkpoint_of_another_depth_or_family_is_one_clear_error(files, capsys):
    err = _one_line_error(capsys, lambda: ev_tool.main(["--weights", str(files["srtg"]), "--network", "srtg_r3d_34",
                                                        "--dataset", str(files["root"])]))
    assert str(files["srtg"]) in err and "basic blocks [2, 2, 2, 2] does not fit srtg_r3d_34" in err
    assert "its tensors fit srtg_r3d_18" in err
    err = _one_line_error(capsys, lambda: predict.main(["--weights", str(files["mict"]), "--network",
                                                        "mict_resnet34", str(files["video"])]))
    assert "blocks [2, 2, 2, 2] does not fit mict_resnet34" in err and "its tensors fit mict_resnet18" in err
    err = _one_line_error(capsys, lambda: predict.main(["--weights", str(files["srtg"]), "--network", "mc3_18",
                                                        str(files["video"])]))
    assert "mc3_18 has no layout 'srtg'" in err


def test_reference_checkpoint_of_another_width_is_one_clear_error(tmp_path, capsys):
    narrow = build_model("ir_csn_50", 4, width_mult=0.125, layout="srtg")
    path = tmp_path / "ir_csn_50_narrow.pth"
    torch.save({"epoch": 1, "state_dict": _srtg_reference_state(narrow), "optimizer": {}}, path)
    video = write_video(tmp_path / "v.mp4", n_frames=12)
    err = _one_line_error(capsys, lambda: predict.main(["--weights", str(path), "--network", "ir_csn_50",
                                                        str(video)]))
    assert str(path) in err and "does not match the model strictly" in err and "shape" in err
    assert "none of the registered networks fits its tensors" in err


def test_class_names_are_required_by_evaluate_and_must_match_the_classifier(files, tmp_path, capsys):
    bare = tmp_path / "no_classes_txt"
    bare.mkdir()
    err = _one_line_error(capsys, lambda: ev_tool.main(["--weights", str(files["mict"]), "--network",
                                                        "mict_resnet18", "--dataset", str(bare)]))
    assert "carry no class names; pass --classes FILE" in err
    three = tmp_path / "three.txt"
    write_classes(three, ["a", "b", "c"])
    err = _one_line_error(capsys, lambda: predict.main(["--weights", str(files["mict"]), "--network",
                                                        "mict_resnet18", "--classes", str(three),
                                                        str(files["video"])]))
    assert "classifier has 4 classes, but 3 class names were given" in err


def test_bgr_normalisation_reverses_the_channels_with_values_in_model_order():
    clip = np.random.default_rng(0).integers(0, 256, size=(3, 8, 10, 3), dtype=np.uint8)
    mean, std = [0.1, 0.5, 0.9], [0.2, 0.3, 0.4]
    bgr = ToTensorNormalize(mean, std, channel_order="bgr")(clip)
    for c, src in enumerate((2, 1, 0)):  # model channel c is RGB plane src
        expected = (torch.from_numpy(clip[..., src]).float() / 255 - mean[c]) / std[c]
        torch.testing.assert_close(bgr[c], expected)
    pre = {"crop_size": 8, "resize_short": 8, "mean": mean, "std": std}
    three = view_transform({**pre, "channel_order": "bgr"}, crops=3)(clip, None)
    torch.testing.assert_close(three, MultiViewTransform(8, 3, 8, mean[::-1], std[::-1])(clip).flip(1))
    with pytest.raises(ValueError, match="channel_order must be one of rgb, bgr"):
        ToTensorNormalize(mean, std, channel_order="rbg")


def test_preprocess_overrides_scale_the_resize_and_check_the_clip_length():
    model = build_model("mict_resnet18", 4, width_mult=0.125)
    loaded = LoadedModel(model, "mict_resnet18", CLASSES, {"clip_length": 16, "frame_interval": 2, "crop_size": 112,
                                                           "resize_short": 128, "resize": [128, 171],
                                                           "frame_rate": 15}, torch.device("cpu"))
    pre = override_preprocess(loaded, clip_length=32, frame_interval=3, crop_size=224).preprocess
    assert pre == {"clip_length": 32, "frame_interval": 3, "crop_size": 224, "resize_short": 256,
                   "resize": [256, 342]}
    assert override_preprocess(loaded).preprocess == loaded.preprocess
    with pytest.raises(ValueError, match="--clip-length 8: mict_resnet18 needs at least 16 frames"):
        override_preprocess(loaded, clip_length=8)
    with pytest.raises(ValueError, match="--crop-size must be >= 1"):
        override_preprocess(loaded, crop_size=0)


def test_extract_features_gives_the_strictly_loaded_models_features(files, tmp_path, capsys):
    from tools import extract_features

    out = tmp_path / "feats.npz"
    assert extract_features.main(["--weights", str(files["mict"]), "--network", "mict_resnet18", "--dataset",
                                  str(files["root"]), "--out", str(out), "--workers", "0", "--device", "cpu",
                                  *_overrides("mict")]) == 0
    saved = np.load(out)
    model = _strict_model("mict", files["mict"])
    ds = VideoDataset(files["root"], split="val", clip_length=16, frame_interval=1, transform=_reference_input("mict"),
                      clips_per_video=1)
    with torch.no_grad():
        expected = np.stack([model.forward_features(ds[i][0][None])[0].numpy() for i in range(len(ds))])
    np.testing.assert_allclose(saved["features"], expected, rtol=1e-4, atol=1e-5)
    assert json.loads(str(saved["preprocess"]))["crop_size"] == CROP and str(saved["network"]) == "mict_resnet18"


def test_classes_file_names_a_trained_checkpoint_without_names_and_never_renames_one_with_them(files, tmp_path,
                                                                                               capsys, caplog):
    from tests.test_predict import make_checkpoint

    nameless = make_checkpoint(tmp_path / "nameless.pth", classes=[])
    assert predict.main(["--checkpoint", str(nameless), "--classes", str(files["names"]), "--clips", "1", "--json",
                         str(files["video"])]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert sorted(r["label"] for r in result["top"]) == ["jump", "run", "swim", "throw"] and not result["warnings"]
    named = make_checkpoint(tmp_path / "named.pth")
    assert predict.main(["--checkpoint", str(named), "--classes", str(files["names"]), "--clips", "1", "--json",
                         str(files["video"])]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert sorted(r["label"] for r in result["top"]) == CLASSES
    assert "carries its own class names" in caplog.text


def test_inspect_model_reads_a_reference_checkpoint_with_its_network(files, capsys):
    from tools import inspect_model

    assert inspect_model.main(["--checkpoint", str(files["srtg"]), "--network", "srtg_r3d_18", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # the reference count at 400 classes, less 396 classifier rows of 512 weights and a bias
    assert report["totals"]["parameters"] == 44_543_312 - 396 * 513 and report["clip"] == [16, 256, 256]


def test_onnx_metadata_of_an_srtg_checkpoint_keeps_its_bgr_input():
    from tools.inference.onnx_metadata import model_metadata
    from train.reference_checkpoints import REFERENCE_PREPROCESS

    meta = model_metadata("srtg_r3d_18", CLASSES, REFERENCE_PREPROCESS["SRTG"], 8, CROP)
    pre = json.loads(meta["preprocess"])
    assert pre["channel_order"] == "bgr" and pre["resize_short"] == CASES["srtg"]["resize"]
    assert "float32 BGR" in meta["input"]
