"""TensorBoard logging, read back with TensorBoard's own event reader."""
from __future__ import annotations

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from tests.train_util import MotionClips, TinyNet
from train.callbacks import CallbackList, SpeedMonitor
from train.distributed import DistInfo
from train.loaders import FixedLoader
from train.lr_schedule import StepLRSchedule
from train.tensorboard import TensorBoardLogger
from train.trainer import Trainer

torch.set_num_threads(1)


def _collate(b):
    return torch.stack([x[0] for x in b]), torch.tensor([x[1] for x in b]), torch.tensor([x[2] for x in b])


def _fit(log_dir, rank: int = 0):
    torch.manual_seed(0)
    model, data, val = TinyNet(), MotionClips(16), MotionClips(8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    board = TensorBoardLogger(log_dir, args={"network": "tiny", "lr_base": 0.1}, classes=["right", "left"],
                              log_interval=1)
    trainer = Trainer(model, opt, FixedLoader(lambda: DataLoader(data, batch_size=4, collate_fn=_collate), data, 4,
                                              8, 16),
                      scheduler=StepLRSchedule(opt, 0.1), end_epoch=2, num_classes=2, num_val_videos=8,
                      val_loader=DataLoader(val, batch_size=4, collate_fn=_collate),
                      callbacks=CallbackList([SpeedMonitor(colour=False), board]))
    trainer.dist = DistInfo(rank=rank)  # rank 1 without a process group: only is_main differs
    trainer.fit()


def test_tensorboard_event_file_holds_scalars_confusion_matrix_and_arguments(tmp_path):
    _fit(tmp_path / "tb")
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    expected = {"train/loss", "train/top1", "train/top5", "train/lr", "batch/clips", "batch/frames", "batch/crop",
                "speed/read", "speed/forward", "speed/backward", "time/data_s", "time/data_fraction",
                "epoch/train_loss", "epoch/val_video_top1", "epoch/lr"}
    assert expected <= set(tags["scalars"])
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, 9))  # 4 batches x 2 epochs, global steps
    assert [e.value for e in events.Scalars("batch/clips")] == [4.0] * 8
    assert all(0 <= e.value <= 1 for e in events.Scalars("time/data_fraction"))
    assert [e.step for e in events.Scalars("epoch/val_video_top1")] == [1, 2]
    images = events.Images("val/confusion_matrix")
    assert [i.step for i in images] == [1, 2] and images[0].width > 50 and images[0].height > 50
    text = events.Tensors([t for t in tags["tensors"] if t.startswith("run/arguments")][0])[0].tensor_proto.string_val[0].decode()
    assert "lr_base" in text and "tiny" in text


def test_tensorboard_writes_nothing_on_other_ranks(tmp_path):
    _fit(tmp_path / "tb", rank=1)
    assert not (tmp_path / "tb").exists()
