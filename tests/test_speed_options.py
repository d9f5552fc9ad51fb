"""The speed options of a training run compute what the plain run computes, and their checkpoints are plain."""
from __future__ import annotations

import argparse
import copy
import re
import shutil

import pytest
import torch

import network
from network.registry import _MODELS
from tests.train_util import TinyNet, make_store, tiny_train_argv
from train import cli
from train.checkpoint import build_model_from_checkpoint, checkpoint_path, load_checkpoint
from train.speed_options import compile_model, configure_model, wrap_input

CLIP = (2, 3, 8, 32, 32)
HAVE_COMPILER = shutil.which("g++") or shutil.which("c++")
NO_COMPILER = "inductor needs a C++ compiler (g++/c++) on the CPU and none is on PATH"


def _options(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"channels_last": False, "compile": False, "activation_checkpointing": False, **kw})


def _step(model, x, train: bool = True):
    """Forward and backward; the output and every gradient."""
    model.train(train)
    out = model(x)
    out.square().sum().backward()
    return [out.detach()] + [p.grad.clone() for p in model.parameters()]


def _assert_fp32_close(actual, expected):
    """Equal up to float32 summation order, measured against each tensor's norm (a weight gradient sums
    thousands of products: a near-zero element has no meaningful relative error of its own; the gradient of a
    conv bias under BN is zero up to rounding)."""
    for a, e in zip(actual, expected, strict=True):
        error = float((a - e).norm())
        assert error <= 1e-5 * float(e.norm()) + 1e-6, f"error {error:.1e} for a norm of {float(e.norm()):.1e}"


@pytest.mark.parametrize("name,kw", [("r3d_18", {}), ("mict_resnet18", {"version": "v2"})])
def test_channels_last_gives_the_plain_outputs_and_gradients(name, kw):
    torch.manual_seed(0)
    plain = network.build_model(name, 5, width_mult=0.125, **kw)
    fast = copy.deepcopy(plain)
    configure_model(fast, _options(channels_last=True))
    seen = []
    first_conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv3d))
    first_conv.register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous(
        memory_format=torch.channels_last_3d)))
    x = torch.randn(CLIP)
    # eval mode: BN over two tiny clips in train mode is so ill-conditioned that plain float32 itself is off by
    # 1e-2 from float64 there; the layout's own error shows with frozen statistics
    _assert_fp32_close(_step(wrap_input(fast, _options(channels_last=True)), x, train=False),
                       _step(plain, x, train=False))
    assert seen == [True] and first_conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) for p in fast.parameters()) \
        == (name == "mict_resnet18")  # MiCT's 2-D branch in channels_last


def _saved_bytes(model, x) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one forward."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return total


@pytest.mark.parametrize("name", ["srtg_r3d_50", "ir_csn_50", "mtnet_xs"])
def test_activation_checkpointing_gives_the_same_gradients_and_bn_statistics(name):
    torch.manual_seed(0)
    plain = network.build_model(name, 5, width_mult=0.125).train()
    fast = copy.deepcopy(plain)
    configure_model(fast, _options(activation_checkpointing=True))
    x = torch.randn(2, 3, 4, 24, 24)
    assert _saved_bytes(fast, x) < 0.7 * _saved_bytes(plain, x)
    for m in (plain, fast):  # the measurement above ran a forward: start both from the same statistics again
        m.load_state_dict(plain.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(_step(fast, x), _step(plain, x)))  # output and gradients
    # the recomputation in backward must not update BN's running statistics a second time
    assert all(torch.equal(a, b) for a, b in zip(fast.buffers(), plain.buffers()))


@pytest.mark.skipif(not HAVE_COMPILER, reason=NO_COMPILER)
def test_compile_with_inductor_gives_the_plain_outputs_and_gradients():
    torch.manual_seed(0)
    plain = TinyNet(num_classes=3, width=4)
    compiled = compile_model(copy.deepcopy(plain), _options(compile=True))
    assert compiled is not plain and hasattr(compiled, "_orig_mod")
    x = torch.randn(2, 3, 4, 12, 12)
    _assert_fp32_close(_step(compiled, x), _step(plain, x))


# -- through the trainer's command line ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("speed_options_store"), classes=2, videos_per_class=4)


def _tiny_net(num_classes: int = 400, width_mult: float = 1.0) -> TinyNet:
    """A registry builder of the one-conv test network (inductor compiles it in seconds, a ResNet in a minute)."""
    return TinyNet(num_classes=num_classes, width=4)


@pytest.fixture()
def tiny_network(monkeypatch):
    monkeypatch.setitem(_MODELS, "tiny_test_net", _tiny_net)  # removed again after the test
    return "tiny_test_net"


def _fails(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1 and err[-1] == errors[0] and not any("Traceback" in line for line in err), err
    return errors[0]


def _weights(path):
    return load_checkpoint(path)["model"]


@pytest.mark.skipif(not HAVE_COMPILER, reason=NO_COMPILER)
def test_compiled_channels_last_run_resumes_either_way_and_saves_plain_checkpoints(store, tmp_path, tiny_network):
    def run(model_dir, *extra):
        assert cli.main(tiny_train_argv(store, model_dir, "--debug-mode", *extra, network=tiny_network)) == 0

    plain, fast = tmp_path / "plain", tmp_path / "fast"
    run(plain, "--end-epoch", "2")
    shutil.copytree(plain, fast)
    checkpoint_path(fast, tiny_network, 2).unlink()
    # a plain checkpoint resumed compiled and channels-last, then that run's checkpoint resumed plain
    run(fast, "--end-epoch", "2", "--resume-epoch", "1", "--compile", "--channels-last")
    saved = load_checkpoint(checkpoint_path(fast, tiny_network, 2))
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in saved["model"])
    model, _, _ = build_model_from_checkpoint(saved)  # strict load into the plain network
    assert isinstance(model, TinyNet)
    for name, value in _weights(checkpoint_path(plain, tiny_network, 2)).items():
        torch.testing.assert_close(saved["model"][name], value, rtol=1e-4, atol=1e-6)
    run(fast, "--end-epoch", "3", "--resume-epoch", "2")
    assert checkpoint_path(fast, tiny_network, 3).is_file()


def test_compile_with_multigrid_is_refused(store, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(tiny_train_argv(store, tmp_path / "run", "--compile", "--long-cycles"))
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and "error: " in last and re.search(r"--compile .*--long-cycles/--short-cycles", last)


def test_activation_checkpointing_is_refused_for_networks_without_it(store, tmp_path, capsys):
    line = _fails(tiny_train_argv(store, tmp_path / "run", "--activation-checkpointing"), capsys)
    assert "--activation-checkpointing: mict_resnet18 has no activation checkpointing" in line


def test_activation_checkpointing_run_equals_the_plain_run(store, tmp_path):
    for model_dir, extra in ((tmp_path / "plain", ()), (tmp_path / "ckpt", ("--activation-checkpointing",))):
        assert cli.main(tiny_train_argv(store, model_dir, "--debug-mode", *extra, network="r3d_18")) == 0
    a, b = (_weights(checkpoint_path(d, "r3d_18", 1)) for d in (tmp_path / "plain", tmp_path / "ckpt"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
