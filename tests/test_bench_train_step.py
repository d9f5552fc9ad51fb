"""`python -m tools.bench.train_step` at a tiny size: it runs as users start it and its figures fit together."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "tools.bench.train_step", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_report_fields_are_consistent(tmp_path):
    out = tmp_path / "report.json"
    # --workers 0 and the process clock: the training process does all the work, so an end-to-end step costs
    # at least what the model alone and the loader alone cost, whatever else runs on the machine
    proc = _run(["--networks", "r3d_18", "--width-mult", "0.125", "--clip-length", "8", "--clip-size", "32",
                 "--size", "40x53", "--frames", "20", "--batch-size", "2", "--warmup", "2", "--steps", "3",
                 "--workers", "0", "--threads", "1", "--clock", "process", "--convert-workers", "1",
                 "--data", str(tmp_path / "work"), "--json", str(out), "--out", str(tmp_path / "report.md")],
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["config"]["workers"] == 0 and report["config"]["clock"] == "process"
    assert report["machine"]["device"] == "cpu"
    (r,) = report["results"]
    assert r["network"] == "r3d_18" and r["params_m"] > 0
    compute, e2e, loader = r["compute_clips_per_s"], r["e2e_clips_per_s"], r["loader_clips_per_s"]
    assert min(compute, e2e, loader) > 0
    assert r["data_bound_share"] == pytest.approx(1 - e2e / compute, abs=1e-9)
    assert e2e <= 1.25 * compute and e2e <= 1.25 * loader
    assert 0 <= r["loader_wait_share"] < 1
    table = (tmp_path / "report.md").read_text()
    assert "| r3d_18 |" in table and table.strip() in proc.stdout
    assert (tmp_path / "work" / "store" / "labels" / "all.csv").is_file()  # kept for the next run
    assert not list((tmp_path / "work").glob("runs-*"))


def test_bad_options_exit_2(tmp_path, capsys):
    from tools.bench import train_step

    for argv, message in ((["--clock", "process", "--workers", "2"], "--clock process counts the training process"),
                          (["--precision", "fp16", "--device", "cpu"], "error: --precision fp16 needs a CUDA GPU")):
        with pytest.raises(SystemExit) as e:
            train_step.main([*argv, "--data", str(tmp_path)])
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # refused before anything was generated
