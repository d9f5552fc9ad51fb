"""The report of `tools.bench.models`: its result records and the markdown tables and verdicts made from them."""
from __future__ import annotations

import logging
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["Result", "format_size", "machine_info", "main_table", "options_table", "targets"]

log = logging.getLogger(__name__)


@dataclass
class Result:
    """The measurements of one model at one input size, batch and variant on one device."""

    device: str
    model: str
    size: tuple[int, int, int]
    batch: int
    variant: str
    params: int
    gflops: float | None = None  # per clip
    times: list[float] = field(default_factory=list)
    peak_mb: float | None = None
    note: str = ""

    @property
    def best(self) -> float | None:
        return min(self.times) if self.times else None

    @property
    def clips_per_s(self) -> float | None:
        return self.batch / self.best if self.times else None

    @property
    def frames_per_s(self) -> float | None:
        return self.clips_per_s * self.size[0] if self.times else None


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_size(s: tuple[int, int, int]) -> str:
    """`(16, 112, 112)` as `16x112x112`."""
    return "x".join(map(str, s))


def main_table(results: list[Result]) -> list[str]:
    lines = ["| device | model | params (M) | input TxHxW | GFLOPs/clip | GMACs/clip | batch | clips/s | frames/s "
             "| ms/batch (best) | ms/batch (median) | peak MB | note |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        median = statistics.median(r.times) * 1e3 if r.times else None
        lines.append(
            f"| {r.device} | {r.model} | {r.params / 1e6:.2f} | {format_size(r.size)} | {_fmt(r.gflops, '.1f')} | "
            f"{_fmt(r.gflops / 2 if r.gflops else None, '.1f')} | {r.batch} | {_fmt(r.clips_per_s, '.2f')} | "
            f"{_fmt(r.frames_per_s, '.1f')} | {_fmt(r.best * 1e3 if r.best else None, '.0f')} | "
            f"{_fmt(median, '.0f')} | {_fmt(r.peak_mb, '.0f')} | {r.note} |")
    return lines


def options_table(base: list[Result], opts: list[Result]) -> list[str]:
    ref = {(r.device, r.model, r.size, r.batch): r for r in base}
    lines = ["| device | model | input TxHxW | batch | variant | clips/s | vs inference_mode | peak MB | note |",
             "|---|---|---|---:|---|---:|---:|---:|---|"]
    for r in opts:
        b = ref.get((r.device, r.model, r.size, r.batch))
        ratio = r.clips_per_s / b.clips_per_s if (b and b.clips_per_s and r.clips_per_s) else None
        lines.append(f"| {r.device} | {r.model} | {format_size(r.size)} | {r.batch} | {r.variant} | "
                     f"{_fmt(r.clips_per_s, '.2f')} | {_fmt(ratio, '.2f')}x | {_fmt(r.peak_mb, '.0f')} | {r.note} |")
    return lines


def targets(results: list[Result]) -> list[str]:
    """The benchmark's targets: MiCT-ResNet-18 >= 3.1x R3D-18 clips/s at 16x160x160; ours >= torchvision."""
    by = {(r.device, r.model, r.size, r.batch): r for r in results}

    def ratio(where: tuple, a: str, b: str) -> tuple[float, float | None] | None:
        """(clips/s of a / clips/s of b, GFLOPs of b / GFLOPs of a) at `where` = (device, size, batch)."""
        device, size, batch = where
        ra, rb = by.get((device, a, size, batch)), by.get((device, b, size, batch))
        if not (ra and rb and ra.clips_per_s and rb.clips_per_s):
            return None
        flops = rb.gflops / ra.gflops if (ra.gflops and rb.gflops) else None
        return ra.clips_per_s / rb.clips_per_s, flops

    lines: list[str] = []
    for key in sorted({(r.device, r.size, r.batch) for r in results}):
        where = f"{key[0]}, {format_size(key[1])}, batch {key[2]}"
        m = ratio(key, "mict_resnet18", "r3d_18")
        if m:
            flops = f"; R3D-18 needs {m[1]:.1f}x its FLOPs" if m[1] else ""
            verdict = "meets" if m[0] >= 3.1 else "below"
            lines.append(f"- MiCT-ResNet-18 / R3D-18 clips/s ({where}): **{m[0]:.2f}x** ({verdict} the 3.1x target"
                         f"{flops})")
        for ours in ("r3d_18", "mc3_18", "r2plus1d_18"):
            q = ratio(key, ours, f"tv_{ours}")
            if q:
                verdict = ("not slower" if q[0] >= 1.0 else
                           "equal within timing noise: same aten kernels" if q[0] >= 0.97 else "SLOWER")
                lines.append(f"- {ours} / torchvision {ours} clips/s ({where}): **{q[0]:.3f}** ({verdict})")
    return lines


def machine_info(devices: Sequence[torch.device]) -> list[str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    info = [f"- CPU: {cpu}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}",
            f"- torch {torch.__version__}, Python {platform.python_version()}"]
    if hasattr(os, "getloadavg"):
        load = os.getloadavg()
        info.append("- load average at start (1/5/15 min): " + ", ".join(f"{v:.1f}" for v in load))
        if load[0] > (os.cpu_count() or 1):
            info.append("- **the CPU was busy with other work: CPU timings are noisy, ratios more than absolutes**")
            log.warning("load average %.1f on %d cores: CPU timings will be noisy", load[0], os.cpu_count() or 1)
    for d in devices:
        if d.type == "cuda":
            info.append(f"- GPU: {torch.cuda.get_device_name(d)}")
    return info
