"""The training loop: learning, sample-weighted metrics, lr schedule, precision, non-finite losses, resume."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from tests.train_util import MotionClips, TinyNet, make_store, tiny_train_argv
from train.callbacks import Callback, CallbackList
from train.checkpoint import checkpoint_path, load_checkpoint
from train.cli import main as train_main
from train.loaders import FixedLoader
from train.lr_schedule import StepLRSchedule
from train.precision import NonFiniteLossError, Precision, keep_batchnorm_fp32
from train.trainer import Trainer

torch.set_num_threads(1)


def _collate(batch):
    return (torch.stack([b[0] for b in batch]), torch.tensor([b[1] for b in batch]),
            torch.tensor([b[2] for b in batch]))


def _trainer(model, dataset, epochs=1, batch_size=8, lr=0.1, val=None, callbacks=(), **kw) -> Trainer:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=_collate)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    val_loader = DataLoader(val, batch_size=batch_size, collate_fn=_collate) if val is not None else None
    return Trainer(model, opt, FixedLoader(lambda: loader, dataset, batch_size, 8, 32),
                   scheduler=StepLRSchedule(opt, lr), end_epoch=epochs, val_loader=val_loader,
                   num_val_videos=len(val) if val is not None else 0, num_classes=2,
                   callbacks=CallbackList(callbacks), **kw)


def test_fit_learns_motion_and_reports_history():
    torch.manual_seed(0)
    trainer = _trainer(TinyNet(), MotionClips(32), epochs=6, lr=0.2, val=MotionClips(16))
    history = trainer.fit()
    assert [h["epoch"] for h in history] == list(range(1, 7))
    assert all(h["train"]["samples"] == 32 for h in history)
    assert history[-1]["val"]["videos"] == 16 and history[-1]["val"]["clips"] == 16
    assert history[-1]["train"]["loss"] < history[0]["train"]["loss"]
    assert history[-1]["val"]["video_top1"] >= 75.0


def test_epoch_metrics_are_sample_weighted():
    # 10 clips in batches 4, 4, 2 with lr ~0: the epoch loss must be the mean over the 10 clips, not over batches.
    torch.manual_seed(0)
    model = TinyNet(bn=False)
    data = MotionClips(10)
    loader = DataLoader(data, batch_size=4, shuffle=False, collate_fn=_collate)
    opt = torch.optim.SGD(model.parameters(), lr=1e-30)
    seen = []

    class Record(Callback):
        def on_batch_end(self, trainer, batch, logs):
            seen.append((logs["batch_size"], logs["loss"]))

    trainer = Trainer(model, opt, FixedLoader(lambda: loader, data, 4, 8, 32), scheduler=StepLRSchedule(opt, 1e-30),
                      end_epoch=1, callbacks=CallbackList([Record()]))
    out = trainer.train_epoch(1)
    assert [n for n, _ in seen] == [4, 4, 2]
    weighted = sum(n * loss for n, loss in seen) / 10
    batch_mean = sum(loss for _, loss in seen) / 3
    assert out["loss"] == pytest.approx(weighted, rel=1e-6)
    assert abs(weighted - batch_mean) > 1e-6  # the two differ here, so the check above means something
    assert out["samples"] == 10


def test_step_schedule_warmup_and_group_multipliers():
    p1, p2 = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p1], "lr_mult": 0.1}, {"params": [p2]}], lr=1.0)
    s = StepLRSchedule(opt, 0.4, lr_steps=[2, 4], lr_factor=0.5, warmup_epochs=1.0, warmup_start=0.25)
    assert s.step(0.0) == pytest.approx(0.1)  # 0.4 * 0.25
    assert s.step(0.5) == pytest.approx(0.4 * 0.625)
    assert s.step(1.0) == pytest.approx(0.4)
    assert s.step(1.99) == pytest.approx(0.4)
    assert s.step(2.0) == pytest.approx(0.2)  # after 2 epochs: first decay
    assert s.step(4.5, scale=2.0) == pytest.approx(0.2)  # 0.4 * 0.25 * 2
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.02, 0.2])
    other = StepLRSchedule(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), 9.0)
    other.load_state_dict(s.state_dict())
    assert other.current_lr == pytest.approx(0.2) and other.lr_steps == [2, 4]


def test_bf16_autocast_on_cpu_keeps_batchnorm_fp32():
    torch.manual_seed(0)
    model = TinyNet()
    assert keep_batchnorm_fp32(model) == 1
    seen = {}
    model.bn.register_forward_hook(lambda m, i, o: seen.update(bn_in=i[0].dtype))
    trainer = _trainer(model, MotionClips(16), precision=Precision("bf16", torch.device("cpu")))
    before = model.conv.weight.detach().clone()
    out = trainer.train_epoch(1)
    assert math.isfinite(out["loss"]) and out["samples"] == 16
    assert seen["bn_in"] == torch.float32 and model.bn.running_mean.dtype == torch.float32
    assert model.conv.weight.dtype == torch.float32 and not torch.equal(before, model.conv.weight)
    with pytest.raises(ValueError, match="fp16 needs a CUDA"):
        Precision("fp16", torch.device("cpu"))


class _NaNAfter(nn.Module):
    """TinyNet whose output is NaN for the batches listed in `bad` (counted from 0)."""

    def __init__(self, bad):
        super().__init__()
        self.net, self.bad, self.calls = TinyNet(), set(bad), 0

    def forward(self, x):
        out = self.net(x)
        self.calls += 1
        return out * float("nan") if self.calls - 1 in self.bad else out


def test_single_nonfinite_loss_is_skipped_not_trained_on():
    torch.manual_seed(0)
    model = _NaNAfter({0})
    trainer = _trainer(model, MotionClips(16), batch_size=8, lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loader, _ = trainer.loader_for_epoch(1)
    trainer.max_batches = 1  # only the NaN batch: the weights must not move
    out = trainer.train_epoch(1)
    assert out["nonfinite"] == 1 and out["samples"] == 0
    for k, v in model.net.state_dict().items():
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(v, before["net." + k]), k


def test_nonfinite_losses_in_a_row_stop_with_a_clear_message():
    model = _NaNAfter(set(range(100)))
    trainer = _trainer(model, MotionClips(32), batch_size=4, max_nonfinite=3)
    with pytest.raises(NonFiniteLossError, match="3 batches in a row.*--lr-base"):
        trainer.fit()


def test_callback_hook_order():
    events = []

    class Record(Callback):
        def on_train_begin(self, trainer, logs):
            events.append("train_begin")

        def on_epoch_begin(self, trainer, epoch, logs):
            events.append(f"epoch_begin {epoch}")

        def on_batch_begin(self, trainer, batch, logs):
            events.append("batch_begin")

        def on_batch_end(self, trainer, batch, logs):
            events.append("batch_end")

        def on_validation_end(self, trainer, logs):
            events.append("validation_end")

        def on_epoch_end(self, trainer, epoch, logs):
            events.append(f"epoch_end {epoch}")

        def on_train_end(self, trainer, logs):
            events.append("train_end")

    _trainer(TinyNet(), MotionClips(8), epochs=2, batch_size=4, val=MotionClips(4), callbacks=[Record()]).fit()
    one_epoch = ["batch_begin", "batch_end"] * 2 + ["validation_end"]
    assert events == (["train_begin", "epoch_begin 1", *one_epoch, "epoch_end 1", "epoch_begin 2", *one_epoch,
                       "epoch_end 2", "train_end"])


# ---------------------------------------------------------------------------------------------- resume
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("trainer_store"), classes=2, videos_per_class=6)


def _final_state(model_dir, epoch=2):
    return load_checkpoint(checkpoint_path(model_dir, "mict_resnet18", epoch))


@pytest.mark.parametrize("workers", [0, 2])
def test_two_epochs_equal_one_epoch_plus_resume(store, tmp_path, workers):
    common = ["--workers", str(workers), "--lr-steps", "1", "--warmup-epochs", "0.5", "--random-seed", "3"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train_main(tiny_train_argv(store, straight, *common, "--end-epoch", "2")) == 0
    assert train_main(tiny_train_argv(store, split, *common, "--end-epoch", "1")) == 0
    assert train_main(tiny_train_argv(store, split, *common, "--end-epoch", "2", "--resume-epoch", "1")) == 0
    a, b = _final_state(straight), _final_state(split)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert a["scheduler"] == b["scheduler"] and a["epoch"] == b["epoch"] == 2
    # The history of the resumed run has each epoch once, with the same figures as the straight run.
    rows_a = (straight / "train_results.csv").read_text().splitlines()
    rows_b = (split / "train_results.csv").read_text().splitlines()
    assert len(rows_a) == len(rows_b) == 3
    for ra, rb in zip(rows_a, rows_b):
        assert ra.split(",")[:4] == rb.split(",")[:4]  # epoch, top1, top5, loss (not the timings)


# ---------------------------------------------------------------------------------------------- multigrid
@pytest.fixture(scope="module")
def mg_store(tmp_path_factory):
    # Room for the largest multigrid batches at base batch 1: a store with 36 training videos.
    return make_store(tmp_path_factory.mktemp("mg_store"), classes=2, videos_per_class=24)


MG = ["--long-cycles", "--short-cycles", "--end-epoch", "4", "--lr-steps", "2", "--batch-size", "1", "--debug-mode"]


def test_multigrid_flags_run_and_store_the_schedule(mg_store, tmp_path, caplog):
    run = tmp_path / "mg"
    with caplog.at_level("INFO"):
        assert train_main(tiny_train_argv(mg_store, run, *MG)) == 0
    assert "Multigrid schedule" in caplog.text
    assert "[long-0 (1/4), short cycle 1/3]" in caplog.text  # the printer shows the position of each batch
    # cheapest shape: 4 of 8 frames (the model minimum) at 22px, batch x4; short cycle 1 at 16px doubles it
    assert "batch=8x3x4x16x16" in caplog.text and "lr=4.00e-02" in caplog.text  # lr x4 (linear scaling)
    ckpt = load_checkpoint(checkpoint_path(run, "mict_resnet18", 4))
    assert ckpt["multigrid"]["format"] == "multigrid-schedule-1" and ckpt["multigrid"]["epoch"] == 3
    with pytest.raises(SystemExit) as e:  # resuming it without the flags is refused clearly
        train_main(tiny_train_argv(mg_store, run, "--resume-epoch", "4", "--end-epoch", "9"))
    assert e.value.code == 2


class StopAfter(Callback):
    """Ends training after `epoch`, like a job killed between epochs."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer, epoch, logs):
        trainer.stop_training = epoch >= self.epoch


def test_multigrid_resume_mid_cycle_continues_the_same_schedule(mg_store, tmp_path):
    from train import cli

    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train_main(tiny_train_argv(mg_store, straight, *MG)) == 0
    setup = cli.prepare(cli.parse_args(tiny_train_argv(mg_store, split, *MG)), extra_callbacks=[StopAfter(2)])
    cli.train(setup)  # stops inside the long cycle, after epoch 2
    assert not checkpoint_path(split, "mict_resnet18", 3).exists()
    assert train_main(tiny_train_argv(mg_store, split, *MG, "--resume-epoch", "2")) == 0
    a, b = _final_state(straight, 4), _final_state(split, 4)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["multigrid"] == b["multigrid"]


def test_both_cycles_off_is_the_plain_baseline_bit_for_bit(store, tmp_path):
    """Without --long-cycles/--short-cycles the trainer equals a textbook loop: no multigrid trace anywhere."""
    import copy

    from data.loader import build_loader
    from data.transforms import ToTensorNormalize
    from network.sub_batchnorm import SubBatchNorm3d
    from train import cli
    from train.trainer import epoch_seed

    args = cli.parse_args(tiny_train_argv(store, tmp_path / "plain", "--end-epoch", "2", "--lr-steps", "1",
                                          "--train-frame-interval", "2", "--random-seed", "5"))
    seen = []

    class Record(Callback):
        def on_batch_begin(self, trainer, batch, logs):
            seen.append((logs["epoch"], logs["shape"], logs["lr"], logs["cycle"]))

    setup = cli.prepare(args, extra_callbacks=[Record()])
    initial = copy.deepcopy(setup.model.state_dict())
    assert not any(isinstance(m, SubBatchNorm3d) for m in setup.model.modules())
    assert setup.trainer.precise_bn is None  # precise BN is a multigrid default only
    setup.trainer.fit()

    # Every batch has the base shape and the unscaled step schedule (lr 0.01, x0.1 after epoch 1).
    assert seen and {s[1] for s in seen} == {(4, 3, 8, 32, 32)} and {s[3] for s in seen} == {None}
    assert [lr for _, _, lr, _ in seen] == pytest.approx([0.01 if e == 1 else 0.001 for e, _, _, _ in seen])
    assert [e for e, *_ in seen] == [1, 1, 2, 2]
    ckpt = load_checkpoint(checkpoint_path(tmp_path / "plain", "mict_resnet18", 2))
    assert not ckpt.get("multigrid")

    # The reference: the same model, data and seeds through a plain DataLoader, SGD and cross-entropy.
    model = setup.model
    ref = copy.deepcopy(model)
    ref.load_state_dict(initial)
    dataset = setup.trainer.loader_for_epoch.dataset
    opt = torch.optim.SGD(ref.parameters(), lr=0.01, momentum=args.momentum, weight_decay=args.weight_decay,
                          nesterov=True)
    loader = build_loader(dataset, 4, train=True, workers=0, seed=5)
    for epoch in (1, 2):
        torch.manual_seed(epoch_seed(5, epoch, 0))
        loader.sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        for group in opt.param_groups:
            group["lr"] = 0.01 if epoch == 1 else 0.01 * 0.1
        ref.train()
        for clips, labels, _ in loader:
            # The workers ship uint8 clips; the reference normalises them as the float pipeline does, per clip.
            assert clips.dtype == torch.uint8
            clips = torch.stack([ToTensorNormalize()(c.permute(1, 2, 3, 0).numpy()) for c in clips])
            loss = nn.functional.cross_entropy(ref(clips).float(), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    for k, v in ref.state_dict().items():
        assert torch.equal(v, ckpt["model"][k]), k
