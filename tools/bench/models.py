"""Speed benchmark of the model zoo, side by side with torchvision's r3d_18 / mc3_18 / r2plus1d_18.

    python -m tools.bench.models                        # every model, 16x112x112 and 16x160x160, batch 1 and 8
    python -m tools.bench.models --quick                # one size, batch 1, 2 repeats: checks the tool end to end
    python -m tools.bench.models --models mict_resnet18,r3d_18,tv_r3d_18 --sizes 16x160x160 --out bench.md
    python -m tools.bench.models --models r3d_50,srtg_r3d_50,srtg_r3d_50+gates --sizes 16x112x112 --batches 1
                                                        # NAME@LAYOUT and NAME+gates: layout, temporal gates on

For every model, input size and batch: parameters, GFLOPs per clip (torch.utils.flop_counter, 2 FLOPs per
multiply-add; torchvision's model tables quote multiply-adds, i.e. half), forward clips/s and frames/s (eval mode,
`torch.inference_mode`, best of `--repeats` timed runs after a warm-up, CUDA synchronised) and peak memory:
- CUDA: `torch.cuda.max_memory_allocated` over one forward (parameters + input + activations).
- CPU: peak bytes of live tensor storages during one forward (parameters + input + activations), tracked by a
  dispatch mode that sees every aten output and notices when its storage is freed. It does not see allocator
  caching or oneDNN scratch buffers; process RSS is not reported since it only ever grows inside one process.
Models that are compared are built together and timed in turn (A, B, C, C, B, A, ...), so that load from other
processes on a shared machine hits them alike. `--clock process` (with `--threads 1`) times CPU time instead of
elapsed time, which other processes on a busy machine disturb far less. An options table measures
`torch.no_grad` (vs inference_mode), channels_last(_3d) memory format, autocast and `torch.compile` on a few
models.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

import network
from data.atomic import atomic_write_text
from network import to_channels_last
from tools.bench.models_report import Result, format_size, machine_info, main_table, options_table, targets
from train.console import die, setup_logging
from train.inference import add_device_argument, resolve_device

log = logging.getLogger(__name__)

TORCHVISION = ("tv_r3d_18", "tv_mc3_18", "tv_r2plus1d_18")
#: Models timed together (interleaved): the MiCT-vs-R3D target, the ours-vs-torchvision targets, the MTNets.
GROUPS = (("mict_resnet18", "r3d_18", "tv_r3d_18"), ("mc3_18", "tv_mc3_18"), ("r2plus1d_18", "tv_r2plus1d_18"),
          ("mtnet_xs", "mtnet_s", "mtnet_m"))
OPTIONS = ("no_grad", "channels_last", "autocast", "compile")


def all_model_names() -> list[str]:
    return network.list_models() + list(TORCHVISION)


def split_spec(spec: str) -> tuple[str, dict[str, object]]:
    """`NAME[@LAYOUT][+gates]` -> (registry name, builder kwargs): `srtg_r3d_18@srtg+gates` is srtg_r3d_18 in
    the SRTG layout with its temporal gates on (the cost of the cycle-consistency test)."""
    kw: dict[str, object] = {}
    if spec.endswith("+gates"):
        spec, kw["temporal_gates"] = spec[: -len("+gates")], True
    if "@" in spec:
        spec, kw["layout"] = spec.split("@", 1)
    return spec, kw


def build(name: str, num_classes: int | None) -> nn.Module:
    """One of ours (registry, `split_spec` names) or torchvision's (`tv_` prefix), each at its default number of
    classes unless given."""
    name, kw = split_spec(name)
    if name.startswith("tv_"):
        from torchvision.models import video as tv_video

        model = getattr(tv_video, name[3:])(num_classes=num_classes or 400)
        model.min_frames = 1
        return model
    if num_classes is None:
        num_classes = int(network.model_defaults(name)["num_classes"])
    return network.build_model(name, num_classes, **kw)


# ---------------------------------------------------------------------------------------------------------------
# measurement helpers


class LiveTensorMemory(TorchDispatchMode):
    """Peak bytes of tensor storages created by the aten ops run under this mode and still alive.

    `known` tensors (parameters, the input) are counted once in `baseline` and never again."""

    def __init__(self, known: Sequence[Tensor]) -> None:
        super().__init__()
        self._seen = {t.untyped_storage()._cdata for t in known}
        self.baseline = sum(t.untyped_storage().nbytes() for t in {t.untyped_storage()._cdata: t for t in known}
                            .values())
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def _prune(self) -> None:
        dead = [k for k, (ref, _) in self._live.items() if ref.expired()]
        for k in dead:
            self.current -= self._live.pop(k)[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's signature
        self._prune()
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, Tensor):
                storage = t.untyped_storage()
                key = storage._cdata
                if key not in self._seen and key not in self._live:
                    self._live[key] = (StorageWeakRef(storage), storage.nbytes())
                    self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out

    @property
    def peak_bytes(self) -> int:
        return self.baseline + self.peak


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Variant:
    """How a model is run: grad mode, memory format, autocast, compile."""

    name: str = "inference_mode"
    grad_ctx: Callable[[], object] = torch.inference_mode
    channels_last: bool = False
    autocast: bool = False
    compile: bool = False

    def context(self, device: torch.device) -> ExitStack:
        stack = ExitStack()
        stack.enter_context(self.grad_ctx())
        if self.autocast:
            dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
            stack.enter_context(torch.autocast(device.type, dtype=dtype))
        return stack


def variant(option: str) -> Variant:
    if option == "base":
        return Variant()
    if option == "no_grad":
        return Variant("no_grad", torch.no_grad)
    if option == "channels_last":
        return Variant("channels_last", channels_last=True)
    if option == "autocast":
        return Variant("autocast", autocast=True)
    if option == "compile":
        return Variant("compile", compile=True)
    raise ValueError(f"unknown option {option!r}; valid: {', '.join(OPTIONS)}")


class Runner:
    """Builds one group of models on a device and measures them interleaved."""

    def __init__(self, names: Sequence[str], device: torch.device, var: Variant, num_classes: int | None,
                 warmup: int | None, repeats: int, clock: Callable[[], float] = time.perf_counter) -> None:
        self.device, self.var, self.repeats = device, var, repeats
        # GPUs need a few runs to settle clocks and cuDNN's algorithm choice (cudnn.benchmark)
        self.warmup = warmup if warmup is not None else (3 if device.type == "cuda" else 1)
        self.clock = clock if device.type == "cpu" else time.perf_counter  # a GPU is timed by the wall clock
        self.models: dict[str, nn.Module] = {}
        self.params: dict[str, int] = {}
        for name in names:
            model = build(name, num_classes).eval().to(device)
            self.params[name] = sum(p.numel() for p in model.parameters())
            if var.channels_last:
                to_channels_last(model)
            if var.compile:
                model = torch.compile(model)
            self.models[name] = model

    def _input(self, batch: int, size: tuple[int, int, int]) -> Tensor:
        x = torch.randn(batch, 3, *size, device=self.device)
        if self.var.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return x

    def _forward(self, model: nn.Module, x: Tensor) -> float:
        """Seconds per forward. On CUDA one sample averages 10 forwards between two synchronisations, since a
        single small forward is too short for the host clock."""
        iters = 10 if self.device.type == "cuda" else 1
        _sync(self.device)
        start = self.clock()
        with self.var.context(self.device):
            for _ in range(iters):
                model(x)
        _sync(self.device)
        return (self.clock() - start) / iters

    def _instrumented(self, name: str, model: nn.Module, x: Tensor, res: Result) -> None:
        """The first (warm-up) forward: FLOPs and peak memory, or, for a compiled model, the compile time."""
        if self.var.compile:
            start = time.perf_counter()
            self._forward(model, x)
            res.note = f"compile + first run {time.perf_counter() - start:.0f} s"
            return
        flops = FlopCounterMode(display=False)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            with self.var.context(self.device), flops:
                model(x)
            _sync(self.device)
            res.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            tracker = LiveTensorMemory(list(model.parameters()) + list(model.buffers()) + [x])
            with self.var.context(self.device), flops, tracker:
                model(x)
            res.peak_mb = tracker.peak_bytes / 2**20
        res.gflops = flops.get_total_flops() / x.shape[0] / 1e9

    def measure(self, size: tuple[int, int, int], batch: int, progress: tqdm) -> list[Result]:
        results: dict[str, Result] = {}
        x = self._input(batch, size)
        for name, model in self.models.items():
            res = Result(self.device.type, name, size, batch, self.var.name, self.params[name])
            results[name] = res
            min_frames = getattr(model, "min_frames", getattr(getattr(model, "_orig_mod", None), "min_frames", 1))
            if size[0] < min_frames:
                res.note = f"needs >= {min_frames} frames"
                continue
            try:
                self._instrumented(name, model, x, res)
                for _ in range(self.warmup - 1):
                    self._forward(model, x)
            except Exception as e:  # one failing variant (e.g. compile without a compiler) must not stop the run
                res.note = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
                log.warning("%s %s batch %d %s: %s", name, "x".join(map(str, size)), batch, self.var.name, res.note)
        runnable = [n for n, r in results.items() if not r.note.startswith(("needs", "failed"))]
        for r in range(self.repeats):
            # interleaved A, B, C, then C, B, A, ...: each model also runs right after its twin, whose freed
            # buffers it can reuse (the first model after a different one pays the page faults of fresh memory)
            for name in (runnable if r % 2 == 0 else runnable[::-1]):
                results[name].times.append(self._forward(self.models[name], x))
                progress.update(1)
        return list(results.values())


# ---------------------------------------------------------------------------------------------------------------
# command line


def _parse_sizes(text: str) -> list[tuple[int, int, int]]:
    sizes = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        try:
            dims = [int(p) for p in parts]
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad size {item!r}: expected TxHxW like 16x112x112") from None
        if len(dims) == 2:
            dims = [dims[0], dims[1], dims[1]]
        if len(dims) != 3 or min(dims) < 1:
            raise argparse.ArgumentTypeError(f"bad size {item!r}: expected TxHxW like 16x112x112")
        sizes.append(tuple(dims))
    return sizes


def _parse_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"values must be >= 1, got {text!r}")
    return values


def _parse_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.bench.models", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=_parse_list, default=None,
                   help="comma-separated names (default: all registered + tv_r3d_18,tv_mc3_18,tv_r2plus1d_18)")
    p.add_argument("--sizes", type=_parse_sizes, default=None, help="TxHxW list (default 16x112x112,16x160x160)")
    p.add_argument("--batches", type=_parse_ints, default=None, help="batch sizes (default 1,8)")
    p.add_argument("--repeats", type=int, default=None, help="timed forwards per measurement (default 3)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed forwards first, >= 1 (the first is instrumented); default 1 on CPU, 3 on CUDA")
    add_device_argument(p, help="auto: the CPU, and CUDA too when available; cpu, cuda or cuda:N: only that one")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--clock", choices=("wall", "process"), default="wall",
                   help="wall: elapsed time (default); process: CPU time of this process, which other processes on "
                        "a busy machine disturb far less; use it with --threads 1 and CPU only (it sums threads)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classifier size (default: each model's own: 101 for MiCT, 400 otherwise)")
    p.add_argument("--options", type=_parse_list, default=None,
                   help=f"variants for the options table, from {','.join(OPTIONS)} "
                        "(default no_grad,channels_last,autocast,compile; --quick: no_grad,channels_last)")
    p.add_argument("--option-models", type=_parse_list, default=None,
                   help="models for the options table (default mict_resnet18,r3d_18; --quick: mict_resnet18); "
                        "measured at the first size and the largest batch")
    p.add_argument("--quick", action="store_true",
                   help="check the tool end to end: first size only, batch 1, 2 repeats (unless given)")
    p.add_argument("--out", help="also write the markdown report to this file")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    args.sizes = args.sizes or ([(16, 112, 112)] if args.quick else [(16, 112, 112), (16, 160, 160)])
    args.batches = args.batches or ([1] if args.quick else [1, 8])
    args.repeats = args.repeats if args.repeats is not None else (2 if args.quick else 3)
    if args.options is None:
        args.options = ["no_grad", "channels_last"] if args.quick else list(OPTIONS)
    if args.option_models is None:
        args.option_models = ["mict_resnet18"] if args.quick else ["mict_resnet18", "r3d_18"]
    return args


def _groups(names: Sequence[str]) -> list[list[str]]:
    chosen = list(dict.fromkeys(names))
    groups, placed = [], set()
    for group in GROUPS:
        members = [n for n in group if n in chosen]
        if len(members) > 1:  # a lone member joins its twins below instead
            groups.append(members)
            placed.update(members)
    # an srtg_ model, its gated form and its plain twin in one layout are timed together: the SR and gate costs
    twins: dict[tuple[str, object], list[str]] = {}
    for n in chosen:
        if n not in placed:
            base, kw = split_spec(n)
            twins.setdefault((base.removeprefix("srtg_"), kw.get("layout")), []).append(n)
    return groups + list(twins.values())


def run(args: argparse.Namespace, command: str = "python -m tools.bench.models") -> str:
    valid = all_model_names()
    models = args.models or valid
    for name in models + args.option_models:
        if split_spec(name)[0] not in valid:
            die(f"unknown model {name!r}; valid names: {', '.join(valid)} (NAME@LAYOUT, NAME+gates for srtg_*)")
    for opt in args.options:
        if opt not in OPTIONS:
            die(f"unknown option {opt!r}; valid: {', '.join(OPTIONS)}")
    if args.repeats < 1 or (args.warmup is not None and args.warmup < 1):
        die("--repeats and --warmup must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    if args.clock == "process" and torch.get_num_threads() > 1:
        log.warning("--clock process sums the CPU time of all %d threads; use --threads 1", torch.get_num_threads())
    devices = [torch.device("cpu")]
    if args.device == "auto":
        devices += [torch.device("cuda")] if torch.cuda.is_available() else []
    elif args.device != "cpu":
        try:
            devices = [resolve_device(args.device)]
        except ValueError as e:
            die(str(e))
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True

    info = machine_info(devices)
    groups = _groups(models)
    opt_size, opt_batch = args.sizes[0], max(args.batches)
    n_main = len(devices) * len(models) * len(args.sizes) * len(args.batches) * args.repeats
    n_opt = len(devices) * len(args.option_models) * len(args.options) * args.repeats
    results: list[Result] = []
    opt_results: list[Result] = []
    start = time.perf_counter()
    with tqdm(total=n_main + n_opt, desc="forwards", unit="fwd", file=sys.stderr) as progress:
        for device in devices:
            for group in groups:
                runner = Runner(group, device, variant("base"), args.num_classes, args.warmup, args.repeats,
                                clock)
                for size in args.sizes:
                    for batch in args.batches:
                        progress.set_postfix_str(f"{device.type} {','.join(group)} {format_size(size)} b{batch}")
                        results += runner.measure(size, batch, progress)
                del runner
            for option in args.options:
                for name in args.option_models:
                    progress.set_postfix_str(f"{device.type} {name} {option}")
                    try:
                        runner = Runner([name], device, variant(option), args.num_classes, args.warmup,
                                        args.repeats, clock)
                        opt_results += runner.measure(opt_size, opt_batch, progress)
                        del runner
                    except Exception as e:  # report the variant as failed, keep measuring the others
                        opt_results.append(Result(device.type, name, opt_size, opt_batch, option, 0,
                                                  note=f"failed: {type(e).__name__}: {e}"[:160]))
    # the order models were measured in is by group; print them in the order asked
    order = {n: i for i, n in enumerate(models)}
    results.sort(key=lambda r: (r.device, r.size, r.batch, order[r.model]))
    report = [f"### Model speed (`{command}`)", "", *info,
              f"- {args.repeats} timed forwards per row (CUDA: each the mean of 10) after "
              f"{args.warmup or '1 (CPU) / 3 (CUDA)'} warm-up (best and median reported); "
              f"eval mode, `torch.inference_mode`; {args.clock} clock; total run {time.perf_counter() - start:.0f} s",
              "",
              *main_table(results), "", "Targets:", "", *(targets(results) or ["- (not measured in this run)"])]
    if opt_results:
        report += ["", f"Options (at {format_size(opt_size)}, batch {opt_batch}):", "", *options_table(results, opt_results)]
    report += ["", "GFLOPs count 2 per multiply-add (torch.utils.flop_counter; the LSTM / GRU cells of the SRTG and "
               "MTNet models are not counted, as in the MTNet paper's conv + linear GMACs); GMACs = GFLOPs / 2 "
               "is what torchvision's tables call GFLOPS (40.7 for r3d_18 at 16x112x112). CPU peak MB = "
               "parameters + input + peak live activation storage seen by a dispatch mode (no allocator cache, "
               "no oneDNN scratch); CUDA peak MB = torch.cuda.max_memory_allocated."]
    return "\n".join(report) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0; bad input exits 2)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    setup_logging(args.log_level)
    report = run(args, " ".join(["python -m tools.bench.models", *argv]))
    print(report)
    if args.out:
        atomic_write_text(args.out, report)
        log.info("report written to %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
