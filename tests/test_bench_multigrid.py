"""tools.bench.multigrid: the report's speed-ups against the baseline row, and a tiny end-to-end run."""
from __future__ import annotations

import csv

import pytest

from tools.bench import multigrid as bench_multigrid
from tools.bench.multigrid import RunResult, format_table


def _row(lines: list[str], name: str) -> list[str]:
    line = next(ln for ln in lines if ln.startswith(f"| {name} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_table_speed_ups_are_relative_to_the_baseline_row():
    results = [
        RunResult("long+short", 10, wall_s=25.0, cpu_s=24.0, train_s=20.0, clips=2000.0, epoch_to_target=9,
                  train_s_to_target=18.0, final_top1=91.0, best_top1=92.0),
        RunResult("baseline", 10, wall_s=100.0, cpu_s=98.0, train_s=90.0, clips=2000.0, epoch_to_target=5,
                  train_s_to_target=45.0, final_top1=90.0, best_top1=90.0),
        RunResult("short", 10, wall_s=50.0, cpu_s=49.0, train_s=40.0, clips=2000.0, epoch_to_target=None,
                  train_s_to_target=None, final_top1=70.0, best_top1=75.0),
    ]
    lines = format_table(results, target=90.0)
    ls = _row(lines, "long+short")
    assert ls[8] == "2.50x" and ls[9] == "4.00x" and ls[5] == "100.0"  # 45/18, 100/25, 2000 clips / 20 s
    base = _row(lines, "baseline")
    assert base[8] == "1.00x" and base[9] == "1.00x"
    short = _row(lines, "short")
    assert short[7] == "not reached" and short[8] == "-" and short[9] == "2.00x"
    # The baseline never reached the target: the speed-up is a lower bound over its whole training time.
    results[1] = RunResult("baseline", 10, 100.0, 98.0, 90.0, 2000.0, None, None, 85.0, 88.0)
    assert _row(format_table(results, 90.0), "long+short")[8] == "> 5.00x"
    # Without a baseline row there is nothing to compare against.
    assert all(_row(format_table(results[:1], 90.0), "long+short")[i] == "-" for i in (8, 9))


def test_bench_multigrid_quick_end_to_end(tmp_path, capsys):
    """Each row is what its training run recorded: the epochs, the train seconds, the first epoch whose validation
    reached the target, the final and best video@1, all read back from the run's own CSVs here."""
    out = tmp_path / "report.md"
    code = bench_multigrid.main(["--quick", "--configs", "baseline,long+short", "--data-dir", str(tmp_path / "data"),
                                 "--run-dir", str(tmp_path / "runs"), "--target", "30", "--out", str(out)])
    assert code == 0
    text = out.read_text()
    lines = text.splitlines()
    for name in ("baseline", "long+short"):
        row = _row(lines, name)
        run = tmp_path / "runs" / "quick" / name
        with open(run / "train_results.csv", newline="") as f:
            train = list(csv.DictReader(f))
        with open(run / "val_results.csv", newline="") as f:
            val = {int(r["epoch"]): float(r["video_top1"]) for r in csv.DictReader(f)}
        assert row[1] == str(len(train)) == "3"  # the same epoch budget
        assert row[4] == f"{sum(float(r['seconds']) for r in train):.0f}"
        reached = next((e for e in sorted(val) if val[e] >= 30), None)
        assert row[6] == (str(reached) if reached is not None else "-"), (name, val)
        assert row[7] != "not reached" if reached is not None else row[7] == "not reached"
        assert (row[10], row[11]) == (f"{val[max(val)]:.1f}", f"{max(val.values()):.1f}"), (name, val)
        assert float(row[5]) > 0
    base = _row(lines, "baseline")
    assert base[9] == "1.00x" and base[8] == ("1.00x" if base[6] != "-" else "-")
    assert "adamw lr" in text  # the demo's optimizer, not the trainer's default


def test_bench_multigrid_rejects_unknown_configs(tmp_path):
    with pytest.raises(SystemExit):
        bench_multigrid.main(["--quick", "--configs", "baseline,nope", "--data-dir", str(tmp_path)])


def test_budget_config_scales_the_lr_steps():
    from tools.demo import FULL  # 14 epochs, lr step 10

    assert [bench_multigrid.budget_config(FULL, b).lr_steps for b in (1, 2, 3, 6, 9)] == \
        [(), (1,), (2,), (4,), (6,)]
    assert bench_multigrid.budget_config(FULL, 6).end_epoch == 6


def test_sweep_table_picks_the_cheapest_run_reaching_the_target():
    def r(name, epochs, seconds, final):
        return RunResult(name, epochs, seconds, seconds, seconds, 100.0, None, None, final, final)

    results = {("baseline", 3): r("baseline", 3, 30.0, 80.0), ("baseline", 6): r("baseline", 6, 60.0, 95.0),
               ("long+short", 3): r("long+short", 3, 10.0, 50.0), ("long+short", 6): r("long+short", 6, 20.0, 92.0),
               ("short", 3): r("short", 3, 15.0, 40.0), ("short", 6): r("short", 6, 30.0, 85.0)}
    lines = bench_multigrid.format_sweep(results, ["baseline", "long+short", "short"], [3, 6], 90.0)
    base, mg, short = _row(lines, "baseline"), _row(lines, "long+short"), _row(lines, "short")
    assert base[1:] == ["80.0 (30)", "95.0 (60)", "6 epochs", "60", "60", "1.00x", "1.00x"]
    assert mg[3:] == ["6 epochs", "20", "20", "3.00x", "3.00x"]
    assert short[3:] == ["not reached", "-", "-", "-", "-"]
