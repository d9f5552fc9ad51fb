"""The GPU fast paths, checked on the CPU: host reads per step, uint8 clips normalised on the device, the
multi-tensor EMA, the vectorised mixer, precise BN's momentum, and the option combinations that are refused."""
from __future__ import annotations

import argparse
import collections
import contextlib
import os
from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from data.transforms import MEAN, STD, NormalizeBatch, ToTensorNormalize, ToTensorUint8, train_transform
from network.sub_batchnorm import SubBatchNorm3d, convert_sub_batchnorm
from tests.train_util import MotionClips, TinyNet
from train import cli
from train.arguments import SYNC_BN_MULTIGRID, check_compile_compatible
from train.determinism import (
    CUBLAS_WORKSPACE,
    GlobalAvgPool3d,
    check_deterministic,
    enable_deterministic,
    replace_global_pooling,
)
from train.distributed import DistInfo, init_distributed
from train.ema import ModelEMA
from train.loaders import FixedLoader
from train.lr_schedule import StepLRSchedule
from train.mixing import ClipMixer, MixConfig
from train.precise_bn import update_bn_stats
from train.recipe import build_sync_bn
from train.trainer import Trainer

torch.set_num_threads(1)


def _collate(batch):
    return (torch.stack([b[0] for b in batch]), torch.tensor([b[1] for b in batch]),
            torch.tensor([b[2] for b in batch]))


# ------------------------------------------------------------------------------------------ host reads per step
_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


@contextlib.contextmanager
def _count_host_reads(counts: collections.Counter):
    """Count every read of a tensor's value by the host (each one a device synchronisation on a GPU), and fail
    on `torch.cuda.synchronize`. The mixer's decisions are not counted: they come from its own CPU generator."""
    originals = {name: getattr(torch.Tensor, name) for name in _READS}
    paused = [0]

    def counted(name):
        original = originals[name]

        def read(self, *args, **kwargs):
            if not paused[0]:
                counts[name] += 1
            return original(self, *args, **kwargs)
        return read

    decisions = ClipMixer.decisions

    def host_decisions(self, *args, **kwargs):
        paused[0] += 1
        try:
            return decisions(self, *args, **kwargs)
        finally:
            paused[0] -= 1

    def no_sync(*args, **kwargs):
        raise AssertionError("the training loop synchronised the device")

    with contextlib.ExitStack() as stack:
        for name in _READS:
            stack.enter_context(mock.patch.object(torch.Tensor, name, counted(name)))
        stack.enter_context(mock.patch.object(ClipMixer, "decisions", host_decisions))
        stack.enter_context(mock.patch.object(torch.cuda, "synchronize", no_sync))
        yield


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_a_training_step_reads_one_value_back_and_metrics_come_every_interval(grad_accum):
    torch.manual_seed(0)
    model, data = TinyNet(), MotionClips(32)
    loader = DataLoader(data, batch_size=4, collate_fn=_collate)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    logged = []

    class Record:
        def __getattr__(self, name):
            if name == "on_batch_end":
                return lambda trainer, batch, logs: logged.append("loss" in logs)
            return lambda *a, **k: None

    trainer = Trainer(model, opt, FixedLoader(lambda: loader, data, 4, 8, 16), scheduler=StepLRSchedule(opt, 0.1),
                      end_epoch=1, num_classes=2, clip_grad_norm=1.0, grad_accum=grad_accum, metrics_interval=4,
                      mixer=ClipMixer(MixConfig(mixup_alpha=0.4, cutmix_alpha=1.0)), ema=ModelEMA(model, 0.9),
                      callbacks=Record())
    counts: collections.Counter = collections.Counter()
    with _count_host_reads(counts):
        out = trainer.train_epoch(1)
    steps = 8 // grad_accum
    # One read per optimizer step (are the gradients finite?), one per 4 batches (the figures), and the epoch's
    # reduction and loader bookkeeping; the loop used to read 5 values per batch (13 with mixer and EMA).
    assert sum(counts.values()) <= steps + 2 + 2, counts
    assert logged == [False, False, False, True] * 2  # figures on the batches the printers log
    assert out["samples"] == 32 and np.isfinite(out["loss"])


def test_a_nonfinite_loss_skips_its_step_on_a_deferred_read():
    class NaNFirst(TinyNet):
        calls = 0

        def forward(self, x):
            self.calls += 1
            out = super().forward(x)
            return out * float("nan") if self.calls == 1 else out

    torch.manual_seed(0)
    model, data = NaNFirst(), MotionClips(8)
    loader = DataLoader(data, batch_size=4, collate_fn=_collate)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = Trainer(model, opt, FixedLoader(lambda: loader, data, 4, 8, 16), scheduler=StepLRSchedule(opt, 0.1),
                      end_epoch=1, num_classes=2, metrics_interval=8)
    before = model.conv.weight.detach().clone()
    trainer.max_batches = 1
    out = trainer.train_epoch(1)
    assert out["nonfinite"] == 1 and out["samples"] == 0
    assert torch.equal(model.conv.weight, before)  # the NaN gradients were never applied


# ------------------------------------------------------------------------------------------ uint8 clips
@pytest.mark.parametrize("channel_order", ["rgb", "bgr"])
def test_uint8_clips_normalised_on_the_device_equal_the_float_pipeline(channel_order):
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (4, 9, 11, 3), dtype=np.uint8) for _ in range(3)]
    mean, std = (MEAN, STD) if channel_order == "rgb" else (MEAN[::-1], STD[::-1])
    reference = torch.stack([ToTensorNormalize(mean, std, channel_order)(c) for c in clips])
    shipped = torch.stack([ToTensorUint8(channel_order)(c) for c in clips])
    assert shipped.dtype == torch.uint8 and shipped.shape == reference.shape
    assert shipped.element_size() * 4 == reference.element_size()
    assert torch.equal(NormalizeBatch(mean, std)(shipped), reference)  # bit for bit
    assert NormalizeBatch()(reference) is reference  # a normalised batch passes through
    # The whole training pipeline: same draws, same clip.
    frames = rng.integers(0, 256, (6, 40, 56, 3), dtype=np.uint8)
    floats = train_transform(24, 28)(frames, np.random.default_rng(5))
    uint8 = train_transform(24, 28, normalize=False)(frames, np.random.default_rng(5))
    assert torch.equal(NormalizeBatch()(uint8[None])[0], floats)


def test_a_training_run_on_uint8_clips_equals_the_float_run():
    class Uint8Clips(MotionClips):
        def __getitem__(self, i):
            clip, label, index = super().__getitem__(i)
            return (clip.clamp(0, 1) * 255).round().to(torch.uint8), label, index

    def run(uint8: bool) -> nn.Module:
        torch.manual_seed(0)
        model, data = TinyNet(), Uint8Clips(16)
        collate = _collate if uint8 else (lambda b: _collate(
            [(ToTensorNormalize()(c.permute(1, 2, 3, 0).numpy()), y, i) for c, y, i in b]))
        loader = DataLoader(data, batch_size=4, collate_fn=collate)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        Trainer(model, opt, FixedLoader(lambda: loader, data, 4, 8, 16), scheduler=StepLRSchedule(opt, 0.1),
                end_epoch=2, num_classes=2, input_transform=NormalizeBatch() if uint8 else None).fit()
        return model

    a, b = run(True), run(False)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k


# ------------------------------------------------------------------------------------------ mixer, EMA, precise BN
def _mix_per_clip(mixer: ClipMixer, clips: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """The mixer as it was written first: a loop over the clips (the reference for the vectorised one)."""
    n, _, _, h, w = clips.shape
    partner = torch.arange(n - 1, -1, -1)
    source = clips.clone()
    onehot = torch.nn.functional.one_hot(labels, num_classes).to(torch.float32)
    lams = torch.ones(n, dtype=torch.float32)
    for i, (mode, lam, box) in enumerate(mixer.decisions(n, h, w)):
        j = int(partner[i])
        if mode == "mixup":
            clips[i] = lam * source[i] + (1.0 - lam) * source[j]
        elif mode == "cutmix":
            y0, y1, x0, x1 = box
            clips[i, :, :, y0:y1, x0:x1] = source[j, :, :, y0:y1, x0:x1]
        lams[i] = lam
    lams = lams.unsqueeze(1)
    return clips, lams * onehot + (1.0 - lams) * onehot[partner]


@pytest.mark.parametrize("config", [MixConfig(mixup_alpha=0.8), MixConfig(cutmix_alpha=1.0),
                                    MixConfig(mixup_alpha=0.4, cutmix_alpha=1.0, prob=0.7)])
def test_vectorised_mixer_equals_the_per_clip_loop(config):
    clips = torch.randn(7, 3, 4, 12, 10, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 1])
    for seed in range(4):
        new = ClipMixer(config, seed)(clips.clone(), labels, 3)
        old = _mix_per_clip(ClipMixer(config, seed), clips.clone(), labels, 3)
        assert torch.equal(new[0], old[0]) and torch.equal(new[1], old[1])


class _Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(4)
        self.gru = nn.GRU(4, 4)
        self.fc = nn.Linear(4, 2)


def test_foreach_ema_equals_the_per_tensor_update_and_flattens_rnns():
    torch.manual_seed(0)
    model = _Recurrent()
    with mock.patch.object(nn.GRU, "flatten_parameters", autospec=True) as flatten:
        ema = ModelEMA(model, decay=0.9)
    assert flatten.call_count == 1 and flatten.call_args[0][0] is ema.module.gru
    reference = {k: v.clone() for k, v in ema.module.state_dict().items()}
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model.bn.num_batches_tracked.add_(1)
            model.bn.running_mean.add_(1.0)
        ema.update(model)
        for name, value in model.state_dict().items():
            if reference[name].dtype.is_floating_point:
                reference[name].mul_(0.9).add_(value, alpha=1 - 0.9)
            else:
                reference[name].copy_(value)
    for name, value in ema.module.state_dict().items():
        assert torch.equal(value, reference[name]), name
    assert int(ema.module.bn.num_batches_tracked) == 3


@pytest.mark.parametrize("bn_class", [nn.BatchNorm3d, lambda c: SubBatchNorm3d(c, group_size=2)])
def test_precise_bn_cumulative_momentum_equals_momentum_none(bn_class):
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 3, 2, 5, 5, generator=g) * (i + 1) + i, torch.zeros(4)) for i in range(4)]
    model = nn.Sequential(bn_class(3))
    update_bn_stats(model, batches, num_batches=4, device=torch.device("cpu"))
    reference = nn.Sequential(bn_class(3)).train()
    reference[0].momentum = None  # torch's cumulative average, which reads the batch counter every batch
    with torch.no_grad():
        for x, _ in batches:
            reference(x)
    assert torch.equal(model[0].running_mean, reference[0].running_mean)
    assert torch.equal(model[0].running_var, reference[0].running_var)
    assert model[0].momentum == 0.1


# ------------------------------------------------------------------------------------------ refused combinations
def test_sync_bn_with_multigrid_is_refused_with_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse_args(["--dataset", "d", "--sync-bn", "--short-cycles"])
    assert e.value.code == 2 and SYNC_BN_MULTIGRID in capsys.readouterr().err
    # A model that already has sub-batch BN is refused before SyncBatchNorm could replace its layers.
    model = convert_sub_batchnorm(nn.Sequential(nn.Conv3d(3, 4, 1), nn.BatchNorm3d(4)), 2)
    with pytest.raises(ValueError, match="--sync-bn cannot be combined"):
        build_sync_bn(model, argparse.Namespace(sync_bn=True), DistInfo(rank=0, world_size=2))
    assert isinstance(model[1], SubBatchNorm3d)


def test_compile_with_multigrid_is_refused():
    args = argparse.Namespace(compile=True, long_cycles=True, short_cycles=False)
    with pytest.raises(ValueError, match="--compile cannot be combined with --long-cycles/--short-cycles"):
        check_compile_compatible(args)
    check_compile_compatible(argparse.Namespace(compile=True, long_cycles=False, short_cycles=False))
    check_compile_compatible(argparse.Namespace(long_cycles=True, short_cycles=True))  # no --compile option yet


def test_one_process_on_gpu_k_makes_it_the_current_device(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    info = init_distributed([2])
    assert info.device == torch.device("cuda", 2) and chosen == [torch.device("cuda", 2)]


# ------------------------------------------------------------------------------------------ --deterministic
@pytest.fixture
def deterministic_mode(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    enable_deterministic()
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2], before[3]


def test_deterministic_mode_is_strict_and_fixes_the_cublas_workspace(deterministic_mode):
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
    assert not torch.backends.cudnn.benchmark


def test_deterministic_mode_replaces_global_pooling_and_refuses_other_kernels(deterministic_mode):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(3, 4, 3), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 2))
    x = torch.randn(2, 3, 4, 6, 6)
    before = model(x)
    assert replace_global_pooling(model) == 1 and isinstance(model[1], GlobalAvgPool3d)
    assert torch.allclose(model(x), before, atol=1e-6)
    check_deterministic(model, x, network="tiny")  # every kernel left is deterministic

    class Scatters(nn.Module):  # put_ has no deterministic kernel, on the CPU either
        def forward(self, x):
            out = torch.zeros(4)
            out.put_(torch.tensor([0, 0]), x.flatten()[:2])
            return out

    with pytest.raises(ValueError, match=r"^--deterministic: tiny uses put_, which does not have a deterministic"):
        check_deterministic(Scatters(), x, network="tiny")


# ------------------------------------------------------------------------------------------ DDP, fp16, timing
def _train_nan_on_one(rank: int, out: str) -> None:
    torch.manual_seed(0)
    net = TinyNet()
    calls = [0]

    def poisoned(module, args, output):
        calls[0] += 1
        return output * float("nan") if rank == 1 and calls[0] == 1 else output

    net.register_forward_hook(poisoned)
    model = nn.parallel.DistributedDataParallel(net)
    data = MotionClips(8)
    loader = DataLoader(data, batch_size=4, collate_fn=_collate)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    weights = []

    class Record:
        def __getattr__(self, name):
            if name == "on_batch_end":
                return lambda trainer, batch, logs: weights.append(net.fc.weight.detach().clone())
            return lambda *a, **k: None

    start = net.fc.weight.detach().clone()
    figures = Trainer(model, opt, FixedLoader(lambda: loader, data, 4, 8, 16), scheduler=StepLRSchedule(opt, 0.1),
                      end_epoch=1, num_classes=2, callbacks=Record(), dist_info=DistInfo(rank=rank, world_size=2),
                      metrics_interval=2).train_epoch(1)
    torch.save({"start": start, "weights": weights, "nonfinite": figures["nonfinite"]}, f"{out}/rank{rank}.pt")


def _rank_nan_on_one(rank: int, port: int, out: str) -> None:
    """One of two gloo ranks; rank 1's first loss is NaN. Both must skip that step together, without hanging."""
    import torch.distributed as dist

    from train.distributed import shutdown

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        _train_nan_on_one(rank, out)  # returns with DDP and its gloo work objects unreferenced
    finally:
        shutdown()


def test_a_nonfinite_loss_on_one_rank_skips_the_step_on_every_rank(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_nan_on_one, args=(port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert (r0["nonfinite"], r1["nonfinite"]) == (0, 1)
    for r in (r0, r1):
        assert torch.equal(r["weights"][0], r["start"])  # the first step was skipped on both ranks
        assert not torch.equal(r["weights"][1], r["start"])  # the second one was taken
    assert torch.equal(r0["weights"][1], r1["weights"][1])


def test_fp16_scaler_skips_overflowing_steps_and_backs_off():
    from train.precision import Precision

    param = nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([param], lr=1.0)
    precision = Precision("bf16", torch.device("cpu"))
    precision.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)  # what fp16 gets on CUDA
    precision.backward((param * float("inf")).sum())
    assert precision.step(opt) is False
    assert torch.equal(param.detach(), torch.ones(3)) and precision.scaler.get_scale() == 512.0
    opt.zero_grad()
    precision.backward(param.sum())
    assert precision.step(opt, clip_grad_norm=0.5) is True
    assert torch.allclose(param.detach(), torch.ones(3) - 0.5 / 3 ** 0.5)  # unscaled, clipped, applied


def test_step_timer_reads_cuda_events_only_once_they_completed(monkeypatch):
    from train.step_figures import StepTimer

    clock, done = [0.0], [False]

    class FakeEvent:
        def __init__(self, enable_timing):
            self.time, self.waited = None, False

        def record(self):
            clock[0] += 1.0
            self.time = clock[0]

        def query(self):
            return done[0] or self.waited

        def synchronize(self):
            self.waited = True

        def elapsed_time(self, end):
            return (end.time - self.time) * 1000.0  # milliseconds

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    timer = StepTimer(torch.device("cuda", 0))
    for step in range(3):
        timer.start()
        clock[0] += step  # a longer forward every step
        timer.mark()
        timings = timer.stop()
        # The first step waits for its events; later ones find the GPU behind and repeat the newest completed
        # step's timings (the first one's) rather than wait.
        assert timings == (1.0, 1.0)
    done[0] = True
    timer.start()
    clock[0] += 5
    timer.mark()
    assert timer.stop() == (6.0, 1.0)  # everything completed: this step's own timings
    assert not timer._pending


def test_deterministic_cli_runs_repeat_bit_for_bit_with_unchanged_checkpoints(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import network
    from tests.train_util import make_store, tiny_train_argv
    from train.checkpoint import checkpoint_path, load_checkpoint

    store = make_store(tmp_path / "data", classes=2, videos_per_class=3, frames=12)
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(root))
    states = []
    for run in ("a", "b"):
        argv = tiny_train_argv(store, tmp_path / run, "--deterministic", "--mixup", "0.4", network="r3d_18")
        done = subprocess.run([sys.executable, "-m", "train", *argv], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        states.append(load_checkpoint(checkpoint_path(tmp_path / run, "r3d_18", 1))["model"])
    expected = network.build_model("r3d_18", 2, width_mult=0.125).state_dict()
    assert list(states[0]) == list(expected)  # the deterministic pooling changed no key
    for k, v in states[0].items():
        assert torch.equal(v, states[1][k]), k
