"""Callbacks: speed monitor (window, colours, ETA), metric printer, CSV history, checkpointer, plots, log file."""
from __future__ import annotations

import logging
import types

import pytest
import torch

from train.callbacks import (
    SPEED_THRESHOLDS,
    Checkpointer,
    CSVHistory,
    MetricPrinter,
    PlotCurves,
    SpeedMonitor,
    colour_speed,
    format_duration,
    read_csv_rows,
)
from train.checkpoint import best_checkpoint_path, checkpoint_path, list_checkpoints, load_checkpoint
from train.distributed import DistInfo
from train.loaders import EpochInfo
from train.multigrid import MultigridSchedule

RED, YELLOW, GREEN = "\x1b[31m", "\x1b[33m", "\x1b[32m"


class FakeTrainer:
    """What callbacks read from a trainer."""

    def __init__(self, rank=0, end_epoch=3, num_batches=10, start_epoch=1):
        self.dist = DistInfo(rank=rank, world_size=2 if rank else 1)
        self.end_epoch, self.num_batches, self.start_epoch = end_epoch, num_batches, start_epoch
        self.val_loader, self.val_frequency, self.stop_training = object(), 1, False
        self.loader_info = EpochInfo(1, 8, 8, 32, num_batches)
        self.epoch = start_epoch

    def state_dict(self):
        return {"model": {"w": torch.full((2,), float(self.epoch))}, "optimizer": {}, "scheduler": {},
                "scaler": {}, "epoch": self.epoch, "multigrid": {}, "rng": {}}


def _batch_logs(epoch=1, n=8, read=0.1, fwd=0.2, bwd=0.4, **kw):
    logs = {"epoch": epoch, "batch_size": n, "time_read": read, "time_forward": fwd, "time_backward": bwd,
            "shape": (n, 3, 8, 32, 32), "lr": 0.01, "loss": 1.5, "top1": 50.0, "top5": 100.0,
            "epoch_loss": 1.4, "epoch_top1": 40.0, "epoch_top5": 90.0, "finite": True, "cycle": None}
    logs.update(kw)
    return logs


@pytest.mark.parametrize("kind", ["read", "forward", "backward"])
def test_speed_colours_follow_the_thresholds(kind):
    low, high = SPEED_THRESHOLDS[kind]
    assert colour_speed(low * 0.99, kind).startswith(RED)
    assert colour_speed(low, kind).startswith(YELLOW)
    assert colour_speed(high * 0.99, kind).startswith(YELLOW)
    assert colour_speed(high, kind).startswith(GREEN)
    assert colour_speed(high, kind, colour=False) == f"{high:.2e}"
    assert SPEED_THRESHOLDS == {"read": (100.0, 3000.0), "forward": (50.0, 300.0), "backward": (20.0, 200.0)}


def test_speed_monitor_window_average_and_eta():
    trainer = FakeTrainer(end_epoch=3, num_batches=10)
    sm = SpeedMonitor(window=2, colour=False)
    sm.on_epoch_begin(trainer, 1, {})
    logs = _batch_logs(n=8, read=1.0, fwd=1.0, bwd=2.0)
    sm.on_batch_end(trainer, 0, logs)
    logs = _batch_logs(n=16, read=1.0, fwd=1.0, bwd=2.0)
    sm.on_batch_end(trainer, 1, logs)
    # (8 + 16) clips over 2 s of reading -> 12 clips/s; forward 12, backward 6
    assert logs["speed"] == pytest.approx({"read": 12.0, "forward": 12.0, "backward": 6.0})
    # 2 s of the window's 8 s were spent waiting for data
    assert logs["data_fraction"] == pytest.approx(0.25)
    assert logs["speed_text"] == "Speed (r=1.20e+01 f=1.20e+01 b=6.00e+00) clips/s, data 25%"
    # 4 s per batch: 8 batches left in this epoch, 2 more epochs of 10 batches
    assert logs["eta_epoch"] == pytest.approx(32.0) and logs["eta_run"] == pytest.approx(32.0 + 80.0)
    # A third batch pushes the first out of the window of 2.
    logs = _batch_logs(n=4, read=0.5, fwd=0.5, bwd=0.5)
    sm.on_batch_end(trainer, 2, logs)
    assert logs["speed"]["read"] == pytest.approx(20 / 1.5)
    assert logs["data_fraction"] == pytest.approx(1.5 / 5.5)  # window: the 4-s batch and the 1.5-s one
    sm.on_validation_end(trainer, {"val": {"seconds": 10.0}})
    logs = _batch_logs(n=4, read=0.5, fwd=0.5, bwd=0.5)
    sm.on_batch_end(trainer, 9, logs)  # last batch of epoch 1: 2 epochs + 3 validations to go
    assert logs["eta_epoch"] == 0 and logs["eta_run"] == pytest.approx(2 * 10 * 1.5 + 3 * 10.0)
    assert format_duration(3725) == "1:02:05" and format_duration(float("nan")) == "n/a"


def test_metric_printer_logs_every_interval(caplog):
    trainer = FakeTrainer(num_batches=5)
    mp = MetricPrinter(log_interval=2)
    with caplog.at_level(logging.INFO, logger="train"):
        mp.on_epoch_begin(trainer, 1, {"info": EpochInfo(1, 8, 8, 32, 5), "num_batches": 5})
        for i in range(5):
            mp.on_batch_end(trainer, i, _batch_logs(speed_text="Speed (r=1 f=2 b=3) clips/s", eta_epoch=3,
                                                    eta_run=9))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "Epoch [1/3] 5 batches of 8 clips x 8 frames x 32px"
    batch_lines = [m for m in lines if "Batch [" in m]
    assert [m.split("]")[1] for m in batch_lines] == [" Batch [2/5", " Batch [4/5", " Batch [5/5"]
    line = batch_lines[0]
    for part in ("loss=1.5000", "top1=50.0", "top5=100.0", "batch=8x3x8x32x32", "lr=1.00e-02",
                 "Speed (r=1 f=2 b=3) clips/s", "ETA epoch 0:00:03 run 0:00:09"):
        assert part in line


def test_metric_printer_shows_multigrid_position(caplog):
    trainer = FakeTrainer(num_batches=3)
    schedule = MultigridSchedule(2, 8, 32, 1, [6], 10, long_cycle=True, short_cycle=True)
    shape = schedule.shape(4)
    trainer.loader_info = EpochInfo(2, shape.batch_size, shape.clip_length, shape.crop_size, 3, shape=shape,
                                    long_cycle="long-1 (2/4)")
    with caplog.at_level(logging.INFO, logger="train"):
        MetricPrinter(1).on_epoch_begin(trainer, 2, {"info": trainer.loader_info, "num_batches": 3})
        MetricPrinter(1).on_batch_end(trainer, 1, _batch_logs(cycle=1))
    assert f"Epoch [2/3] 3 batches, {shape.summary()}" in caplog.records[0].getMessage()
    assert "[long-1 (2/4), short cycle 2/3]" in caplog.records[1].getMessage()


def test_rank_other_than_zero_prints_and_writes_nothing(tmp_path, caplog):
    trainer = FakeTrainer(rank=1)
    history = CSVHistory(tmp_path)
    ck = Checkpointer(tmp_path, "net", {"network": "net"})
    with caplog.at_level(logging.INFO, logger="train"):
        MetricPrinter(1).on_batch_end(trainer, 0, _batch_logs())
        history.on_train_begin(trainer, {})
        logs = {"train": _epoch_train(), "val": _epoch_val(50.0), "lr": 0.1}
        history.on_epoch_end(trainer, 1, logs)
        ck.on_epoch_end(trainer, 1, logs)
        PlotCurves(tmp_path / "curves.png", history).on_epoch_end(trainer, 1, logs)
    assert not caplog.records and not list(tmp_path.iterdir())


def _epoch_train(top1=60.0, loss=1.0):
    return {"top1": top1, "top5": 90.0, "loss": loss, "clips_per_s": 10.0, "seconds": 2.0, "samples": 40}


def _epoch_val(video_top1, loss=1.2):
    return {"clip_top1": video_top1 - 5, "clip_top5": 95.0, "loss": loss, "clips_per_s": 30.0, "seconds": 1.0,
            "video_top1": video_top1, "video_top5": 100.0, "clips": 20, "videos": 10}


def test_csv_history_rows_and_resume_truncation(tmp_path):
    trainer = FakeTrainer()
    history = CSVHistory(tmp_path)
    history.on_train_begin(trainer, {})
    for epoch in (1, 2, 3):
        history.on_epoch_end(trainer, epoch, {"train": _epoch_train(10.0 * epoch), "val": _epoch_val(20.0 * epoch),
                                              "lr": 0.1})
    header = (tmp_path / "train_results.csv").read_text().splitlines()[0]
    assert header == "epoch,top1,top5,loss,clips_per_s,seconds,lr"
    assert (tmp_path / "val_results.csv").read_text().splitlines()[0] == \
        "epoch,top1,top5,loss,clips_per_s,seconds,video_top1,video_top5"
    assert [r["top1"] for r in read_csv_rows(tmp_path / "train_results.csv")] == [10.0, 20.0, 30.0]
    assert [r["video_top1"] for r in read_csv_rows(tmp_path / "val_results.csv")] == [20.0, 40.0, 60.0]
    # Resuming after epoch 1 drops the rows of epochs 2 and 3 (they are trained again).
    resumed = CSVHistory(tmp_path)
    resumed.on_train_begin(FakeTrainer(start_epoch=2), {})
    assert [r["epoch"] for r in read_csv_rows(tmp_path / "train_results.csv")] == [1]
    resumed.on_epoch_end(trainer, 2, {"train": _epoch_train(99.0), "lr": 0.1})  # no validation this epoch
    assert [r["top1"] for r in read_csv_rows(tmp_path / "train_results.csv")] == [10.0, 99.0]
    assert [r["epoch"] for r in read_csv_rows(tmp_path / "val_results.csv")] == [1]
    # A fresh run (epoch 1) starts new files.
    CSVHistory(tmp_path).on_train_begin(FakeTrainer(), {})
    assert read_csv_rows(tmp_path / "train_results.csv") == []


def test_checkpointer_frequency_best_on_val_only_and_keep_last(tmp_path):
    trainer = FakeTrainer(end_epoch=7)
    ck = Checkpointer(tmp_path, "net", {"network": "net", "classes": ["a", "b"]}, save_frequency=2, keep_last=2)
    # val video@1 per epoch; train top1 is highest at epoch 5, which must not matter for "best"
    vals = {1: 40.0, 2: 70.0, 3: 60.0, 4: 70.0, 5: 50.0, 6: 80.0, 7: 10.0}
    for epoch, v in vals.items():
        trainer.epoch = epoch
        ck.on_epoch_end(trainer, epoch, {"train": _epoch_train(99.0 if epoch == 5 else 10.0), "val": _epoch_val(v)})
        if epoch == 2:
            assert list(list_checkpoints(tmp_path, "net")) == [2]
    # every 2nd epoch and the last; only the newest 2 kept
    assert list(list_checkpoints(tmp_path, "net")) == [6, 7]
    best = torch.load(best_checkpoint_path(tmp_path, "net"), weights_only=True)
    assert best["epoch"] == 6 and best["metrics"]["best"] == 80.0 and best["classes"] == ["a", "b"]
    assert ck.best == 80.0 and ck.best_epoch == 6
    last = torch.load(checkpoint_path(tmp_path, "net", 7), weights_only=True)
    assert last["metrics"]["val"]["video_top1"] == 10.0 and torch.equal(last["model"]["w"], torch.full((2,), 7.0))
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name]  # atomic writes leave no temporaries


def test_checkpointer_resumed_best_is_not_overwritten_by_worse(tmp_path):
    trainer = FakeTrainer(end_epoch=3, start_epoch=3)
    ck = Checkpointer(tmp_path, "net", {}, best_so_far=90.0)
    trainer.epoch = 3
    ck.on_epoch_end(trainer, 3, {"train": _epoch_train(), "val": _epoch_val(85.0)})
    assert not best_checkpoint_path(tmp_path, "net").exists() and ck.best == 90.0


def test_plot_curves_writes_png(tmp_path):
    history = CSVHistory(tmp_path)
    trainer = FakeTrainer()
    history.on_train_begin(trainer, {})
    plot = PlotCurves(tmp_path / "curves.png", history)
    for epoch in (1, 2):
        logs = {"train": _epoch_train(30.0 * epoch, 2.0 / epoch), "val": _epoch_val(40.0 * epoch), "lr": 0.1}
        history.on_epoch_end(trainer, epoch, logs)
        plot.on_epoch_end(trainer, epoch, logs)
    data = (tmp_path / "curves.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_checkpoint_written_by_checkpointer_validates(tmp_path):
    meta = {"format": "videotrain-ckpt-1", "network": "net", "num_classes": 2, "classes": ["a", "b"],
            "model_kwargs": {}, "preprocess": {"clip_length": 8, "crop_size": 32, "resize_short": 37,
                                               "frame_interval": 2, "mean": [0, 0, 0], "std": [1, 1, 1]},
            "args": {"lr_base": 0.1}}
    trainer = FakeTrainer(end_epoch=1)
    Checkpointer(tmp_path, "net", meta).on_epoch_end(trainer, 1, {"train": _epoch_train(), "val": _epoch_val(50)})
    ckpt = load_checkpoint(checkpoint_path(tmp_path, "net", 1))
    assert ckpt["args"] == {"lr_base": 0.1} and ckpt["epoch"] == 1


def test_fake_trainer_matches_trainer_interface():
    # FakeTrainer stands in for Trainer above: keep the attributes the callbacks use in sync.
    from train.trainer import Trainer

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    from train.lr_schedule import StepLRSchedule

    real = Trainer(torch.nn.Linear(1, 1), opt, types.SimpleNamespace(), scheduler=StepLRSchedule(opt, 0.1),
                   end_epoch=1)
    for name in vars(FakeTrainer()):
        assert hasattr(real, name), name
