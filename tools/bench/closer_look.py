"""The study of "A Closer Look at Spatiotemporal Convolutions" (Tran et al., CVPR 2018) on a laptop.

    python -m tools.bench.closer_look                     # the whole study: 17 rows x 8/16 frames x 2 seeds
    python -m tools.bench.closer_look --quick             # a tiny smoke run of the same pipeline (seconds)
    python -m tools.bench.closer_look --frames 8 --seeds 0 --networks r3d_18,fr2d_18 --no-extras

Trains the paper's eleven 18-layer networks (R2D, f-R2D, R3D, MC2-MC5, rMC2-rMC5, R(2+1)D) plus R(2+1)D with the
paper's parameter count (`mid_channels="per_conv"`), and as extra rows MiCT-ResNet-18, SRTG-R3D-18 (temporal gates
off, and on from the middle epoch) and MTNet-XS, all with one recipe and one budget (`Recipe`), on the motion data
of the demo (`tools.synthetic`: time-reversal pairs of classes that no single frame nor an order-free average of
frames can tell apart; generated and converted once, reused), at 8 and 16 frames per clip (both spanning the whole
32-frame video), for each seed. Each run goes through the trainer's Python API in a worker process that stays up
for many runs (`--jobs` of them, one torch thread each); the best epoch is chosen on the validation split and
scored on the held-out test split (`tools.evaluate`, `Recipe.test_clips` clips per video): clip@1 (over all
those clips) and video@1 (their mean per video), as in the paper.

Writes to ``--out-dir``: ``closer_look.md`` (the paper's table: parameters, GFLOPs, clip@1 and video@1 at 8 and 16
frames, beside the paper's own figures from its slides), ``closer_look.json`` (every run), ``closer_look.png`` (the
paper's figure: video@1 against GFLOPs, one marker per network, next to the paper's Kinetics figures). Parameters
are counted at the paper's 400 classes and full width, GFLOPs at its 16x112x112 input (2 per multiply-add); the
study itself trains at ``--width-mult``.

Learning rates: every network first trains with each rate of the recipe's grid (3e-4 and 1e-3; ``--lr-grid``) on
the shortest clips with every seed; the rate with the best mean validation video@1 over the seeds is kept (its grid
runs count as the study's runs at that clip length), never looking at the test split. AdamW's step does not shrink
with a layer's fan-in, so a rate that suits a 2D network can be too large for a 3D one of the same width, and
whether a slow starter leaves chance within the budget depends on the seed (docs/BENCHMARKS.md). ``--lr R`` trains
everything at R.
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import resource
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from data.atomic import atomic_write_text, save_figure_png
from train.console import die, setup_logging

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Row:
    """One row of the table: a registered network with builder arguments, its name in the paper (if any)."""

    key: str  # unique label in the table
    network: str
    paper: str | None = None
    model_args: tuple[tuple[str, Any], ...] = ()
    temporal_gates_from: str | None = None  # "middle": on from the middle epoch of the budget


ROWS: tuple[Row, ...] = (
    Row("r2d_18", "r2d_18", "R2D"),
    Row("fr2d_18", "fr2d_18", "f-R2D"),
    Row("r3d_18", "r3d_18", "R3D"),
    *(Row(f"mc{k}_18", f"mc{k}_18", f"MC{k}") for k in (2, 3, 4, 5)),
    *(Row(f"rmc{k}_18", f"rmc{k}_18", f"rMC{k}") for k in (2, 3, 4, 5)),
    Row("r2plus1d_18", "r2plus1d_18", None),  # torchvision's (31.5M); the paper's count is the next row
    Row("r2plus1d_18/per_conv", "r2plus1d_18", "R(2+1)D", (("mid_channels", "per_conv"),)),
)
EXTRA_ROWS: tuple[Row, ...] = (
    Row("mict_resnet18", "mict_resnet18", None, (("version", "v2"), ("first_kernel_depth", 3))),
    Row("srtg_r3d_18", "srtg_r3d_18"),
    Row("srtg_r3d_18/gates", "srtg_r3d_18", temporal_gates_from="middle"),
    Row("mtnet_xs", "mtnet_xs"),
)

#: "A Closer Look", Table 2 (Kinetics, trained from scratch; from the slides): parameters (M), clip@1 and
#: video@1 for 8x112x112 and 16x112x112 clips.
PAPER: dict[str, tuple[float, float, float, float, float]] = {
    "R2D": (11.4, 46.7, 59.5, 47.0, 58.9),
    "f-R2D": (11.4, 48.1, 59.4, 50.3, 60.5),
    "R3D": (33.4, 49.4, 61.8, 52.5, 64.2),
    "MC2": (11.4, 50.2, 62.5, 53.1, 64.2),
    "MC3": (11.7, 50.7, 62.9, 53.7, 64.7),
    "MC4": (12.7, 50.5, 62.5, 53.7, 65.1),
    "MC5": (16.9, 50.3, 62.5, 53.7, 65.1),
    "rMC2": (33.3, 49.8, 62.1, 53.1, 64.9),
    "rMC3": (33.0, 49.8, 62.3, 53.2, 65.0),
    "rMC4": (32.0, 49.9, 62.3, 53.4, 65.1),
    "rMC5": (27.9, 49.4, 61.2, 52.1, 63.1),
    "R(2+1)D": (33.3, 52.8, 64.8, 56.8, 68.0),
}

@dataclass(frozen=True)
class Recipe:
    """One recipe and one budget for every run (the demo's data, optimizer and augmentation; see docs)."""

    width_mult: float = 0.125
    clip_size: int = 32
    batch_size: int = 16
    optimizer: str = "adamw"
    lr: float = 1e-3
    lr_steps: tuple[int, ...] = (15,)
    epochs: int = 20
    warmup_epochs: float = 0.0
    test_clips: int = 4
    #: rates each network tries first (every seed, shortest clips); the best mean validation video@1 wins
    lr_grid: tuple[float, ...] = (3e-4, 1e-3)
    row_lr: tuple[tuple[str, float], ...] = ()  # per row, when chosen on the validation split

    def lr_for(self, key: str) -> float:
        return dict(self.row_lr).get(key, self.lr)


FULL = Recipe()
QUICK = Recipe(epochs=1, lr_steps=(), test_clips=2, batch_size=4, lr_grid=())


@dataclass(frozen=True)
class RunSpec:
    """One training run of the study."""

    row: Row
    frames: int
    seed: int
    lr: float
    purpose: str = "study"  # or "lr-grid"


@dataclass
class RunResult:
    """What one run gave: validation (model selection) and test figures, and its cost."""

    key: str
    frames: int
    seed: int
    lr: float
    purpose: str
    best_val_video_top1: float
    best_epoch: int | None
    test_clip_top1: float
    test_video_top1: float
    wall_s: float
    cpu_s: float
    val_history: list[float] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------------
# one run (in a worker process)

_QUIET = ("train", "data", "network", "tools.evaluate", "tools.demo", "tools.convert", "tools.synthetic")


def _die_with_parent(parent: int) -> None:
    """Linux: end this worker when the study's main process dies, so a killed study leaves no orphan training.

    SIGKILL, not SIGTERM: the trainer takes SIGTERM as a preemption, stops gracefully and then waits forever to
    hand its result to the dead parent; a study's run is restarted from scratch anyway."""
    import signal

    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the request above
        os._exit(1)


def _init_worker(threads: int, verbose: bool, parent: int | None = None) -> None:
    import torch

    if parent is not None:
        _die_with_parent(parent)

    torch.set_num_threads(threads)
    setup_logging()
    if not verbose:
        for name in _QUIET:
            logging.getLogger(name).setLevel(logging.WARNING)


def _demo_config(quick: bool):  # noqa: ANN202 - tools.demo.DemoConfig, imported lazily
    from tools.demo import FULL as DEMO_FULL
    from tools.demo import QUICK as DEMO_QUICK

    return DEMO_QUICK if quick else DEMO_FULL


def run_one(spec: RunSpec, recipe: Recipe, quick: bool, store: Path, run_dir: Path) -> RunResult:
    """Train `spec` with `recipe` through the trainer's Python API and score its best epoch on the test split."""
    import shutil

    from tools.demo import LABELS, train_defaults
    from tools.evaluate import evaluate_checkpoint
    from train.cli import parse_args as train_parse_args
    from train.cli import run

    demo = _demo_config(quick)
    interval = max(1, demo.frames // spec.frames)  # every clip length spans the whole video
    cfg = replace(demo, clip_length=spec.frames, frame_interval=(interval,), clip_size=recipe.clip_size,
                  batch_size=recipe.batch_size, optimizer=recipe.optimizer, lr_base=spec.lr,
                  lr_steps=recipe.lr_steps, end_epoch=recipe.epochs, warmup_epochs=recipe.warmup_epochs, workers=0,
                  width_mult=recipe.width_mult, seed=spec.seed, clip_grad_norm=None)
    gates = (recipe.epochs // 2 + 1) if spec.row.temporal_gates_from == "middle" else None
    if run_dir.exists():
        shutil.rmtree(run_dir)  # this study's own earlier run of the same spec
    defaults = train_defaults(cfg, spec.row.network, store, run_dir, gates)
    defaults.update(model_arg=list(spec.row.model_args), keep_last=1, log_interval=10_000)
    args = train_parse_args([], defaults=defaults)
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    result = run(args)
    checkpoint = result.best_path or result.last_path
    ev, _ = evaluate_checkpoint(checkpoint, store, labels=LABELS, split="test", clips_per_video=recipe.test_clips,
                                batch_size=recipe.batch_size, workers=0)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    vals = [float(h["val"]["video_top1"]) for h in result.history if h.get("val")]
    best_epoch = 1 + max(range(len(vals)), key=lambda i: (vals[i], -i)) if vals else None
    return RunResult(spec.row.key, spec.frames, spec.seed, spec.lr, spec.purpose,
                     float(result.best_metric) if result.best_metric is not None else float("nan"), best_epoch,
                     ev.clip_top1, ev.video_top1, wall,
                     (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), vals)


def _run_in_worker(spec: RunSpec, recipe: Recipe, quick: bool, store: str, run_dir: str) -> dict:
    return asdict(run_one(spec, recipe, quick, Path(store), Path(run_dir)))


def _run_dir(out_dir: Path, spec: RunSpec) -> Path:
    tag = f"{spec.row.key.replace('/', '_')}_f{spec.frames}_s{spec.seed}"
    return out_dir / "runs" / (f"{tag}_lr{spec.lr:g}" if spec.purpose == "lr-grid" else tag)


def run_all(specs: Sequence[RunSpec], recipe: Recipe, quick: bool, store: Path, out_dir: Path, jobs: int,
            threads: int, verbose: bool) -> list[RunResult]:
    """Every run of `specs`, `jobs` at a time (each worker process trains many runs, one after the other)."""
    from tqdm import tqdm

    results: list[RunResult] = []
    # the costliest runs first, so that the last ones left for the workers are short
    order = sorted(specs, key=lambda s: -s.frames)
    bar = tqdm(total=len(order), desc="closer look", unit="run", disable=None)

    def done(r: RunResult) -> None:
        results.append(r)
        bar.update(1)
        log.info("%-22s %2d frames seed %d lr %g: val video@1 %5.1f, test clip@1 %5.1f video@1 %5.1f (%.0f s, "
                 "%.0f CPU s)", r.key, r.frames, r.seed, r.lr, r.best_val_video_top1, r.test_clip_top1,
                 r.test_video_top1, r.wall_s, r.cpu_s)

    if jobs <= 1:
        _init_worker(threads, verbose)
        for spec in order:
            done(run_one(spec, recipe, quick, store, _run_dir(out_dir, spec)))
    else:
        ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no torch/OpenMP state forked
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker,
                                 initargs=(threads, verbose, os.getpid())) as pool:
            futures = [pool.submit(_run_in_worker, s, recipe, quick, str(store), str(_run_dir(out_dir, s)))
                       for s in order]
            for fut in as_completed(futures):
                done(RunResult(**fut.result()))
    bar.close()
    return results


def lr_grid_specs(rows: Sequence[Row], frames: Sequence[int], seeds: Sequence[int], lr_grid: Sequence[float]
                  ) -> list[RunSpec]:
    """The runs that choose the learning rates: every row at every rate of the grid, shortest clips, every seed.

    Every seed, not the first alone: whether a slow starter leaves chance within the budget depends on the seed,
    and a rate chosen on one lucky seed can leave the next one at chance."""
    return [RunSpec(r, min(frames), seed, lr, "lr-grid") for r in rows for seed in seeds for lr in lr_grid]


def choose_lrs(results: Sequence[RunResult]) -> dict[str, float]:
    """Per row, the rate whose runs had the best mean validation video@1 (ties: the smaller rate)."""
    by_row: dict[str, dict[float, list[float]]] = {}
    for r in results:
        by_row.setdefault(r.key, {}).setdefault(r.lr, []).append(r.best_val_video_top1)
    return {key: max(sorted(by_lr), key=lambda lr: sum(by_lr[lr]) / len(by_lr[lr])) for key, by_lr in by_row.items()}


# ---------------------------------------------------------------------------------------------------------------
# network figures (full size, the paper's input)

@dataclass(frozen=True)
class Cost:
    params_m: float  # at 400 classes, full width
    gflops: float  # per 16x112x112 clip, full width


def network_costs(rows: Sequence[Row]) -> dict[str, Cost]:
    """Parameters (400 classes) and GFLOPs per 16x112x112 clip of every row's network at full width."""
    import torch

    from network import build_model, count_parameters
    from tools.inference.flops import count_gflops

    costs = {}
    for row in rows:
        kw = dict(row.model_args)
        # shapes only (the meta device): FLOPs do not depend on values; R2D's parameter count is the paper's at 8
        # stacked frames, its FLOPs those of a 16-frame R2D
        with torch.device("meta"):
            params = count_parameters(build_model(row.network, 400, **kw, **_frames_kw(row.network, 8)))
            model = build_model(row.network, 400, **kw, **_frames_kw(row.network, 16))
        costs[row.key] = Cost(params / 1e6, count_gflops(model, (3, 16, 112, 112)))
    return costs


def _frames_kw(network: str, frames: int) -> dict[str, int]:
    from network import model_kwargs

    return {"frames": frames} if "frames" in model_kwargs(network) else {}


# ---------------------------------------------------------------------------------------------------------------
# report

def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarise(results: Sequence[RunResult], rows: Sequence[Row], frames: Sequence[int]
              ) -> dict[str, dict[int, dict[str, float | None]]]:
    """Row -> frames -> mean test clip@1 / video@1 over seeds (and how many seeds)."""
    out: dict[str, dict[int, dict[str, float | None]]] = {}
    for row in rows:
        out[row.key] = {}
        for f in frames:
            rs = [r for r in results if r.key == row.key and r.frames == f and r.purpose == "study"]
            out[row.key][f] = {"clip_top1": _mean([r.test_clip_top1 for r in rs]),
                               "video_top1": _mean([r.test_video_top1 for r in rs]),
                               "seeds": float(len(rs))}
    return out


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def format_table(rows: Sequence[Row], costs: dict[str, Cost], summary: dict, frames: Sequence[int]) -> list[str]:
    """The paper's table: our figures (mean over seeds) beside the paper's."""
    head = ["network", "paper", "params (M)", "GFLOPs"]
    for f in frames:
        head += [f"clip@1 {f}f", f"video@1 {f}f"]
    head += ["paper params", "paper clip@1 8f", "paper video@1 8f", "paper clip@1 16f", "paper video@1 16f"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for row in rows:
        c = costs[row.key]
        cells = [f"`{row.key}`", row.paper or "-", f"{c.params_m:.2f}", f"{c.gflops:.1f}"]
        for f in frames:
            s = summary[row.key][f]
            cells += [_fmt(s["clip_top1"]), _fmt(s["video_top1"])]
        p = PAPER.get(row.paper or "")
        cells += [f"{p[0]:.1f}", *(f"{v:.1f}" for v in p[1:])] if p else ["-"] * 5
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _ranking(rows: Sequence[Row], summary: dict, frames: int) -> list[str]:
    scored = [(summary[r.key][frames]["video_top1"], r.key) for r in rows
              if summary[r.key].get(frames, {}).get("video_top1") is not None]
    return [k for _, k in sorted(scored, key=lambda t: (-t[0], t[1]))]


def plot(rows: Sequence[Row], costs: dict[str, Cost], summary: dict, frames: int, path: Path) -> Path:
    """The paper's figure: video@1 against GFLOPs, one marker per network; the paper's own figures beside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    markers = "osD^v<>pP*Xhd8H"
    for ax, title, value in (
            (axes[0], f"this study: synthetic motion, {frames}-frame clips, test video@1",
             lambda r: summary[r.key][frames]["video_top1"]),
            (axes[1], f"the paper: Kinetics, {frames}x112x112 clips, video@1",
             lambda r: PAPER[r.paper][2 if frames == 8 else 4] if r.paper in PAPER else None)):
        for i, row in enumerate(rows):
            y = value(row)
            if y is None:
                continue
            x = costs[row.key].gflops
            ax.scatter([x], [y], marker=markers[i % len(markers)], s=60, label=row.key)
            ax.annotate(row.paper or row.key, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("GFLOPs per 16x112x112 clip (full width, 2 per multiply-add)")
        ax.set_ylabel("video@1 (%)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    classes = _demo_config(False).classes
    axes[0].axhline(100 / classes, color="grey", lw=0.8, ls="--")
    axes[0].axhline(200 / classes, color="grey", lw=0.8, ls=":")
    axes[0].text(0, 100 / classes + 1, "chance", fontsize=7, color="grey")
    axes[0].text(0, 200 / classes + 1, "frame-order-blind ceiling", fontsize=7, color="grey")
    if axes[0].collections:  # nothing to list when no row has a run at these frames
        axes[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save_figure_png(fig, path)


def write_report(out_dir: Path, rows: Sequence[Row], costs: dict[str, Cost], results: Sequence[RunResult],
                 frames: Sequence[int], seeds: Sequence[int], recipe: Recipe, meta: dict) -> dict[str, Path]:
    """closer_look.md / .json / .png in `out_dir`."""
    summary = summarise(results, rows, frames)
    table = format_table(rows, costs, summary, frames)
    plot_frames = max(frames)
    png = plot(rows, costs, summary, plot_frames, out_dir / "closer_look.png")
    study = [r for r in results if r.purpose == "study"]
    text = [
        "# A Closer Look at Spatiotemporal Convolutions, reproduced on synthetic motion data", "",
        f"command: `{meta['command']}`", "",
        f"recipe: width_mult {recipe.width_mult}, {recipe.clip_size}-px crops, batch {recipe.batch_size}, "
        f"{recipe.optimizer} lr {recipe.lr:g}"
        + (f" (per network, chosen on val: {dict(recipe.row_lr)})" if recipe.row_lr else "")
        + f", lr x0.1 after epochs {list(recipe.lr_steps)}, {recipe.epochs} epochs; best epoch by val video@1; "
        f"test: {recipe.test_clips} clips per video, clip@1 over all of them, video@1 of their mean; seeds {list(seeds)}; "
        f"mean over seeds.",
        f"runs: {len(study)} in {meta['wall_s']:.0f} s wall ({meta['cpu_s']:.0f} CPU s over all processes), "
        f"{meta['jobs']} worker process(es) x {meta['threads']} thread(s), {meta['machine']}.", "",
        *table, "",
        f"video@1 ranking at {plot_frames} frames (best first): {', '.join(_ranking(rows, summary, plot_frames))}",
        "", f"figure: {png}",
    ]
    md = atomic_write_text(out_dir / "closer_look.md", "\n".join(text) + "\n")
    payload = {"meta": meta, "recipe": asdict(recipe), "costs": {k: asdict(v) for k, v in costs.items()},
               "summary": summary, "runs": [asdict(r) for r in results]}
    js = atomic_write_text(out_dir / "closer_look.json", json.dumps(payload, indent=1) + "\n")
    print("\n".join(table))
    print(f"\nranking at {plot_frames} frames: {', '.join(_ranking(rows, summary, plot_frames))}")
    print(f"wrote {md}, {js}, {png}")
    return {"md": md, "json": js, "png": png}


# ---------------------------------------------------------------------------------------------------------------
# command line

def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.bench.closer_look", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny data, one epoch, 4- and 8-frame clips, one seed")
    p.add_argument("--networks", default=None,
                   help=f"comma-separated rows (default all): {', '.join(r.key for r in ROWS + EXTRA_ROWS)}")
    p.add_argument("--no-extras", action="store_true", help="only the paper's networks (no MiCT, SRTG, MTNet rows)")
    p.add_argument("--frames", type=int, nargs="+", default=None, help="clip lengths (default 8 16; --quick 4 8)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1; --quick 0)")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epoch budget")
    p.add_argument("--width-mult", type=float, default=None, help="override the recipe's width")
    p.add_argument("--lr-steps", type=int, nargs="*", default=None, metavar="EPOCH",
                   help="override the epochs after which the rate drops x0.1 (default: the recipe's, those below "
                        "--epochs)")
    p.add_argument("--warmup", type=float, default=None, metavar="EPOCHS",
                   help="override the recipe's linear learning-rate warm-up (epochs)")
    p.add_argument("--lr", type=float, default=None, help="override the recipe's learning rate (every network)")
    p.add_argument("--lr-grid", default=None, metavar="LR,LR,...",
                   help="choose each network's rate on the validation split among these first (default: the "
                        "recipe's, 3e-4,1e-3; 'none': the recipe's one rate for all)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (runs trained at the same time)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--data-dir", type=Path, default=Path("demo_data"), help="generated demo data (reused)")
    p.add_argument("--out-dir", type=Path, default=Path("closer_look"), help="runs, table, figure")
    p.add_argument("--verbose", action="store_true", help="show the trainer's log")
    p.add_argument("--merge", type=Path, nargs="+", default=None, metavar="JSON",
                   help="train nothing: write one report from the runs of these closer_look.json files (e.g. the "
                        "8- and 16-frame halves of a study run separately)")
    return p.parse_args(argv)


def _select_rows(args: argparse.Namespace) -> list[Row]:
    rows = list(ROWS) + ([] if args.no_extras else list(EXTRA_ROWS))
    if args.networks is None:
        return rows
    known = {r.key: r for r in ROWS + EXTRA_ROWS}
    wanted = _csv(args.networks)
    unknown = [k for k in wanted if k not in known]
    if unknown:
        die(f"--networks: unknown row(s) {', '.join(unknown)}; valid: {', '.join(known)}")
    return [known[k] for k in wanted]


def merge_reports(paths: Sequence[Path], out_dir: Path, argv: Sequence[str]) -> dict[str, Path]:
    """One report from the runs of several closer_look.json files (one recipe but for the learning rate).

    Where the files hold runs of one network at several rates, it keeps the rate with the best mean validation
    video@1 at the shortest clip length over every seed (`choose_lrs`), and only its runs."""
    payloads = []
    for path in paths:
        try:
            payloads.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as e:
            die(f"{path}: cannot read a closer_look.json ({e})")
    but_lr = {json.dumps({k: v for k, v in p["recipe"].items() if k not in ("lr", "row_lr", "lr_grid")}, sort_keys=True)
              for p in payloads}
    if len(but_lr) > 1:
        die(f"{', '.join(map(str, paths))}: runs of different recipes cannot share one table")
    raw = payloads[0]["recipe"]
    recipe = Recipe(**{**raw, "lr_steps": tuple(raw["lr_steps"]),
                       "row_lr": tuple(tuple(v) for v in raw["row_lr"])})
    results = [RunResult(**r) for p in payloads for r in p["runs"]]
    keys = {r.key for r in results}
    rows = [r for r in ROWS + EXTRA_ROWS if r.key in keys]
    frames = sorted({r.frames for r in results})
    seeds = sorted({r.seed for r in results})
    if len({r.lr for r in results}) > 1:
        first = min(r.frames for r in results)
        chosen = choose_lrs([r for r in results if r.frames == first])
        log.info("learning rates chosen on the validation split (%d frames, every seed): %s", first, chosen)
        recipe = replace(recipe, row_lr=tuple(sorted(chosen.items())))
        results = [r for r in results if r.lr == recipe.lr_for(r.key)]
    costs = {k: Cost(**v) for p in payloads for k, v in p["costs"].items()}
    meta = {"command": " ; ".join(p["meta"]["command"] for p in payloads)
                       + f" ; python -m tools.bench.closer_look {' '.join(argv)}",
            "wall_s": sum(p["meta"]["wall_s"] for p in payloads), "cpu_s": sum(p["meta"]["cpu_s"] for p in payloads),
            "jobs": payloads[0]["meta"]["jobs"], "threads": payloads[0]["meta"]["threads"],
            "machine": payloads[-1]["meta"]["machine"]}
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_report(out_dir, rows, costs, results, frames, seeds, recipe, meta)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = parse_args(argv)
    setup_logging()
    if args.merge:
        merge_reports(args.merge, args.out_dir, sys.argv[1:] if argv is None else list(argv))
        return 0
    recipe = QUICK if args.quick else FULL
    frames = args.frames or ([4, 8] if args.quick else [8, 16])
    seeds = args.seeds or ([0] if args.quick else [0, 1])
    if args.epochs is not None:
        if args.epochs < 1:
            die(f"--epochs must be >= 1, got {args.epochs}")
        recipe = replace(recipe, epochs=args.epochs, lr_steps=tuple(s for s in recipe.lr_steps if s < args.epochs))
    if args.lr_steps is not None:
        if any(not 0 < s < recipe.epochs for s in args.lr_steps):
            die(f"--lr-steps must lie between 0 and the {recipe.epochs} epochs, got {args.lr_steps}")
        recipe = replace(recipe, lr_steps=tuple(sorted(args.lr_steps)))
    if args.lr is not None:
        if args.lr <= 0:
            die(f"--lr must be > 0, got {args.lr}")
        recipe = replace(recipe, lr=args.lr, row_lr=())
    if args.warmup is not None:
        if not 0 <= args.warmup < recipe.epochs:
            die(f"--warmup must be in [0, {recipe.epochs}) epochs, got {args.warmup}")
        recipe = replace(recipe, warmup_epochs=args.warmup)
    if args.width_mult is not None:
        if args.width_mult <= 0:
            die(f"--width-mult must be > 0, got {args.width_mult}")
        recipe = replace(recipe, width_mult=args.width_mult)
    if args.jobs < 1 or args.threads < 1 or min(frames) < 1:
        die("--jobs, --threads and --frames must be >= 1")
    rows = _select_rows(args)
    demo = _demo_config(args.quick)
    if max(frames) > demo.frames:
        die(f"--frames {max(frames)}: the demo videos have {demo.frames} frames")
    if args.lr_grid is None:
        lr_grid = [] if args.lr is not None else list(recipe.lr_grid)
    elif args.lr_grid == "none":
        lr_grid = []
    else:
        try:
            lr_grid = [float(v) for v in _csv(args.lr_grid)]
        except ValueError:
            die(f"--lr-grid {args.lr_grid}: expected comma-separated learning rates or 'none'")

    from tools.demo import prepare_data

    data_dir = args.data_dir / "quick" if args.quick else args.data_dir
    started, cpu0 = time.perf_counter(), _cpu_seconds()
    store = prepare_data(demo, data_dir, workers=max(1, args.jobs))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    costs = network_costs(rows)
    results: list[RunResult] = []
    done: set[tuple[str, int, int]] = set()
    if len(lr_grid) > 1:
        grid = lr_grid_specs(rows, frames, seeds, lr_grid)
        results += run_all(grid, recipe, args.quick, store, args.out_dir, args.jobs, args.threads, args.verbose)
        chosen = choose_lrs(results)
        log.info("learning rates chosen on the validation split: %s", chosen)
        recipe = replace(recipe, row_lr=tuple(sorted(chosen.items())))
        for r in results:  # the grid run at the chosen rate is also the study's run of that row, clip and seed
            if r.lr == recipe.lr_for(r.key):
                r.purpose = "study"
                done.add((r.key, r.frames, r.seed))
    elif lr_grid:
        recipe = replace(recipe, lr=lr_grid[0], row_lr=())
    specs = [RunSpec(r, f, s, recipe.lr_for(r.key)) for r in rows for f in frames for s in seeds
             if (r.key, f, s) not in done]
    results += run_all(specs, recipe, args.quick, store, args.out_dir, args.jobs, args.threads, args.verbose)
    meta = {"command": "python -m tools.bench.closer_look " + " ".join(sys.argv[1:] if argv is None else argv),
            "wall_s": time.perf_counter() - started, "cpu_s": _cpu_seconds() - cpu0, "jobs": args.jobs,
            "threads": args.threads, "machine": f"{platform.processor() or platform.machine()}, "
                                                 f"{os.cpu_count()} CPUs, load average "
                                                 f"{', '.join(f'{v:.1f}' for v in os.getloadavg())} at the end"}
    write_report(args.out_dir, rows, costs, results, frames, seeds, recipe, meta)
    return 0


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


if __name__ == "__main__":
    sys.exit(main())
