"""Process-group set-up from the torchrun environment, metric reduction, and rank-0-only helpers.

`torchrun --nproc_per_node=N script.py ...` sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT;
`init_distributed` reads them, picks NCCL on GPUs and gloo on CPU, and returns a `DistInfo`. Without those
variables it returns a single-process `DistInfo` and nothing is initialised.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

log = logging.getLogger(__name__)


class DistributedSetupError(ValueError):
    """Bad --gpus / device configuration (one-line message for the CLI)."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process runs: rank, world size, local rank and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def parse_gpus(text: str) -> list[int]:
    """argparse type for `--gpus 0,1`: a comma-separated list of distinct non-negative integers."""
    import argparse

    try:
        ids = [int(p) for p in text.split(",") if p.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--gpus takes GPU ids like 0 or 0,1 (got {text!r})") from None
    if not ids or any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError(f"--gpus takes distinct GPU ids like 0 or 0,1 (got {text!r})")
    return ids


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def torchrun_command(nproc: int, argv: Sequence[str], script: str) -> str:
    """The command line that runs this same training on `nproc` processes."""
    return " ".join(["torchrun", f"--nproc_per_node={nproc}", script, *argv])


def select_device(gpus: list[int] | None, local_rank: int = 0) -> torch.device:
    """The device for this process: `gpus[local_rank]` when GPUs are asked for, else CUDA if present, else CPU."""
    if gpus:
        if not torch.cuda.is_available():
            raise DistributedSetupError(f"--gpus {','.join(map(str, gpus))} was given but no CUDA GPU is "
                                        "available; leave out --gpus to train on the CPU")
        count = torch.cuda.device_count()
        bad = [g for g in gpus if g >= count]
        if bad:
            raise DistributedSetupError(f"--gpus names GPU {bad[0]} but only {count} GPU(s) are visible")
        if local_rank >= len(gpus):
            raise DistributedSetupError(f"local rank {local_rank} has no GPU in --gpus {gpus}")
        return torch.device("cuda", gpus[local_rank])
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def use_device(device: torch.device) -> torch.device:
    """Make `device` this process's current CUDA device (a no-op on the CPU); returns it.

    Whatever runs on "the current device" then uses it, not GPU 0: the DataLoader's pin-memory thread, kernels
    launched without an explicit device, NCCL. Without it, `--gpus 2` in one process also opens a context on GPU 0.
    """
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def init_distributed(gpus: list[int] | None = None, backend: str | None = None,
                     timeout_s: float = 1800.0) -> DistInfo:
    """Initialise the default process group from the torchrun environment (no-op for a single process)."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return DistInfo(device=use_device(select_device(gpus, 0)))
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device = use_device(select_device(gpus, local_rank))
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    if not dist.is_initialized():
        import datetime

        dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s),
                                device_id=device if device.type == "cuda" else None)
    log.info("rank %d/%d on %s (backend %s)", rank, world_size, device, backend)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown(synchronize: bool = True) -> None:
    """End a distributed run in an order that cannot crash the interpreter's exit.

    A barrier first: no rank leaves while another still has collectives in flight or is writing the final
    checkpoint (rank 0 reaches it only after its last save). Then the garbage that may still hold gloo work
    objects (DDP's reducer, finished all-reduce handles) is collected while Python is fully alive, and the
    group is destroyed, which joins gloo's worker threads. Done the other way round, a worker thread frees
    the last work object during interpreter teardown and the process aborts ("terminate called without an
    active exception"), which makes torchrun kill the other ranks. `synchronize=False` skips the barrier
    (a rank failing alone must not wait for the others).
    """
    import gc

    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if synchronize:
            dist.barrier()
    finally:
        gc.collect()
        dist.destroy_process_group()
        gc.collect()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of `t` over ranks (a copy; `t` itself is untouched). Works for CPU tensors with NCCL too."""
    if not info.distributed:
        return t.clone()
    dtype = t.dtype
    # NCCL needs device tensors; float64 sums keep counts exact.
    buf = t.detach().to(info.device, torch.float64 if dtype.is_floating_point else dtype).clone()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(t.device, dtype)


def all_reduce_max(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Element-wise max of `t` over ranks (a copy)."""
    if not info.distributed:
        return t.clone()
    buf = t.detach().to(info.device).clone()
    dist.all_reduce(buf, op=dist.ReduceOp.MAX)
    return buf.to(t.device)


def all_ranks_true(flag: bool, info: DistInfo) -> bool:
    """True only if `flag` is true on every rank (used so that all ranks skip a bad step together)."""
    if not info.distributed:
        return flag
    t = torch.tensor([0.0 if flag else 1.0])
    return float(all_reduce_sum(t, info).item()) == 0.0


def all_gather_objects(obj: object, info: DistInfo) -> list[object]:
    """Every rank's picklable `obj`, in rank order, on every rank (`[obj]` for a single process)."""
    if not info.distributed:
        return [obj]
    gathered: list[object] = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_buffers(model: torch.nn.Module, info: DistInfo, src: int = 0) -> None:
    """Copy rank `src`'s buffers (e.g. BN running statistics) to every rank, in place."""
    if not info.distributed:
        return
    for buf in model.buffers():
        if info.device.type == "cuda" or buf.device.type == "cpu":
            dist.broadcast(buf.data, src=src)


class ShardSampler(Sampler[int]):
    """Evaluation sampler: rank r takes indices r, r+W, r+2W, ... with no padding and no duplicates.

    Unlike `DistributedSampler` it never repeats samples to even out the shards, so summed metrics are exact.
    """

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.length = length
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))
