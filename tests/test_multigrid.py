"""Multigrid: long-cycle schedule, short-cycle batch sampler, sub-batch BN, loader factory and resume."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

from data.short_cycle import (
    SHORT_CYCLE_FACTORS,
    ShortCycleBatchSampler,
    short_cycle_batch_sizes,
    short_cycle_crop_sizes,
)
from network.sub_batchnorm import SubBatchNorm3d, convert_sub_batchnorm, set_sub_batchnorm_group
from train.loaders import MultigridLoaders
from train.multigrid import LONG_CYCLE_FACTORS, MultigridSchedule


def _spans(schedule):
    return [(p.name, p.start, p.end, p.stage) for p in schedule.phases]


# ---------------------------------------------------------------------------------------------- schedule
def test_constants():
    assert LONG_CYCLE_FACTORS == [(0.25, 2 ** -0.5), (0.5, 2 ** -0.5), (0.5, 1.0), (1.0, 1.0)]
    assert SHORT_CYCLE_FACTORS == (0.5, 2 ** -0.5)


def test_long_cycle_schedule_hand_computed():
    # B=2, T=8, S=32, lr step at 6 of 10 epochs.
    # Shapes: t = 2,4,4,8; s = 22 (32/sqrt2 = 22.6 -> even 22), 22, 32, 32; batch factor round(8*32^2/(t*s^2))
    # = round(8.46), round(4.23), 2, 1 = 8,4,2,1; interval x round(8/t) = 4,2,2,1.
    # Stage 0 (6 epochs) split 8:4:2:1 -> 3.2, 1.6, 0.8, 0.4; fine-tune = 4 epochs * 4/15 = 1.0667;
    # rescaled x 10/7.0667 and rounded cumulatively: ends 5, 7, 8, 8, 10; fine-tune halves [8,9) stage 0, [9,10).
    s = MultigridSchedule(2, 8, 32, 1, [6], 10, long_cycle=True, short_cycle=False, lr_factor=0.1)
    assert s.end_epoch == 10
    assert _spans(s) == [("long-0", 0, 5, 0), ("long-1", 5, 7, 0), ("long-2", 7, 8, 0),
                         ("fine-tune", 8, 9, 0), ("fine-tune", 9, 10, 1)]
    assert [p.name for p in s.all_phases].count("long-3") == 1  # rounded to 0 epochs, still listed
    assert s.lr_steps == [9]
    shapes = [s.shape(e) for e in range(10)]
    assert [x.batch_size for x in shapes] == [16] * 5 + [8] * 2 + [4] + [2] * 2
    assert [x.clip_length for x in shapes] == [2] * 5 + [4] * 3 + [8] * 2
    assert [x.crop_size for x in shapes] == [22] * 7 + [32] * 3
    assert [x.frame_interval for x in shapes] == [4] * 5 + [2] * 3 + [1] * 2
    assert [x.lr_scale for x in shapes] == [8.0] * 5 + [4.0] * 2 + [2.0] + [1.0] * 2
    assert [s.lr_multiplier(e) for e in range(10)] == pytest.approx([8] * 5 + [4] * 2 + [2, 1, 0.1])
    assert all(x.short_crops is None for x in shapes)
    assert s.shape(50) == s.shape(9)  # past the end: the last shape
    assert "long-3" in s.describe() and "(0 epochs)" in s.describe()


def test_long_and_short_cycle_schedule_hand_computed():
    # Short cycle crops of the base S=32: 16 and 22. At s=22: multipliers round((22/16)^2)=2, 1, 1; at s=32: 4, 2, 1.
    # Average batch factors 8*4/3, 4*4/3, 2*7/3, 7/3 (sum 23): stage 0 epochs 2.78, 1.39, 1.22, 0.61,
    # fine-tune 4*4/23*7/3 = 1.62; x 10/7.62 -> cumulative ends 4, 5, 7, 8, 10.
    s = MultigridSchedule(2, 8, 32, 1, [6], 10, long_cycle=True, short_cycle=True)
    assert _spans(s) == [("long-0", 0, 4, 0), ("long-1", 4, 5, 0), ("long-2", 5, 7, 0), ("long-3", 7, 8, 0),
                         ("fine-tune", 8, 9, 0), ("fine-tune", 9, 10, 1)]
    assert s.lr_steps == [9]
    first = s.shape(0)
    assert (first.batch_size, first.clip_length, first.crop_size, first.lr_scale) == (16, 2, 22, 8.0)
    assert first.short_crops == (16, 22, 22) and first.short_batches == (32, 16, 16)
    third = s.shape(5)
    assert (third.batch_size, third.crop_size) == (4, 32)
    assert third.short_crops == (16, 22, 32) and third.short_batches == (16, 8, 4)
    last = s.shape(9)
    assert last.short_crops == (16, 22, 32) and last.short_batches == (8, 4, 2) and last.lr_scale == 1.0


def test_short_cycle_only_and_off():
    off = MultigridSchedule(4, 8, 32, 2, [6, 8], 10, long_cycle=False, short_cycle=False, epoch_factor=1.5)
    assert not off.enabled and off.end_epoch == 10 and off.lr_steps == [6, 8]  # baseline, epoch factor unused
    assert {(x.batch_size, x.clip_length, x.crop_size, x.frame_interval, x.lr_scale, x.short_crops)
            for x in map(off.shape, range(10))} == {(4, 8, 32, 2, 1.0, None)}
    assert [off.stage(e) for e in range(10)] == [0] * 6 + [1] * 2 + [2] * 2

    short = MultigridSchedule(4, 8, 32, 2, [6, 8], 10, long_cycle=False, short_cycle=True, epoch_factor=1.5)
    assert short.end_epoch == 15 and short.lr_steps == [9, 12]
    x = short.shape(0)
    assert (x.batch_size, x.crop_size, x.lr_scale) == (4, 32, 1.0)  # short cycle: lr not scaled (SlowFast)
    assert x.short_crops == (16, 22, 32) and x.short_batches == (16, 8, 4)


def test_rounding_min_clip_length_and_interval_lists():
    s = MultigridSchedule(2, 16, 112, [1, 2], [20], 30, min_clip_length=8, crop_multiple=8)
    shapes = {p.long_index: s.shape(p.start) for p in s.phases}
    # t = max(8, 4) = 8 for the first two shapes; 112/sqrt2 = 79.2 -> 80; factor 16*112^2/(8*80^2) = 3.92 -> 4.
    assert [shapes[i].clip_length for i in range(4)] == [8, 8, 8, 16]
    assert [shapes[i].crop_size for i in range(4)] == [80, 80, 112, 112]
    assert [shapes[i].batch_size for i in range(4)] == [8, 8, 4, 2]
    assert [shapes[i].frame_interval for i in range(4)] == [(2, 4), (2, 4), (2, 4), (1, 2)]
    assert short_cycle_crop_sizes(112, 80, crop_multiple=8) == [56, 80, 80]
    assert short_cycle_crop_sizes(224) == [112, 158, 224]  # SlowFast's 158
    assert short_cycle_batch_sizes(3, [112, 158, 224]) == [12, 6, 3]


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr_steps=[10]), "lr_steps"),
    (dict(lr_steps=[5, 3]), "lr_steps"),
    (dict(base_batch=0), "base_batch"),
    (dict(min_clip_length=9), "min_clip_length"),
    (dict(base_interval=[]), "base_interval"),
    (dict(epoch_factor=0), "epoch_factor"),
])
def test_bad_configuration(kwargs, message):
    args = dict(base_batch=2, base_clip_length=8, base_crop=32, base_interval=1, lr_steps=[6], end_epoch=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        MultigridSchedule(**args)


def test_from_args_and_no_lr_steps():
    args = SimpleNamespace(batch_size=2, clip_length=8, clip_size=32, train_frame_interval=[1, 2], lr_steps=None,
                           lr_factor=0.5, end_epoch=6, long_cycles=True, short_cycles=False)
    s = MultigridSchedule.from_args(args)
    assert s.end_epoch == 6 and s.lr_steps == [] and {p.stage for p in s.phases} == {0}
    assert s.shape(s.end_epoch - 1).phase.startswith("long-")  # no fine-tune phase without lr steps


# ---------------------------------------------------------------------------------------------- sampler
def _run(sampler):
    return [list(b) for b in sampler]


def test_short_cycle_sampler_sizes_and_crops():
    bs = ShortCycleBatchSampler(range(30), batch_size=2, base_crop=32, drop_last=True)
    assert bs.crop_sizes == [16, 22, 32] and bs.batch_sizes == [8, 4, 2]
    batches = _run(bs)
    assert [len(b) for b in batches] == [8, 4, 2] * 2  # 28 of 30 clips; the rest (2 < 8) dropped
    assert [{c for _, c in b} for b in batches] == [{0}, {1}, {2}] * 2
    assert [i for b in batches for i, _ in b] == list(range(28))
    assert len(bs) == 6
    keep = ShortCycleBatchSampler(range(30), batch_size=2, base_crop=32, drop_last=False)
    assert [len(b) for b in _run(keep)] == [8, 4, 2, 8, 4, 2, 2] and len(keep) == 7

    # In a long-cycle phase at S/sqrt2 the factors still refer to the base crop (not SlowFast #429's 2x/1x/1x
    # of the current one): 2b at S/2, b at S/sqrt2, b at S/sqrt2.
    reduced = ShortCycleBatchSampler(range(40), batch_size=3, base_crop=32, current_crop=22)
    assert reduced.crop_sizes == [16, 22, 22] and reduced.batch_sizes == [6, 3, 3]


@pytest.mark.parametrize("drop_last", [True, False])
def test_short_cycle_sampler_len_matches_iteration(drop_last):
    for n in range(0, 60, 7):
        for current in (32, 22):
            bs = ShortCycleBatchSampler(range(n), 2, 32, current, drop_last=drop_last)
            assert len(bs) == len(_run(bs)), (n, current)


class _Indexable(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i


def test_short_cycle_sampler_ddp_ranks_agree_and_set_epoch():
    ds = _Indexable(45)
    ranks = [ShortCycleBatchSampler(DistributedSampler(ds, num_replicas=2, rank=r, shuffle=True, seed=3), 2, 32,
                                    drop_last=False) for r in range(2)]
    for epoch in (0, 1):
        for r in ranks:
            r.set_epoch(epoch)
        runs = [_run(r) for r in ranks]
        assert len(ranks[0]) == len(ranks[1]) == len(runs[0]) == len(runs[1])
        assert [len(b) for b in runs[0]] == [len(b) for b in runs[1]]  # same shapes at every step
        assert [b[0][1] for b in runs[0]] == [b[0][1] for b in runs[1]]
        seen = {i for run in runs for b in run for i, _ in b}
        assert seen == set(range(45))  # the shards cover the dataset (one index padded)
    ranks[0].set_epoch(0)
    first = _run(ranks[0])
    ranks[0].set_epoch(1)
    assert _run(ranks[0]) != first  # reshuffled by epoch
    ranks[0].set_epoch(0)
    assert _run(ranks[0]) == first  # and reproducible


# ---------------------------------------------------------------------------------------------- loader factory
class _FakeClips(Dataset):
    """The part of VideoDataset's interface that multigrid touches, with zero compute."""

    def __init__(self, n=70):
        self.n = n
        self.clip_length, self.frame_interval = 8, 1
        self.transform = SimpleNamespace(crop_size=32)
        self.short_cycle_sizes = None

    def set_shape(self, clip_length, frame_interval, crop_size, short_cycle_sizes):
        self.clip_length, self.frame_interval, self.transform.crop_size = clip_length, frame_interval, crop_size
        self.short_cycle_sizes = None if short_cycle_sizes is None else list(short_cycle_sizes)

    def __len__(self):
        return self.n

    def __getitem__(self, item):
        index, cycle = item if isinstance(item, tuple) else (item, None)
        crop = self.transform.crop_size if cycle is None else self.short_cycle_sizes[cycle]
        return torch.full((3, self.clip_length, crop, crop), float(index)), index % 4, index


def _epoch_batches(loader):
    return [(tuple(clips.shape), [int(v) for v in vid]) for clips, _, vid in loader]


@pytest.mark.parametrize("short", [False, True])
def test_loader_factory_shapes_and_rebuilds(short):
    ds = _FakeClips()
    s = MultigridSchedule(2, 8, 32, 1, [6], 10, long_cycle=True, short_cycle=short)
    factory = MultigridLoaders(ds, s, workers=0, seed=1)
    keys = []
    for epoch in range(s.end_epoch):
        loader, info = factory(epoch + 1)  # the trainer's epochs count from 1, the schedule's from 0
        shape = s.shape(epoch)
        assert info.shape == shape and info.lr_scale == shape.lr_scale
        assert (ds.clip_length, ds.transform.crop_size, ds.frame_interval) == \
            (shape.clip_length, shape.crop_size, shape.frame_interval)
        batches = _epoch_batches(loader)
        assert len(batches) == len(loader) == info.num_batches
        if short:
            assert [b[0][0] for b in batches[:3]] == list(shape.short_batches)
            assert [b[0][3] for b in batches[:3]] == list(shape.short_crops)
            assert info.short_crops and ds.short_cycle_sizes == list(shape.short_crops)
        else:
            assert {b[0] for b in batches} == {(shape.batch_size, 3, shape.clip_length, shape.crop_size,
                                                shape.crop_size)}
        keys.append(shape.loader_key)
    changes = 1 + sum(a != b for a, b in zip(keys, keys[1:]))
    assert factory.rebuilds == changes < s.end_epoch  # workers recreated only when the shape changes


def test_resume_mid_long_cycle_continues_the_schedule():
    s = MultigridSchedule(2, 8, 32, 1, [6], 10, long_cycle=True, short_cycle=True)
    straight = MultigridLoaders(_FakeClips(), s, seed=5)
    runs = {}
    for epoch in range(6):
        loader, info = straight(epoch + 1)
        runs[epoch] = (info.shape, info.lr_multiplier, _epoch_batches(loader))
        if epoch == 1:  # inside long-0 (epochs 0-3): checkpoint here
            saved = straight.state_dict()
    assert saved["epoch"] == 1 and s.phase(1).name == "long-0"
    saved = torch.serialization.pickle.loads(torch.serialization.pickle.dumps(saved))

    fresh = MultigridSchedule(2, 8, 32, 1, [6], 10, long_cycle=True, short_cycle=True)
    resumed = MultigridLoaders(_FakeClips(), fresh, seed=5)
    resumed.load_state_dict(saved)
    for epoch in range(2, 6):
        loader, info = resumed(epoch + 1)
        assert (info.shape, info.lr_multiplier, _epoch_batches(loader)) == runs[epoch]

    other = MultigridSchedule(2, 8, 32, 1, [6], 12, long_cycle=True, short_cycle=True)
    with pytest.raises(ValueError, match="end_epoch"):
        other.load_state_dict(saved)
    other.load_state_dict(saved, strict=False)  # adopts the checkpoint's schedule
    assert _spans(other) == _spans(fresh) and other.epoch == 1
    with pytest.raises(ValueError, match="format"):
        fresh.load_state_dict({"epoch": 3})


# ---------------------------------------------------------------------------------------------- sub-batch BN
def _bn_pair(c=3, momentum=0.1):
    torch.manual_seed(0)
    bn = nn.BatchNorm3d(c, momentum=momentum)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    sub = SubBatchNorm3d(c, group_size=4, momentum=momentum)
    sub.load_state_dict(bn.state_dict())
    return bn, sub


@pytest.mark.parametrize("momentum", [0.1, None])
def test_sub_batchnorm_normalises_groups_and_tracks_whole_batch(momentum):
    bn, sub = _bn_pair(momentum=momentum)
    x = torch.randn(12, 3, 2, 4, 4) * 3 + 1
    y = sub(x)  # 12 clips, groups of >= 4 -> 3 groups: clips {0,3,6,9}, {1,4,7,10}, {2,5,8,11}
    for g in range(3):
        ref = nn.functional.batch_norm(x[g::3], None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
        torch.testing.assert_close(y[g::3], ref)
    bn(x)  # plain BN's running statistics are those of the whole batch
    torch.testing.assert_close(sub.running_mean, bn.running_mean)
    torch.testing.assert_close(sub.running_var, bn.running_var)
    assert int(sub.num_batches_tracked) == 1
    sub.eval(), bn.eval()
    torch.testing.assert_close(sub(x), bn(x))


def test_sub_batchnorm_small_batch_is_plain_bn_and_gradients_flow():
    bn, sub = _bn_pair()
    x = torch.randn(6, 3, 2, 4, 4)  # 6 // 4 = 1 group: plain BN, bit for bit
    assert torch.equal(sub(x), bn(x))
    assert torch.equal(sub.running_var, bn.running_var)
    x = torch.randn(8, 3, 2, 4, 4, requires_grad=True)
    sub(x).pow(2).sum().backward()
    assert sub.weight.grad is not None and x.grad is not None and torch.isfinite(x.grad).all()


def test_convert_sub_batchnorm_keeps_state_dict():
    model = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(),
                          nn.Sequential(nn.Conv3d(4, 4, 1), nn.BatchNorm3d(4)), nn.BatchNorm2d(4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weight = model[1].weight
    model = convert_sub_batchnorm(model, group_size=8)
    assert isinstance(model[1], SubBatchNorm3d) and isinstance(model[3][1], SubBatchNorm3d)
    assert type(model[4]) is nn.BatchNorm2d  # 2-D BN (frame-stacked models) is left as is
    assert model[1].weight is weight  # shared, so an existing optimizer keeps working
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    plain = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(),
                          nn.Sequential(nn.Conv3d(4, 4, 1), nn.BatchNorm3d(4)), nn.BatchNorm2d(4))
    plain.load_state_dict(after, strict=True)
    assert set_sub_batchnorm_group(model, 2) == 2 and model[1].group_size == 2


# ---------------------------------------------------------------------------------------------- training run
@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    from tools import convert
    from tools.synthetic import generate

    base = tmp_path_factory.mktemp("mg_demo")
    generate(base / "videos", classes=2, videos_per_class=16, frames=16, size=(40, 48), workers=1, progress=False)
    assert convert.main([str(base / "videos"), str(base / "store"), "--workers", "1", "--val-fraction", "0.25"]) == 0
    return base / "store"


def test_tiny_training_run_with_both_cycles_and_resume_mid_long_cycle(demo_root, tmp_path, one_thread):
    import csv

    import network
    from train.checkpoint import load_checkpoint
    from train.cli import main

    common = ["--dataset", str(demo_root), "--network", "r3d_18", "--width-mult", "0.125", "--clip-length", "8",
              "--clip-size", "32", "--train-frame-interval", "1", "--val-frame-interval", "1", "--batch-size", "1",
              "--lr-base", "0.01", "--lr-steps", "3", "--end-epoch", "4", "--long-cycles", "--short-cycles",
              "--workers", "0", "--log-interval", "100"]
    straight = tmp_path / "straight"
    assert main(common + ["--model-dir", str(straight)]) == 0
    # Schedule (see test_long_and_short_cycle_schedule_hand_computed with B=1): epochs 1-2 long-0, 3 long-2,
    # 4 the fine-tune phase at the base shape with the decayed lr.
    with open(straight / "train_results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(float(r["clips_per_s"]) > 0 for r in rows)
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.08, 0.08, 0.02, 0.001])
    ckpt = load_checkpoint(straight / "r3d_18_ep-0001.pth")
    assert ckpt["multigrid"]["epoch"] == 0 and ckpt["multigrid"]["config"]["short_cycle"] is True
    # Sub-batch BN leaves the state_dict of the plain model: the checkpoint loads into it strictly.
    network.build_model("r3d_18", 2, width_mult=0.125).load_state_dict(ckpt["model"], strict=True)

    resumed = tmp_path / "resumed"  # resume after epoch 1, in the middle of long-0 (epochs 1-2)
    assert main(common + ["--model-dir", str(resumed), "--resume", str(straight / "r3d_18_ep-0001.pth")]) == 0
    a = load_checkpoint(straight / "r3d_18_ep-0004.pth")["model"]
    b = load_checkpoint(resumed / "r3d_18_ep-0004.pth")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with open(resumed / "train_results.csv") as f:
        assert [float(r["lr"]) for r in csv.DictReader(f)][-3:] == pytest.approx([0.08, 0.02, 0.001])


def test_lr_scaling_options_and_from_args_extras():
    args = SimpleNamespace(batch_size=2, clip_length=8, clip_size=32, train_frame_interval=[1], lr_steps=[6],
                           lr_factor=0.1, end_epoch=10, long_cycles=True, short_cycles=False,
                           multigrid_epoch_factor=1.5, multigrid_lr_scaling="sqrt")
    s = MultigridSchedule.from_args(args)
    assert s.end_epoch == 15 and s.config["lr_scaling"] == "sqrt"
    assert s.shape(0).lr_scale == pytest.approx(8 ** 0.5) and s.shape(s.end_epoch - 1).lr_scale == 1.0
    none = MultigridSchedule.from_args(args, lr_scaling="none")
    assert {none.shape(e).lr_scale for e in range(none.end_epoch)} == {1.0}
    with pytest.raises(ValueError, match="lr_scaling"):
        MultigridSchedule(2, 8, 32, 1, [6], 10, lr_scaling="cubic")


def test_training_cli_passes_multigrid_options_to_the_schedule():
    from train.cli import parse_args

    args = parse_args(["--dataset", "x", "--long-cycles", "--batch-size", "4", "--clip-length", "8",
                       "--clip-size", "32", "--end-epoch", "8", "--multigrid-lr-scaling", "none",
                       "--multigrid-epoch-factor", "1.5"])
    plain = MultigridSchedule.from_args(parse_args(["--dataset", "x", "--long-cycles", "--batch-size", "4",
                                                    "--clip-length", "8", "--clip-size", "32",
                                                    "--end-epoch", "8"]))
    s = MultigridSchedule.from_args(args)
    assert s.end_epoch == 12 and plain.end_epoch == 8
    assert all(s.shape(e).lr_scale == 1.0 for e in range(s.end_epoch))
    assert max(plain.shape(e).lr_scale for e in range(plain.end_epoch)) == 8.0


def test_smallest_crop_over_the_schedule():
    # crop 64: long cycle alone goes down to round(64/sqrt2) = 46 (even); with the short cycle to 64/2 = 32.
    assert MultigridSchedule(2, 8, 64, 1, [6], 10, long_cycle=True, short_cycle=False).smallest_crop == 46
    assert MultigridSchedule(2, 8, 64, 1, [6], 10, long_cycle=True, short_cycle=True).smallest_crop == 32
    assert MultigridSchedule(2, 8, 64, 1, [6], 10, long_cycle=False, short_cycle=True).smallest_crop == 32
    assert MultigridSchedule(2, 8, 32, 1, [6], 10, long_cycle=False, short_cycle=True).smallest_crop == 16


def test_auto_lr_scaling_follows_the_optimizer():
    from types import SimpleNamespace

    from train.multigrid import default_lr_scaling

    assert default_lr_scaling("sgd") == "linear" and default_lr_scaling("adamw") == "sqrt"
    args = SimpleNamespace(batch_size=2, clip_length=8, clip_size=32, train_frame_interval=[1], lr_steps=[6],
                           end_epoch=10, long_cycles=True, short_cycles=False, lr_factor=0.1,
                           multigrid_lr_scaling="auto", optimizer="adamw")
    s = MultigridSchedule.from_args(args)
    assert s.config["lr_scaling"] == "sqrt"
    assert s.shape(0).lr_scale == pytest.approx(8 ** 0.5)  # long-0: batch factor 8
    args.optimizer = "sgd"
    assert MultigridSchedule.from_args(args).shape(0).lr_scale == 8.0
    args.multigrid_lr_scaling = "none"
    assert MultigridSchedule.from_args(args).shape(0).lr_scale == 1.0


def test_checkpoint_of_an_older_version_with_the_default_short_cycle_lr_resumes():
    plain = MultigridSchedule(2, 8, 32, 1, [6], 10, long_cycle=True, short_cycle=True)
    state = plain.state_dict()
    state["config"]["short_lr_scaling"] = "none"
    MultigridSchedule(2, 8, 32, 1, [6], 10, long_cycle=True, short_cycle=True).load_state_dict(state)
    state["config"]["short_lr_scaling"] = "sqrt"
    with pytest.raises(ValueError, match="short_lr_scaling"):
        MultigridSchedule(2, 8, 32, 1, [6], 10, long_cycle=True, short_cycle=True).load_state_dict(state)
