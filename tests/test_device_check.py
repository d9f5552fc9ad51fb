"""`tools/device_check.sh` on the CPU at toy sizes: every section runs and reports, as it would on a GPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_device_check_runs_every_section_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    # every section but bench_channels_last (the same bench with --channels-last)
    sections = "steps,ddp,store,multigrid,resume,bench"
    proc = subprocess.run(["bash", str(REPO / "tools" / "device_check.sh"), "--device", "cpu", "--tiny",
                           "--families", "r3d_18", "--bench-networks", "mict_resnet18", "--sections", sections,
                           "--work", str(tmp_path / "work"),
                           "--out", str(out), "--wheels", str(tmp_path / "no_wheels")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    text = proc.stdout
    report = json.loads((out / "device_check.json").read_text())
    assert text.strip().endswith((out / "device_check.md").read_text().strip())  # the file holds what it printed
    assert "could not install the wheels of" in text  # an empty wheel folder is said, not fatal
    assert report["env"]["cuda_available"] in (True, False) and report["env"]["torch"]
    # fp32 steps must be finite; bf16 on the CPU is reported whatever it gives
    fp32 = [c for c in report["steps"] if c["precision"] == "fp32"]
    assert [c["network"] for c in fp32] == ["r3d_18"] and all(c["ok"] for c in fp32), report["steps"]
    assert {c["precision"] for c in report["steps"]} == {"fp32", "bf16"}
    assert report["ddp"]["ok"] and report["ddp"]["backend"] == "gloo" and report["ddp"]["world_size"] == 1
    assert report["store"]["ok"]
    assert len(report["multigrid"]["epoch_seconds"]) == 8 and len(report["multigrid"]["batch_shapes"]) >= 4
    assert report["resume"]["equal"], report["resume"]
    assert [r["network"] for r in report["bench"]["results"]] == ["mict_resnet18"]
    assert report["failed"] in ([], ["steps"]) and not report["skipped"], text  # steps: bf16 on the CPU only
    assert proc.returncode == (1 if report["failed"] else 0)
    for section in ("env:", "steps:", "ddp:", "store:", "multigrid:", "resume:", "bench:", "done in"):
        assert any(line.startswith(section) for line in text.splitlines()), (section, text)
