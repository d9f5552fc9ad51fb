"""Trainer flags the README documents, each shown to do what it says: --pretrained-2d, --precision bf16 (train,
validate, evaluate), --max-nonfinite, --precise-bn-batches, --save-frequency, --keep-last, --mix-prob,
--mix-switch-prob. Tiny runs on the session's converted store (8 train videos: 2 steps of 4 clips per epoch)."""
from __future__ import annotations

import csv
import json

import pytest
import torch

import network
from tests.train_util import tiny_train_argv
from tools import evaluate as evaluate_tool
from train import cli
from train.arguments import parse_args
from train.checkpoint import checkpoint_path
from train.recipe import build_mixer

pytestmark = pytest.mark.usefixtures("one_thread")
NET = "mict_resnet18"


def _checkpoint(model_dir, epoch):
    return torch.load(checkpoint_path(model_dir, NET, epoch), weights_only=True)


def test_pretrained_2d_initialises_the_network_from_inflated_2d_weights(tiny_store, tmp_path):
    """Every tensor the network takes from a 2D ResNet starts as that tensor; a 3D kernel as the 2D kernel repeated
    over time and divided by its depth (a still clip then gives the 2D response). lr ~0: the saved weights are
    still the initial ones."""
    model = network.build_model(NET, 2, version="v2", width_mult=0.125)
    own = model.state_dict()
    gen = torch.Generator().manual_seed(1)
    source = {}
    for key, key2d in model.pretrained_2d_map().items():
        shape = own[key].shape
        if own[key].dtype.is_floating_point and "running" not in key:
            source[key2d] = torch.randn((*shape[:2], *shape[3:]) if len(shape) == 5 else shape, generator=gen)
    weights = tmp_path / "resnet18_2d.pth"
    torch.save(source, weights)
    run = tmp_path / "run"
    assert cli.main(tiny_train_argv(tiny_store, run, "--pretrained-2d", str(weights), "--lr-base", "1e-12",
                                    "--weight-decay", "0")) == 0
    saved = _checkpoint(run, 1)["model"]
    inflated = 0
    for key, key2d in model.pretrained_2d_map().items():
        if key2d not in source:
            continue
        got, want = saved[key], source[key2d]
        if got.dim() == 5:
            want = want.unsqueeze(2).expand_as(got) / got.shape[2]
            inflated += 1
        assert torch.allclose(got, want, atol=1e-6), key
    assert inflated >= 4  # the 3D kernels (stem, the 3D branches) were really inflated, not only copied
    fresh = network.build_model(NET, 2, version="v2", width_mult=0.125).state_dict()
    assert not all(torch.equal(fresh[k], saved[k]) for k in fresh if "running" not in k and "num_batches" not in k)


def test_precision_bf16_trains_validates_and_evaluates(tiny_store, tmp_path):
    """bf16 autocast on the CPU: the convolutions compute in bfloat16 during training and validation, the
    checkpoint keeps fp32 weights, losses are finite, and tools.evaluate runs the checkpoint in bf16 too."""
    dtypes: set[torch.dtype] = set()

    def record(module, args, output):
        if isinstance(module, torch.nn.Conv3d):
            dtypes.add(output.dtype)

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        run = tmp_path / "run"
        assert cli.main(tiny_train_argv(tiny_store, run, "--precision", "bf16")) == 0
        assert dtypes == {torch.bfloat16}
        ckpt = _checkpoint(run, 1)
        assert ckpt["args"]["precision"] == "bf16"
        assert {t.dtype for t in ckpt["model"].values() if t.is_floating_point()} == {torch.float32}
        with open(run / "train_results.csv", newline="") as f:
            [row] = list(csv.DictReader(f))
        assert float(row["loss"]) == pytest.approx(float(row["loss"]))  # not NaN
        dtypes.clear()
        assert evaluate_tool.main(["--checkpoint", str(checkpoint_path(run, NET, 1)), "--dataset", str(tiny_store),
                                   "--precision", "bf16", "--workers", "0", "--out", str(tmp_path / "ev")]) == 0
        assert dtypes == {torch.bfloat16}
        assert json.loads((tmp_path / "ev" / "eval_val.json").read_text())["videos"] == 4
    finally:
        hook.remove()


def test_max_nonfinite_stops_after_that_many_bad_losses_in_a_row(tiny_store, tmp_path, capsys, caplog):
    """An absurd learning rate: the first step blows the weights up, the 3 later losses of the epoch (4 steps of 2
    clips) are inf/NaN and skipped. --max-nonfinite 2 stops at the second of them; with 5 the epoch ends and the
    non-finite weights are refused instead (never saved)."""
    blow_up = ["--lr-base", "1e30", "--batch-size", "2"]

    def run(name: str, limit: str) -> tuple[str, list[str]]:
        caplog.clear()
        with pytest.raises(SystemExit) as exc:
            cli.main(tiny_train_argv(tiny_store, tmp_path / name, *blow_up, "--max-nonfinite", limit))
        assert exc.value.code == 1
        messages = [r.getMessage() for r in caplog.records]
        assert not any("non-finite gradients" in m for m in messages)  # one warning per bad batch: the loss's
        return capsys.readouterr().err, [m for m in messages if "in a row)" in m]

    err, skipped = run("two", "2")
    assert "loss was NaN/inf for 2 batches in a row" in err, err[-2000:]
    assert [m[-12:] for m in skipped] == ["(1 in a row)", "(2 in a row)"]
    err, skipped = run("five", "5")
    assert "batches in a row" not in err and "hold NaN/inf" in err, err[-2000:]
    assert [m[-12:] for m in skipped] == ["(1 in a row)", "(2 in a row)", "(3 in a row)"]
    assert not list((tmp_path / "five").glob("*.pth"))


def test_precise_bn_batches_recomputes_the_statistics_over_that_many_batches(tiny_store, tmp_path):
    """BN statistics after precise BN are an equal-weight average over exactly N training batches, which BN
    counts: `num_batches_tracked` is N in the checkpoint, against one per training step (2) without it."""
    assert cli.main(tiny_train_argv(tiny_store, tmp_path / "plain")) == 0
    assert cli.main(tiny_train_argv(tiny_store, tmp_path / "precise", "--precise-bn-batches", "1")) == 0
    for run, count in (("plain", 2), ("precise", 1)):
        tracked = {v.item() for k, v in _checkpoint(tmp_path / run, 1)["model"].items()
                   if k.endswith("num_batches_tracked")}
        assert tracked == {count}, (run, tracked)


def test_save_frequency_and_keep_last_decide_which_checkpoints_exist(tiny_store, tmp_path):
    """3 epochs: --save-frequency 2 saves epochs 2 and 3 (the last always); --keep-last 1 leaves only the newest
    epoch file (plus best)."""
    assert cli.main(tiny_train_argv(tiny_store, tmp_path / "freq", "--end-epoch", "3", "--save-frequency", "2",
                                    "--debug-mode")) == 0
    assert sorted(p.name for p in (tmp_path / "freq").glob(f"{NET}_ep-*.pth")) == \
        [f"{NET}_ep-0002.pth", f"{NET}_ep-0003.pth"]
    assert cli.main(tiny_train_argv(tiny_store, tmp_path / "keep", "--end-epoch", "3", "--keep-last", "1",
                                    "--debug-mode")) == 0
    assert sorted(p.name for p in (tmp_path / "keep").glob(f"{NET}_ep-*.pth")) == [f"{NET}_ep-0003.pth"]
    assert (tmp_path / "keep" / f"{NET}_best.pth").is_file()


def _mix_modes(*flags: str, clips: int = 400) -> dict[str, int]:
    """How the mixer built from these trainer flags treats `clips` flat clips of distinct values: unchanged,
    mixup (a flat blend of two) or CutMix (a box of the partner's value)."""
    args = parse_args(["--dataset", "unused", *flags])
    mixer = build_mixer(args)
    counts = {"none": 0, "mixup": 0, "cutmix": 0}
    values = torch.arange(clips, dtype=torch.float32) + 1.0
    for start in range(0, clips, 8):
        batch = values[start:start + 8].view(-1, 1, 1, 1, 1).expand(-1, 3, 2, 16, 16).clone()
        mixed, _ = mixer(batch, torch.zeros(len(batch), dtype=torch.long), 2)
        for before, after in zip(values[start:start + 8], mixed):
            distinct = after.unique()
            if len(distinct) > 1:
                counts["cutmix"] += 1
            elif distinct.item() != before.item():
                counts["mixup"] += 1
            else:
                counts["none"] += 1
    return counts


def test_mix_prob_and_mix_switch_prob_decide_how_many_clips_are_mixed_and_how():
    both = ["--mixup", "1", "--cutmix", "1"]
    assert _mix_modes(*both, "--mix-prob", "0") == {"none": 400, "mixup": 0, "cutmix": 0}
    quarter = _mix_modes(*both, "--mix-prob", "0.25")
    assert 60 <= quarter["mixup"] + quarter["cutmix"] <= 140, quarter  # 100 expected, binomial sd 8.7
    only_cutmix = _mix_modes(*both, "--mix-switch-prob", "1")
    assert only_cutmix["mixup"] == 0 and only_cutmix["cutmix"] >= 390, only_cutmix  # a box can be empty
    only_mixup = _mix_modes(*both, "--mix-switch-prob", "0")
    assert only_mixup["cutmix"] == 0 and only_mixup["mixup"] >= 390, only_mixup
    half = _mix_modes(*both)  # defaults: every clip mixed, half of them by CutMix
    assert half["none"] <= 10 and 150 <= half["cutmix"] <= 250, half
