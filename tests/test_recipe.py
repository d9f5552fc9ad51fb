"""Recipe options: gradient accumulation, mixup/CutMix, EMA, label smoothing, SyncBatchNorm and the CLI flags."""
from __future__ import annotations

import argparse
import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from data.loader import EpochShuffleSampler
from tests.train_util import MotionClips, TinyNet
from train import cli
from train.distributed import DistInfo
from train.ema import ModelEMA
from train.loaders import FixedLoader
from train.lr_schedule import StepLRSchedule
from train.mixing import ClipMixer, MixConfig
from train.recipe import build_criterion, build_sync_bn, count_sync_bn
from train.trainer import Trainer

torch.set_num_threads(1)


def _collate(batch):
    return (torch.stack([b[0] for b in batch]).double(), torch.tensor([b[1] for b in batch]),
            torch.tensor([b[2] for b in batch]))


def _train(batch_size: int, grad_accum: int, epochs: int = 2) -> tuple[nn.Module, list[float]]:
    torch.manual_seed(0)
    model = TinyNet(bn=False).double()
    data = MotionClips(24)
    loader = DataLoader(data, batch_size=batch_size, sampler=EpochShuffleSampler(data, 3), collate_fn=_collate,
                        drop_last=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    lrs: list[float] = []

    class Record:
        def __getattr__(self, name):
            if name == "on_batch_begin":
                return lambda trainer, batch, logs: lrs.append(logs["lr"])
            return lambda *a, **k: None

    trainer = Trainer(model, opt, FixedLoader(lambda: loader, data, batch_size, 8, 16),
                      scheduler=StepLRSchedule(opt, 0.1, [1], warmup_epochs=0.5), end_epoch=epochs,
                      num_classes=2, grad_accum=grad_accum, callbacks=Record())
    trainer.fit()
    return model, lrs


def test_grad_accum_matches_the_large_batch_without_batchnorm():
    big, big_lrs = _train(batch_size=12, grad_accum=1)
    acc, acc_lrs = _train(batch_size=4, grad_accum=3)
    # Same steps at the same lr: each group of 3 micro-batches sees the lr of the big batch's step.
    assert acc_lrs[::3] == big_lrs and acc_lrs[1::3] == big_lrs
    for (name, a), b in zip(big.state_dict().items(), acc.state_dict().values()):
        # float64: the only difference left is the order of the gradient sums (one reduction over 12 clips vs
        # three over 4), far below anything training could notice.
        assert torch.allclose(a, b, rtol=0, atol=1e-12), (name, (a - b).abs().max())
    one, _ = _train(batch_size=4, grad_accum=1)
    assert not torch.allclose(one.fc.weight, acc.fc.weight, atol=1e-6)  # accumulation did change the steps


def test_mixer_decides_per_clip_and_cutmix_box_is_the_same_in_every_frame():
    n, t, h, w = 6, 4, 16, 16
    clips = torch.stack([torch.full((3, t, h, w), float(i)) for i in range(n)])
    labels = torch.arange(n) % 3
    mixer = ClipMixer(MixConfig(cutmix_alpha=1.0), seed=0)
    mixed, targets = mixer(clips.clone(), labels, 3)
    assert targets.shape == (n, 3) and torch.allclose(targets.sum(1), torch.ones(n))
    lams = []
    for i in range(n):
        partner = n - 1 - i
        pasted = mixed[i, 0] == float(partner)  # (T, H, W) mask of the partner's pixels
        assert torch.equal(pasted, pasted[:1].expand_as(pasted))  # one box, every frame
        lam = 1 - pasted[0].float().mean().item()
        lams.append(lam)
        expected = torch.zeros(3)
        expected[labels[i]] += lam
        expected[labels[partner]] += 1 - lam
        assert torch.allclose(targets[i], expected, atol=1e-6)
    assert len({round(v, 4) for v in lams}) > 1  # a lambda of its own per clip

    mixup = ClipMixer(MixConfig(mixup_alpha=0.4), seed=1)
    mixed, targets = mixup(clips.clone(), labels, 3)
    for i in range(n):
        lam = targets[i, labels[i]].item() if labels[i] != labels[n - 1 - i] else None
        value = mixed[i].unique()
        assert value.numel() == 1  # mixup blends whole clips
        if lam is not None:
            assert value.item() == pytest.approx(lam * i + (1 - lam) * (n - 1 - i), abs=1e-4)
    # The generator state replays a batch exactly (what a mid-epoch resume relies on).
    again = ClipMixer(MixConfig(mixup_alpha=0.4, cutmix_alpha=1.0), seed=5)
    state = again.state_dict()
    first = again(clips.clone(), labels, 3)
    again.load_state_dict(state)
    second = again(clips.clone(), labels, 3)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_ema_follows_the_weights_with_its_decay():
    model = nn.Linear(2, 1)
    ema = ModelEMA(model, decay=0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.module.weight, start + 0.1)
    restored = ModelEMA(nn.Linear(2, 1), decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert torch.equal(restored.module.weight, ema.module.weight) and restored.updates == 1
    assert not restored.module.weight.requires_grad


def test_ema_is_validated_and_checkpointed_next_to_the_raw_weights():
    torch.manual_seed(0)
    model = TinyNet()
    data, val = MotionClips(16), MotionClips(8)
    coll = lambda b: (torch.stack([x[0] for x in b]), torch.tensor([x[1] for x in b]), torch.tensor([x[2] for x in b]))  # noqa: E731
    loader = DataLoader(data, batch_size=4, collate_fn=coll)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(model, opt, FixedLoader(lambda: loader, data, 4, 8, 16), scheduler=StepLRSchedule(opt, 0.1),
                      end_epoch=1, val_loader=DataLoader(val, batch_size=4, collate_fn=coll), num_val_videos=8,
                      num_classes=2, ema=ModelEMA(model, 0.5))
    history = trainer.fit()
    assert {"ema_video_top1", "ema_clip_top1", "ema_loss"} <= set(history[0]["val"])
    state = trainer.state_dict()
    assert state["ema"]["updates"] == 4
    assert not torch.equal(state["ema"]["model"]["fc.weight"], state["model"]["fc.weight"])


def test_label_smoothing_reaches_the_loss():
    args = cli.parse_args(["--dataset", "d", "--label-smoothing", "0.1"])
    criterion = build_criterion(args)
    logits, target = torch.tensor([[10.0, -10.0]]), torch.tensor([0])
    assert criterion(logits, target).item() == pytest.approx(0.05 * 20, abs=0.01)  # 0.05 of the mass on class 1
    assert nn.CrossEntropyLoss()(logits, target).item() < 1e-6


def test_sync_bn_converts_every_batchnorm_on_gpus_and_is_refused_on_cpu_processes():
    args = argparse.Namespace(sync_bn=True)
    model = nn.Sequential(nn.Conv3d(3, 4, 1), nn.BatchNorm3d(4), nn.Sequential(nn.BatchNorm3d(4)))
    assert build_sync_bn(model, args, DistInfo()) is model  # one process: nothing to synchronise
    with pytest.raises(ValueError, match="CUDA"):
        build_sync_bn(model, args, DistInfo(rank=0, world_size=2))
    # The conversion itself (what a GPU run gets): every BatchNorm, weights kept.
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(model))
    assert count_sync_bn(converted) == 2 and count_sync_bn(model) == 0
    assert torch.equal(converted[1].weight, model[1].weight)


@pytest.mark.parametrize("argv, message", [
    (["--label-smoothing", "1.5"], "--label-smoothing"),
    (["--mixup", "-1"], "--mixup and --cutmix"),
    (["--ema", "1.0"], "--ema takes a decay"),
    (["--grad-accum", "0"], "positive integer"),
    (["--preempt-signal", "KILL"], "invalid choice"),
])
def test_bad_recipe_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse_args(["--dataset", "d", *argv])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_recipe_flags_parse():
    args = cli.parse_args(["--dataset", "d", "--mixup", "0.8", "--cutmix", "1.0", "--ema", "0.999", "--sync-bn",
                           "--grad-accum", "4", "--preempt-signal", "usr1", "--resume", "auto", "--tensorboard"])
    assert (args.mixup, args.cutmix, args.ema, args.sync_bn, args.grad_accum) == (0.8, 1.0, 0.999, True, 4)
    assert args.preempt_signal == "USR1" and str(args.resume) == "auto" and args.tensorboard
