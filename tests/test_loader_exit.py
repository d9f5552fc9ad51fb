"""A process whose loaders still have live workers at exit ends: the workers are stopped, not waited for forever."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import gc
    import torch
    from data.loader import build_loader

    class Clips(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return torch.zeros(3, 1, 2, 2), 0, i

    gc.disable()  # the cycle below must survive until exit, as one can in a long run
    loader = build_loader(Clips(), batch_size=2, train=True, workers=2)
    for _ in loader:
        break  # persistent workers stay up, waiting for the next epoch
    cycle = {"loader": loader}
    cycle["self"] = cycle
    del loader
    print("done", flush=True)
""")


def test_persistent_workers_held_by_a_reference_cycle_do_not_block_exit():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "done"
