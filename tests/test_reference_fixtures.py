"""Checkpoints of the reference code bases, as the reference code itself names and computes them.

`tests/fixtures/reference_models.json` was made by running MiCT-Net-PyTorch's and SRTG's own model classes
(`tests/fixtures/make_reference_fixtures.py` says which revisions and how): every tensor name and shape, and the
float64 logits for deterministic weights (`tests.reference_weights`) on a fixed input. Here a checkpoint file of the
reference's layout is written from those names, loaded by our loaders, and must give the same logits.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import network
from network import load_weights, reference_keys
from tests.reference_weights import reference_input, reference_state
from train.inference import load_model

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "reference_models.json").read_text())
MODELS = {m["network"]: m for m in FIXTURE["models"]}

pytestmark = pytest.mark.usefixtures("one_thread")


def _reference_checkpoint(entry: dict, path: Path) -> Path:
    """The file the reference code would have written for these weights (its top-level keys and name prefix)."""
    state = reference_state(entry["tensors"])
    prefix = entry["file"]["state_dict_prefix"]
    obj = {"epoch": 30, "state_dict": {prefix + k: v for k, v in state.items()},
           "optimizer": {"state": {}, "param_groups": []}}
    if "best_pred" in entry["file"]["keys"]:
        obj["best_pred"] = 0.5
    assert sorted(obj) == sorted(entry["file"]["keys"])
    torch.save(obj, path)
    return path


def test_the_fixture_comes_from_the_reference_code():
    assert FIXTURE["sources"]["MiCT-Net-PyTorch"]["commit"] == "edc25e6afd44e5b3064c850b6cceb9a5a6687c12"
    assert FIXTURE["sources"]["SRTG"]["commit"] == "1c4dd7e8cc394523c2e7ca0501e9b1eeead744b3"
    assert all(len(m["tensors"]) > 100 and len(m["logits"]) == 2 for m in FIXTURE["models"])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_reference_checkpoint_loads_strictly_and_gives_the_reference_logits(name, tmp_path):
    entry = MODELS[name]
    path = _reference_checkpoint(entry, tmp_path / "checkpoint.pth.tar")
    # The user's path: the format is recognised, every tensor is mapped and the load is strict.
    loaded = load_model(path, "cpu", network=name)
    assert loaded.network == name and len(loaded.classes) == len(entry["logits"][0])
    # The same mapping into a float64 network: the reference's numbers (float32 would drift through the SR
    # networks' LSTMs and the deep residual stacks).
    fmt = {"MiCT-Net-PyTorch": reference_keys.MICT, "SRTG": reference_keys.SRTG}[entry["format"]]
    model = network.build_model(name, len(entry["logits"][0]), **reference_keys.reference_layout(fmt)).double()
    report = load_weights(model, path, strict=True)
    assert report.complete and not report.skipped and not report.missing
    own = {k for k in model.state_dict()}
    assert len(own) == len(entry["tensors"])  # one of ours for each reference tensor, none left over
    with torch.no_grad():
        logits = model.eval()(reference_input(entry["input_shape"]))
    expected = torch.tensor(entry["logits"], dtype=torch.float64)
    torch.testing.assert_close(logits, expected, rtol=1e-9, atol=1e-9 * expected.abs().max().item())
