"""Distributed training on CPU: two gloo processes agree on the weights after a step; helpers and samplers."""
from __future__ import annotations

import argparse
import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

from tests.train_util import make_store, run_rank, tiny_train_argv
from train.distributed import (
    DistInfo,
    DistributedSetupError,
    ShardSampler,
    all_ranks_true,
    all_reduce_sum,
    parse_gpus,
    select_device,
    torchrun_command,
)


def test_parse_gpus():
    assert parse_gpus("0") == [0] and parse_gpus("0,1,3") == [0, 1, 3]
    for bad in ("", "a", "0,0", "-1", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_gpus(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_select_device_without_gpus():
    assert select_device(None) == torch.device("cpu")
    with pytest.raises(DistributedSetupError, match="no CUDA GPU is available"):
        select_device([0])


def test_shard_sampler_covers_every_index_once():
    shards = [list(ShardSampler(11, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))
    assert [len(ShardSampler(11, r, 3)) for r in range(3)] == [4, 4, 3]


def test_single_process_helpers_are_identity():
    info = DistInfo()
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(all_reduce_sum(t, info), t) and all_ranks_true(False, info) is False
    assert torchrun_command(2, ["--gpus", "0,1"], "train_ucf101.py") == \
        "torchrun --nproc_per_node=2 train_ucf101.py --gpus 0,1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, store: str, out: str) -> None:
    """One torchrun-like process: env variables, then the real CLI set-up and one training step."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from pathlib import Path

    from train import cli

    def step_and_save(info) -> None:
        args = cli.parse_args(tiny_train_argv(Path(store), Path(out) / "run", "--batch-size", "2",
                                              "--lr-base", "0.5"))
        setup = cli.prepare(args, info)
        model = setup.model
        before = {k: v.detach().clone() for k, v in model.named_parameters()}
        setup.trainer.max_batches = 1  # one optimisation step on each rank, on different clips
        history = cli.train(setup).history
        torch.save({"before": before, "after": {k: v.detach().clone() for k, v in model.named_parameters()},
                    "buffers": {k: v.clone() for k, v in model.named_buffers()},
                    "train": history[-1]["train"], "val": history[-1]["val"], "world": info.world_size},
                   Path(out) / f"rank{rank}.pt")

    run_rank(step_and_save)


def test_two_gloo_processes_hold_identical_weights_after_a_step(tmp_path):
    store = make_store(tmp_path / "data", classes=2, videos_per_class=6)  # 8 train, 4 val videos
    mp.spawn(_rank_main, args=(2, _free_port(), str(store), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["world"] == r1["world"] == 2
    moved = 0
    for k in r0["after"]:
        assert torch.equal(r0["before"][k], r1["before"][k]), k  # same start (DDP broadcasts rank 0's)
        assert torch.equal(r0["after"][k], r1["after"][k]), k  # same gradients (all-reduced) -> same step
        moved += not torch.equal(r0["before"][k], r0["after"][k])
    assert moved > 0
    for k in r0["buffers"]:  # BN statistics synchronised from rank 0 before validation
        assert torch.equal(r0["buffers"][k], r1["buffers"][k]), k
    # Metrics are reduced over ranks: 2 ranks x 1 batch of 2 clips; the 4 val videos split between the ranks.
    assert r0["train"]["samples"] == r1["train"]["samples"] == 4
    figures = ("loss", "clip_top1", "clip_top5", "video_top1", "video_top5", "clips", "videos")  # not the timings
    assert {k: r0["val"][k] for k in figures} == {k: r1["val"][k] for k in figures}
    assert r0["val"]["videos"] == 4 and r0["val"]["clips"] == 4
    run = tmp_path / "run"
    assert (run / "mict_resnet18_ep-0001.pth").is_file()
    assert len((run / "train_results.csv").read_text().splitlines()) == 2  # one header, one epoch (rank 0 only)


def _rank_main_multigrid(rank: int, world: int, port: int, store: str, out: str) -> None:
    """One rank of a 2-process run with both multigrid cycles, recording the shape and lr of every batch."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from pathlib import Path

    from train import cli
    from train.callbacks import Callback

    seen = []

    class Record(Callback):
        def on_batch_begin(self, trainer, batch, logs):
            seen.append((logs["epoch"], logs["shape"], logs["cycle"], logs["lr"]))

    def train_and_save(info) -> None:
        args = cli.parse_args(tiny_train_argv(Path(store), Path(out) / "run", "--long-cycles", "--short-cycles",
                                              "--end-epoch", "4", "--lr-steps", "2", "--batch-size", "1",
                                              "--debug-mode"))
        setup = cli.prepare(args, info, extra_callbacks=[Record()])
        cli.train(setup)
        torch.save({"seen": seen, "params": {k: v.detach().clone() for k, v in setup.model.named_parameters()},
                    "schedule": setup.trainer.loader_for_epoch.state_dict()}, Path(out) / f"rank{rank}.pt")

    run_rank(train_and_save)


def test_two_gloo_processes_follow_the_same_multigrid_schedule(tmp_path):
    # 36 training videos: 18 per rank, room for the largest batch (8 clips at base batch 1).
    store = make_store(tmp_path / "data", classes=2, videos_per_class=24)
    # Ranks that disagreed on a batch shape would wait for each other's gradients forever: bound the wait.
    ctx = mp.spawn(_rank_main_multigrid, args=(2, _free_port(), str(store), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 300
    while not ctx.join(timeout=2):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.terminate()
            pytest.fail("the two multigrid ranks did not finish within 300 s (a DDP hang?)")
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    # Every rank trains on the same shape, short-cycle slot and lr at every step (DDP needs it), and the
    # schedule really moves through long-cycle shapes and short-cycle slots.
    assert r0["seen"] == r1["seen"]
    assert len({s[1] for s in r0["seen"]}) >= 4 and {s[2] for s in r0["seen"]} == {0, 1, 2}
    assert [e for e, *_ in r0["seen"]] == sorted(e for e, *_ in r0["seen"]) and r0["seen"][-1][0] == 4
    for k in r0["params"]:
        assert torch.equal(r0["params"][k], r1["params"][k]), k
    assert r0["schedule"] == r1["schedule"]
