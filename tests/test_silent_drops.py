"""What an epoch leaves out or repeats is said once: videos dropped by drop_last, short videos whose clips loop."""
from __future__ import annotations

import logging

from data.dataset import VideoDataset
from data.loader import build_loader
from tests.test_dataset import RAW, make_root
from train.loaders import FixedLoader


def _fixed(ds, batch):
    return FixedLoader(lambda: build_loader(ds, batch, train=True, workers=0), ds, batch, 4, 8)


def test_an_epoch_dropping_many_videos_to_drop_last_says_so_once(tmp_path, caplog):
    root = make_root(tmp_path, [("walk", f"w{i}", 20, "train") for i in range(25)])
    ds = VideoDataset(root, split="train", clip_length=4, frame_interval=1, transform=RAW)
    factory = _fixed(ds, 16)
    with caplog.at_level(logging.WARNING):
        for epoch in (1, 2, 3):
            factory(epoch)
    warnings = [r.getMessage() for r in caplog.records if "drop_last" in r.getMessage()]
    assert len(warnings) == 1 and "9 of 25 training videos" in warnings[0], warnings


def test_a_batch_that_divides_the_videos_says_nothing(tmp_path, caplog):
    root = make_root(tmp_path, [("walk", f"w{i}", 20, "train") for i in range(8)])
    ds = VideoDataset(root, split="train", clip_length=4, frame_interval=1, transform=RAW)
    with caplog.at_level(logging.WARNING):
        _fixed(ds, 4)(1)
    assert "drop_last" not in caplog.text and "loop" not in caplog.text


def test_short_training_videos_that_loop_are_said_once_per_run(tmp_path, caplog):
    root = make_root(tmp_path, [("walk", "long", 40, "train"), ("walk", "short", 5, "train")])
    ds = VideoDataset(root, split="train", clip_length=8, frame_interval=[1, 2], transform=RAW)
    factory = _fixed(ds, 1)
    with caplog.at_level(logging.WARNING):
        factory(1)
        factory(2)
    warnings = [r.getMessage() for r in caplog.records if "loop" in r.getMessage()]
    assert len(warnings) == 1 and "1 of 2 training videos" in warnings[0] and "walk/short" in warnings[0], warnings
