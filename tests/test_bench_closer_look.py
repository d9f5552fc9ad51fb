"""tools.bench.closer_look: the study command end to end (--quick, as a subprocess from another folder), the
choice of learning rates on the validation split, the table beside the paper's figures, bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tools.bench.closer_look import (
    EXTRA_ROWS,
    PAPER,
    ROWS,
    Cost,
    Recipe,
    RunResult,
    choose_lrs,
    format_table,
    summarise,
)

REPO = Path(__file__).resolve().parents[1]


def _study(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "tools.bench.closer_look", "--quick", "--data-dir",
                           str(tmp_path / "data"), "--out-dir", str(tmp_path / "out"), *extra],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def test_quick_study_writes_the_table_json_and_figure(tmp_path):
    proc = _study(tmp_path, "--networks", "r2d_18,fr2d_18", "--jobs", "1", "--lr-grid", "1e-3,3e-3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "out"
    table = (out / "closer_look.md").read_text()
    assert "| `r2d_18` | R2D | 11.45 |" in table and "| `fr2d_18` | f-R2D | 11.38 |" in table
    assert "clip@1 4f" in table and "video@1 8f" in table and "paper video@1 16f" in table
    report = json.loads((out / "closer_look.json").read_text())
    runs = [r for r in report["runs"] if r["purpose"] == "study"]
    assert sorted((r["key"], r["frames"]) for r in runs) == [("fr2d_18", 4), ("fr2d_18", 8), ("r2d_18", 4),
                                                             ("r2d_18", 8)]
    # each network tried both rates on 4-frame clips; the one kept is its study run at 4 frames, used for 8 frames
    chosen = dict(report["recipe"]["row_lr"])
    assert set(chosen) == {"r2d_18", "fr2d_18"} and set(chosen.values()) <= {1e-3, 3e-3}
    grid = [r for r in report["runs"] if r["purpose"] == "lr-grid"]
    assert sorted((r["key"], r["lr"]) for r in grid) == sorted(
        (k, ({1e-3, 3e-3} - {lr}).pop()) for k, lr in chosen.items())
    assert all(r["lr"] == chosen[r["key"]] for r in runs)
    assert all(0 <= r["test_video_top1"] <= 100 and r["wall_s"] > 0 for r in runs)
    assert (out / "closer_look.png").stat().st_size > 0
    assert (out / "runs" / "r2d_18_f8_s0" / "r2d_18_best.pth").is_file()
    # a study run in parts (e.g. 8 and 16 frames separately) gives one report again
    merged = subprocess.run([sys.executable, "-m", "tools.bench.closer_look", "--merge", str(out / "closer_look.json"),
                             "--out-dir", str(tmp_path / "merged")], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert merged.returncode == 0, merged.stderr[-2000:]
    again = (tmp_path / "merged" / "closer_look.md").read_text()
    assert [ln for ln in again.splitlines() if ln.startswith("| `")] == [ln for ln in table.splitlines()
                                                                         if ln.startswith("| `")]


def test_unknown_row_is_one_line(tmp_path):
    proc = _study(tmp_path, "--networks", "r3d_18,mc1_18")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --networks: unknown row(s) mc1_18; valid: ")


def _result(key: str, lr: float, val: float, frames: int = 8, seed: int = 0, test: float = 50.0,
            purpose: str = "study") -> RunResult:
    return RunResult(key, frames, seed, lr, purpose, val, 3, test, test, 1.0, 1.0)


def test_each_networks_rate_is_chosen_on_validation_not_test():
    results = [_result("r3d_18", 1e-3, val=40.0, test=99.0), _result("r3d_18", 3e-4, val=90.0, test=10.0),
               _result("mc3_18", 1e-3, val=80.0), _result("mc3_18", 3e-4, val=60.0),
               _result("fr2d_18", 1e-3, val=50.0), _result("fr2d_18", 3e-4, val=50.0)]
    chosen = choose_lrs(results)
    assert chosen == {"r3d_18": 3e-4, "mc3_18": 1e-3, "fr2d_18": 3e-4}  # a tie goes to the smaller rate
    recipe = Recipe(row_lr=tuple(chosen.items()))
    assert recipe.lr_for("mc3_18") == 1e-3 and recipe.lr_for("mict_resnet18") == recipe.lr


def test_table_means_over_seeds_beside_the_papers_figures():
    rows = [r for r in ROWS if r.key in ("r3d_18", "r2plus1d_18/per_conv")] + [EXTRA_ROWS[0]]
    results = [_result("r3d_18", 1e-3, 90.0, frames=8, seed=0, test=80.0),
               _result("r3d_18", 1e-3, 90.0, frames=8, seed=1, test=90.0),
               _result("r3d_18", 1e-3, 90.0, frames=16, seed=0, test=100.0)]
    costs = {r.key: Cost(33.37, 81.4) for r in rows}
    summary = summarise(results, rows, [8, 16])
    lines = format_table(rows, costs, summary, [8, 16])
    r3d = next(ln for ln in lines if ln.startswith("| `r3d_18` |")).split(" | ")
    assert r3d[4:8] == ["85.0", "85.0", "100.0", "100.0"]
    assert r3d[8:13] == [f"{v:.1f}" for v in PAPER["R3D"]][:4] + [f"{PAPER['R3D'][4]:.1f} |"]
    r21d = next(ln for ln in lines if ln.startswith("| `r2plus1d_18/per_conv` |"))
    assert "| R(2+1)D |" in r21d and r21d.count("| - |") >= 2  # not trained here: dashes, not zeros
    assert next(ln for ln in lines if ln.startswith("| `mict_resnet18` |")).endswith("| - | - | - | - | - |")


def test_merged_parts_at_two_rates_keep_each_networks_rate_chosen_on_validation(tmp_path):
    from dataclasses import asdict

    from tools.bench.closer_look import merge_reports

    def part(lr: float, runs: list[RunResult]) -> Path:
        path = tmp_path / f"part_{lr:g}.json"
        payload = {"meta": {"command": f"part {lr:g}", "wall_s": 1.0, "cpu_s": 1.0, "jobs": 1, "threads": 1,
                            "machine": "test"},
                   "recipe": asdict(Recipe(lr=lr)), "costs": {"r3d_18": asdict(Cost(33.37, 81.4)),
                                                              "fr2d_18": asdict(Cost(11.38, 15.5))},
                   "runs": [asdict(r) for r in runs]}
        path.write_text(json.dumps(payload))
        return path

    fast = part(1e-3, [_result("r3d_18", 1e-3, val=40.0, test=45.0), _result("fr2d_18", 1e-3, val=50.0, test=30.0),
                       _result("r3d_18", 1e-3, val=50.0, frames=16, test=60.0)])
    slow = part(3e-4, [_result("r3d_18", 3e-4, val=95.0, test=90.0), _result("fr2d_18", 3e-4, val=30.0, test=20.0)])
    merge_reports([fast, slow], tmp_path / "out", ["--merge"])
    payload = json.loads((tmp_path / "out" / "closer_look.json").read_text())
    assert dict(payload["recipe"]["row_lr"]) == {"r3d_18": 3e-4, "fr2d_18": 1e-3}
    assert sorted((r["key"], r["frames"], r["lr"]) for r in payload["runs"]) == [("fr2d_18", 8, 1e-3),
                                                                                 ("r3d_18", 8, 3e-4)]
    table = (tmp_path / "out" / "closer_look.md").read_text()
    assert "| `r3d_18` | R3D | 33.37 | 81.4 | 90.0 | 90.0 | - | - |" in table  # 16 frames ran only at 1e-3


def test_the_rate_grid_runs_every_seed_at_the_shortest_clips():
    from tools.bench.closer_look import lr_grid_specs

    rows = [r for r in ROWS if r.key in ("r3d_18", "fr2d_18")]
    specs = lr_grid_specs(rows, [16, 8], [0, 1], [3e-4, 1e-3])
    assert sorted((s.row.key, s.frames, s.seed, s.lr) for s in specs) == sorted(
        (k, 8, seed, lr) for k in ("r3d_18", "fr2d_18") for seed in (0, 1) for lr in (3e-4, 1e-3))
    assert {s.purpose for s in specs} == {"lr-grid"}
    # a network's rate is the mean over the seeds: one lucky seed does not decide it
    results = [_result("r3d_18", 1e-3, val=100.0, seed=0), _result("r3d_18", 1e-3, val=50.0, seed=1),
               _result("r3d_18", 3e-4, val=97.5, seed=0), _result("r3d_18", 3e-4, val=90.0, seed=1)]
    assert choose_lrs(results) == {"r3d_18": 3e-4}


_ORPHAN_PROBE = """
import os, signal, sys, time
from concurrent.futures import ProcessPoolExecutor
import multiprocessing
from tools.bench.closer_look import _init_worker
ctx = multiprocessing.get_context("spawn")
with ProcessPoolExecutor(1, mp_context=ctx, initializer=_init_worker, initargs=(1, False, os.getpid())) as pool:
    pool.submit(time.sleep, 0)  # the worker is up and initialised
    pool.submit(signal.signal, signal.SIGTERM, signal.SIG_IGN).result()  # as the trainer's preemption handler
    print(pool.submit(os.getpid).result(), flush=True)
    pool.submit(time.sleep, 120)  # a long run in progress
    time.sleep(120)
"""


def test_a_killed_study_leaves_no_worker_training(tmp_path):
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-c", _ORPHAN_PROBE], cwd=tmp_path, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    worker = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        # a dead worker that nobody has reaped yet is a zombie: gone for our purpose
        if Path(f"/proc/{worker}/stat").read_text().split(") ")[-1].startswith("Z"):
            break
        time.sleep(0.2)
    else:
        os.kill(worker, signal.SIGKILL)
        raise AssertionError("the study's worker outlived its killed main process")
