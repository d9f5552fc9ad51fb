"""One prepared run on a GPU machine: does every CUDA path of the trainer work there, and how fast is it?

    tools/device_check.sh [--wheels DIR] [--out DIR]          # on a machine with one CUDA GPU, under 8 minutes
    tools/device_check.sh --device cpu --tiny --out DIR       # the same sections at toy sizes on the CPU (tests)

Prints a compact report, section by section, and writes it to `--out` (`device_check.md`, `device_check.json`):

- env: Python, torch, torchvision, CUDA, cuDNN, the GPU; which optional packages import (PyAV, OpenCV,
  coloredlogs, ...);
- steps: 20 training steps of r3d_18, mc3_18, r2plus1d_18, mict_resnet18, srtg_r3d_50 and mtnet_xs at full width on
  16x112x112 clips, in fp16 and bf16, through the trainer's own loop (`train.trainer.Trainer`, autocast, GradScaler,
  BN in fp32): finite losses, first and last loss, the GradScaler's scale, time per step, peak memory;
- ddp: NCCL DistributedDataParallel with world size 1, started by torchrun (gloo on the CPU);
- store: synthetic videos converted into a frame store at 128x171 (`tools.bench.train_step --store-only`: the data
  of the next sections);
- multigrid: a multigrid run through every long-cycle shape (each with its short-cycle crops) with cuDNN
  autotuning on: seconds per epoch;
- resume: a run killed (SIGKILL) after its first checkpoint and resumed with `--resume auto`, against the same run
  uninterrupted (`--deterministic`): the final weights' largest difference;
- bench: `tools.bench.train_step` for r3d_18 / r2plus1d_18 / mict_resnet18 at batch 32 in fp16, compute-only
  against end-to-end with 12 loader workers; bench_channels_last: the same with `--channels-last`, if time is left.

Every section runs in its own process under a time limit, and the whole run under `--budget` seconds: a section
that cannot run (a package missing, no GPU, a failure) is reported as such and the next one goes on. Exit status 0
when every section that ran passed, 1 otherwise.

Only the standard library and torch are imported here: the machine may lack the project's other requirements.
`tools/device_check.sh --wheels DIR` first installs the wheels of DIR (`pip install --no-index`) into a temporary
folder put on PYTHONPATH, e.g. PyAV and coloredlogs fetched elsewhere with `pip download --only-binary=:all:
--python-version 3.12 --platform manylinux_2_28_x86_64 av coloredlogs humanfriendly`.
"""
from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULT = "@@device_check "
FAMILIES = ("r3d_18", "mc3_18", "r2plus1d_18", "mict_resnet18", "srtg_r3d_50", "mtnet_xs")
BENCH_NETWORKS = "r3d_18,r2plus1d_18,mict_resnet18"
OPTIONAL = ("av", "cv2", "numpy", "coloredlogs", "tqdm", "matplotlib", "torchvision")


@dataclass(frozen=True)
class Profile:
    """Sizes of a run: the GPU's (full) or toy sizes for a CPU test (`--tiny`)."""

    width: float | None
    clip_length: int
    clip_size: int
    step_batch: int
    steps: int
    videos: int
    frames: int
    size: str
    bench_batch: int
    bench_workers: int
    bench_steps: int
    bench_warmup: int
    mg_batch: int
    train_batch: int
    workers: int


FULL = Profile(width=None, clip_length=16, clip_size=112, step_batch=8, steps=20, videos=544, frames=40,
               size="128x171", bench_batch=32, bench_workers=12, bench_steps=12, bench_warmup=4, mg_batch=4,
               train_batch=8, workers=12)
# (the benchmark always reads 16-frame clips, MiCT-ResNet-18 v1's minimum: the store holds 32-frame videos)
TINY = Profile(width=0.125, clip_length=8, clip_size=32, step_batch=2, steps=2, videos=36, frames=32, size="40x53",
               bench_batch=2, bench_workers=0, bench_steps=2, bench_warmup=1, mg_batch=1, train_batch=2, workers=0)


def emit(payload: dict[str, Any]) -> None:
    """A worker's result, one line the orchestrator reads back."""
    print(RESULT + json.dumps(payload), flush=True)


# -- workers (each runs in its own process) -----------------------------------------------------------------------
def worker_steps(args: argparse.Namespace, profile: Profile) -> None:
    """`profile.steps` training steps per family and precision through the trainer's loop."""
    import torch

    import network
    from train.callbacks import Callback
    from train.distributed import DistInfo
    from train.loaders import EpochInfo
    from train.lr_schedule import StepLRSchedule
    from train.precision import Precision, keep_batchnorm_fp32
    from train.trainer import Trainer

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    class Losses(Callback):
        def __init__(self) -> None:
            self.losses: list[float] = []
            self.finite: list[bool] = []

        def on_batch_end(self, trainer: Any, batch: int, logs: dict[str, Any]) -> None:
            loss = logs.get("loss")
            self.losses.append(float(loss) if loss is not None else float("nan"))
            self.finite.append(bool(logs.get("finite", loss is not None)))

    # fp16 needs CUDA's GradScaler path; the CPU runs fp32 (which must pass) and bf16
    precisions = ("fp16", "bf16") if device.type == "cuda" else ("fp32", "bf16")
    for name in args.families.split(","):
        for mode in precisions:
            case = {"network": name, "precision": mode}
            try:
                torch.manual_seed(0)
                kw = {} if profile.width is None else {"width_mult": profile.width}
                if name.startswith("mict") and profile.clip_length < 16:
                    kw["version"] = "v2"  # v1's temporal stride needs 16 frames
                model = network.build_model(name, 10, **kw).to(device)
                if mode != "fp32" and device.type != "cuda":
                    keep_batchnorm_fp32(model)  # as train.builders.prepare does (cuDNN keeps BN in fp32 itself)
                optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
                x = torch.randn(profile.step_batch, 3, profile.clip_length, profile.clip_size, profile.clip_size,
                                device=device)
                y = torch.randint(0, 10, (profile.step_batch,), device=device)
                info = EpochInfo(1, profile.step_batch, profile.clip_length, profile.clip_size, profile.steps)
                losses = Losses()
                trainer = Trainer(model, optimizer, lambda epoch, x=x, y=y, info=info: ([(x, y)] * profile.steps, info),
                                  scheduler=StepLRSchedule(optimizer, 0.01, [], 0.1, 0.0), end_epoch=1,
                                  precision=Precision(mode, device), dist_info=DistInfo(device=device),
                                  callbacks=losses, max_nonfinite=profile.steps + 1)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                trainer.train_epoch(1)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                    case["peak_mib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 20)
                case.update(ok=all(losses.finite) and len(losses.finite) == profile.steps,
                            finite=sum(losses.finite), steps=profile.steps, first_loss=losses.losses[0],
                            last_loss=losses.losses[-1], scale=trainer.precision.scaler.get_scale()
                            if trainer.precision.scaler.is_enabled() else None,
                            s_per_step=(time.perf_counter() - start) / profile.steps)
            except Exception as e:  # report the case and go on with the next one
                case.update(ok=False, error=f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
            emit({"case": case})
            if device.type == "cuda":
                torch.cuda.empty_cache()


def worker_ddp(args: argparse.Namespace, profile: Profile) -> None:
    """Under torchrun: a process group (NCCL on CUDA), DDP, a few AMP steps; gradients against the bare model."""
    import copy

    import torch
    import torch.distributed as dist
    from torch import nn

    import network
    from train.precision import Precision

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        kw = {} if profile.width is None else {"width_mult": profile.width}
        model = network.build_model("r3d_18", 10, **kw).to(device)
        bare = copy.deepcopy(model)
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        mode = "fp16" if device.type == "cuda" else "fp32"
        precision = Precision(mode, device)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
        x = torch.randn(profile.step_batch, 3, profile.clip_length, profile.clip_size, profile.clip_size,
                        device=device)
        y = torch.randint(0, 10, (profile.step_batch,), device=device)
        losses = []
        for step in range(5):
            optimizer.zero_grad(set_to_none=True)
            with precision.autocast():
                loss = nn.functional.cross_entropy(ddp(x).float(), y)
            precision.backward(loss)
            if step == 0:  # world size 1: the all-reduced gradients are the bare model's
                with precision.autocast():
                    bare_loss = nn.functional.cross_entropy(bare(x).float(), y)
                precision.scaler.scale(bare_loss).backward()
                grad_diff = max(float((a.grad - b.grad).abs().max()) for a, b in zip(model.parameters(),
                                                                                    bare.parameters()))
            precision.step(optimizer)
            summed = loss.detach().clone()
            dist.all_reduce(summed)
            losses.append(float(summed) / world)
        ok = all(map(lambda v: v == v and abs(v) != float("inf"), losses)) and grad_diff == 0.0
        emit({"ddp": {"ok": ok, "backend": backend, "world_size": world, "precision": mode, "losses": losses,
                      "grad_diff_vs_bare": grad_diff}})
    finally:
        dist.destroy_process_group()


WORKERS: dict[str, Callable[[argparse.Namespace, Profile], None]] = {"steps": worker_steps, "ddp": worker_ddp}


# -- the orchestrator ---------------------------------------------------------------------------------------------
class Report:
    """Lines printed as they come, kept for the files written at the end."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.data: dict[str, Any] = {}
        self.failed: list[str] = []
        self.skipped: list[str] = []

    def say(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_process(cmd: Sequence[str], timeout: float, cwd: Path | None = None) -> tuple[int | None, str, list[dict]]:
    """(exit code or None on timeout, output tail, results) of a child process, killed with its group on timeout."""
    proc = subprocess.Popen(list(cmd), cwd=cwd or REPO, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=max(1.0, timeout))
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        code = None
    results = [json.loads(line[len(RESULT):]) for line in out.splitlines() if line.startswith(RESULT)]
    tail = "\n".join(line for line in out.splitlines() if not line.startswith(RESULT))
    return code, tail, results


def _reason(code: int | None, tail: str) -> str:
    if code is None:
        return "timed out"
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("error:", "ModuleNotFoundError", "ImportError", "RuntimeError",
                                                  "AssertionError", "ValueError", "torch."))]
    return (errors or lines or [f"exit code {code}"])[-1][:300]


def _worker_cmd(section: str, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "tools.device_check", "--worker", section, "--device", args.device,
           "--work", str(args.work), "--families", args.families]
    return cmd + ["--tiny"] * args.tiny


def section_env(report: Report, args: argparse.Namespace) -> None:
    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                            "cuda_available": torch.cuda.is_available(), "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2 ** 30, 1),
                    gpu_count=torch.cuda.device_count())
    packages = {}
    for name in OPTIONAL:
        try:
            module = importlib.import_module(name)
            packages[name] = getattr(module, "__version__", "yes")
        except Exception as e:  # noqa: BLE001 - any import failure means "not usable here"
            packages[name] = f"missing ({type(e).__name__})"
    info["packages"] = packages
    if os.environ.get("DEVICE_CHECK_WHEELS"):
        info["wheels"] = os.environ["DEVICE_CHECK_WHEELS"]
    report.data["env"] = info
    report.say(f"env: Python {info['python']}, torch {info['torch']}, CUDA {info['cuda']}, cuDNN {info['cudnn']}, "
               f"{info.get('gpu', 'no GPU')}" + (f" ({info['gpu_memory_gib']} GiB)" if "gpu" in info else "")
               + f", {info['cpus']} CPUs")
    report.say("     packages: " + ", ".join(f"{k} {v}" for k, v in packages.items()))
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        report.say("     could not do: the CUDA sections (torch sees no CUDA GPU); rerun with --device cpu")


def section_steps(report: Report, args: argparse.Namespace, timeout: float) -> bool:
    code, tail, results = run_process(_worker_cmd("steps", args), timeout)
    cases = [r["case"] for r in results if "case" in r]
    report.data["steps"] = cases
    profile = TINY if args.tiny else FULL
    report.say(f"steps: {profile.steps} steps per family at {profile.clip_length}x{profile.clip_size}x"
               f"{profile.clip_size}, batch {profile.step_batch}, width {profile.width or 'full'}")
    for c in cases:
        if "error" in c:
            report.say(f"  {c['network']:<14} {c['precision']}: FAILED {c['error']}")
            continue
        scale = "" if c.get("scale") is None else f", scale {c['scale']:.0f}"
        peak = f", peak {c['peak_mib']} MiB" if "peak_mib" in c else ""
        report.say(f"  {c['network']:<14} {c['precision']}: {c['finite']}/{c['steps']} finite, loss "
                   f"{c['first_loss']:.3f} -> {c['last_loss']:.3f}{scale}, {1000 * c['s_per_step']:.0f} ms/step"
                   f"{peak}{'' if c['ok'] else '  NOT OK'}")
    if code != 0 or not cases:
        report.say(f"  could not finish: {_reason(code, tail)}")
        return False
    return all(c.get("ok") for c in cases)


def section_ddp(report: Report, args: argparse.Namespace, timeout: float) -> bool:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           "-m", "tools.device_check"] + _worker_cmd("ddp", args)[3:]
    code, tail, results = run_process(cmd, timeout)
    found = [r["ddp"] for r in results if "ddp" in r]
    if code != 0 or not found:
        report.say(f"ddp: could not do: {_reason(code, tail)}")
        return False
    d = found[0]
    report.data["ddp"] = d
    report.say(f"ddp: torchrun world size {d['world_size']}, {d['backend']}, {d['precision']}: losses "
               + " ".join(f"{v:.3f}" for v in d["losses"]) + f"; DDP gradients vs the bare model: max diff "
               f"{d['grad_diff_vs_bare']:.1e} (relative){'' if d['ok'] else '  NOT OK'}")
    return bool(d["ok"])


def section_store(report: Report, args: argparse.Namespace, timeout: float) -> Path | None:
    profile = TINY if args.tiny else FULL
    start = time.monotonic()
    code, tail, _ = run_process(_bench_cmd(args, "--store-only"), timeout)
    store = Path(args.work) / "store"
    if code != 0 or not (store / "labels" / "all.csv").is_file():
        report.say(f"store: could not do: {_reason(code, tail)} (it needs PyAV, OpenCV and coloredlogs: bring "
                   f"the missing ones with --wheels)")
        return None
    s = {"path": str(store), "videos": profile.videos, "frames": profile.frames, "size": profile.size,
         "seconds": time.monotonic() - start}
    report.data["store"] = {"ok": True, **s}
    report.say(f"store: {s['videos']} synthetic videos x {s['frames']} frames at {s['size']} converted in "
               f"{s['seconds']:.0f} s: {store}")
    return store


def _train_cmd(args: argparse.Namespace, store: Path, model_dir: Path, *extra: str) -> list[str]:
    profile = TINY if args.tiny else FULL
    cmd = [sys.executable, "-m", "train", "--dataset", str(store), "--model-dir", str(model_dir),
           "--network", "r3d_18", "--clip-length", str(profile.clip_length), "--clip-size", str(profile.clip_size),
           "--workers", str(profile.workers), "--random-seed", "0", "--log-interval", "1"]
    if profile.width is not None:
        cmd += ["--width-mult", str(profile.width)]
    if args.device.startswith("cuda"):
        cmd += ["--gpus", args.device.partition(":")[2] or "0", "--precision", "fp16"]
    return cmd + list(extra)


def section_multigrid(report: Report, args: argparse.Namespace, store: Path, timeout: float) -> bool:
    profile = TINY if args.tiny else FULL
    run_dir = Path(args.work) / "multigrid"
    # 8 epochs with an lr step at 6: the long cycle visits its four shapes, each with its short-cycle crops
    extra = ["--long-cycles", "--short-cycles", "--end-epoch", "8", "--lr-steps", "6", "--batch-size",
             str(profile.mg_batch), "--debug-mode", "--val-frequency", "8", "--save-frequency", "8",
             "--precise-bn-batches", "2"]
    code, tail, _ = run_process(_train_cmd(args, store, run_dir, *extra), timeout)
    rows = _csv_rows(run_dir / "train_results.csv")
    shapes = sorted({ln.split("batch=")[1].split()[0] for ln in tail.splitlines() if "batch=" in ln})
    report.data["multigrid"] = {"code": code, "epoch_seconds": [float(r["seconds"]) for r in rows],
                                "batch_shapes": shapes}
    if code != 0 or len(rows) != 8:
        report.say(f"multigrid: could not do: {_reason(code, tail)}")
        return False
    report.say(f"multigrid: 8 epochs (3 batches each), {len(shapes)} batch shapes seen in the log, cuDNN autotune "
               f"on; seconds per epoch: " + " ".join(f"{float(r['seconds']):.1f}" for r in rows))
    return True


def _csv_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def section_resume(report: Report, args: argparse.Namespace, store: Path, timeout: float) -> bool:
    import torch

    profile = TINY if args.tiny else FULL
    deadline = time.monotonic() + timeout
    straight, killed = Path(args.work) / "straight", Path(args.work) / "killed"
    extra = ["--end-epoch", "2", "--batch-size", str(profile.train_batch), "--deterministic"]
    if args.tiny:
        extra.append("--debug-mode")  # 3 batches an epoch
    code, tail, _ = run_process(_train_cmd(args, store, straight, *extra), deadline - time.monotonic())
    if code != 0:
        report.say(f"resume: could not do the uninterrupted run: {_reason(code, tail)}")
        return False
    first = killed / "r3d_18_ep-0001.pth"
    proc = subprocess.Popen(_train_cmd(args, store, killed, *extra), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    while proc.poll() is None and not first.is_file() and time.monotonic() < deadline:
        time.sleep(0.02)
    finished_first = proc.poll() is not None
    if not finished_first:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    how = "SIGKILL after its epoch-1 checkpoint"
    if finished_first:  # it outran the kill: resume from its first epoch all the same
        how = "finished before the kill: epoch 2 dropped and resumed"
    for late in killed.glob("r3d_18_*.pth"):
        if late != first:
            late.unlink()
    code, tail, _ = run_process(_train_cmd(args, store, killed, *extra, "--resume", "auto"),
                                deadline - time.monotonic())
    if code != 0:
        report.say(f"resume: could not do: {_reason(code, tail)}")
        return False
    a = torch.load(straight / "r3d_18_ep-0002.pth", map_location="cpu", weights_only=True)["model"]
    b = torch.load(killed / "r3d_18_ep-0002.pth", map_location="cpu", weights_only=True)["model"]
    diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    equal = diff == 0.0
    report.data["resume"] = {"how": how, "max_abs_diff": diff, "equal": equal}
    report.say(f"resume: {how}; weights after epoch 2 vs the uninterrupted run: "
               f"{'equal' if equal else f'max abs diff {diff:.2e}'}")
    return equal


def _bench_cmd(args: argparse.Namespace, *options: str) -> list[str]:
    """`tools.bench.train_step` at the profile's sizes on the work folder's store (the same one every time)."""
    profile = TINY if args.tiny else FULL
    cmd = [sys.executable, "-m", "tools.bench.train_step", "--networks", args.bench_networks, "--batch-size",
           str(profile.bench_batch), "--workers", str(profile.bench_workers), "--steps", str(profile.bench_steps),
           "--warmup", str(profile.bench_warmup), "--clip-length", "16", "--clip-size", str(profile.clip_size),
           "--size", profile.size, "--frames", str(profile.frames), "--videos", str(profile.videos),
           "--device", args.device, "--data", str(args.work),
           "--precision", "fp16" if args.device.startswith("cuda") else "fp32", *options]
    if profile.width is not None:
        cmd += ["--width-mult", str(profile.width)]
    if args.tiny:
        cmd += ["--threads", "1"]
    return cmd


def section_bench(report: Report, args: argparse.Namespace, timeout: float, *options: str) -> bool:
    name = "bench" + "".join("_" + o.strip("-").replace("-", "_") for o in options)
    out = Path(args.work) / f"{name}.json"
    code, tail, _ = run_process(_bench_cmd(args, "--json", str(out), *options), timeout)
    if code != 0 or not out.is_file():
        report.say(f"{name}: could not do: {_reason(code, tail)}")
        return False
    data = json.loads(out.read_text())
    report.data[name] = data
    report.say(f"{name}: " + data["command"])
    for line in tail.splitlines():
        if line.startswith("|"):
            report.say("  " + line)
    return True


def orchestrate(args: argparse.Namespace) -> int:
    start = time.monotonic()
    report = Report()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    report.say(f"device check on {args.device} ({'tiny sizes' if args.tiny else 'full sizes'}), budget "
               f"{args.budget:.0f} s")
    section_env(report, args)

    def left(cap: float) -> float:
        return min(cap, args.budget - (time.monotonic() - start))

    results: dict[str, bool | None] = {}

    def attempt(name: str, cap: float, fn: Callable[[float], Any], minimum: float = 10.0) -> Any:
        if name not in args.sections:
            return None
        if left(cap) < minimum:
            report.say(f"{name}: skipped (time budget spent)")
            report.skipped.append(name)
            return None
        t0 = time.monotonic()
        value = fn(left(cap))
        ok = value if isinstance(value, bool) else value is not None
        results[name] = ok
        if not ok:
            report.failed.append(name)
        report.data.setdefault("section_seconds", {})[name] = round(time.monotonic() - t0, 1)
        return value

    attempt("steps", 150, lambda t: section_steps(report, args, t))
    attempt("ddp", 60, lambda t: section_ddp(report, args, t))
    store = attempt("store", 120, lambda t: section_store(report, args, t))
    for name, cap, fn in (("multigrid", 90, section_multigrid), ("resume", 120, section_resume)):
        if store is None and name in args.sections:
            report.say(f"{name}: could not do: no frame store")
            report.skipped.append(name)
            continue
        attempt(name, cap, lambda t, fn=fn: fn(report, args, store, t))
    if store is None and "bench" in args.sections:
        report.say("bench: could not do: no frame store")
        report.skipped.append("bench")
    else:
        attempt("bench", 150, lambda t: section_bench(report, args, t))
        attempt("bench_channels_last", 150, lambda t: section_bench(report, args, t, "--channels-last"), 60.0)
    seconds = time.monotonic() - start
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in report.data.get("section_seconds", {}).items())
    report.say(f"done in {seconds:.0f} s ({timings}): {sum(1 for v in results.values() if v)} section(s) passed"
               + (f", failed: {', '.join(report.failed)}" if report.failed else "")
               + (f", not done: {', '.join(report.skipped)}" if report.skipped else ""))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "device_check.md").write_text("\n".join(report.lines) + "\n")
        (out / "device_check.json").write_text(json.dumps({**report.data, "failed": report.failed,
                                                           "skipped": report.skipped, "seconds": seconds},
                                                          indent=1) + "\n")
    return 1 if report.failed else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tools/device_check.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="cuda, cuda:K or cpu (default: cuda if torch sees one)")
    p.add_argument("--tiny", action="store_true", help="toy sizes (width 1/8, 8x32x32 clips): a CPU test")
    p.add_argument("--budget", type=float, default=450.0, help="seconds for the whole run")
    p.add_argument("--sections", default="steps,ddp,store,multigrid,resume,bench,bench_channels_last",
                   help="comma-separated sections to run")
    p.add_argument("--families", default=",".join(FAMILIES), help="networks of the steps section")
    p.add_argument("--bench-networks", default=BENCH_NETWORKS, help="networks of the bench sections")
    p.add_argument("--work", type=Path, default=Path("device_check_work"), help="working folder")
    p.add_argument("--out", type=Path, default=None, help="write device_check.md and .json here")
    p.add_argument("--worker", choices=tuple(WORKERS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.sections = [s for s in args.sections.split(",") if s]
    args.work = args.work.resolve()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        WORKERS[args.worker](args, TINY if args.tiny else FULL)
        return 0
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
