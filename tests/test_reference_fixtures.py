"""Checkpoints of the reference code bases, as the reference code itself names and computes them.

`tests/fixtures/reference_models.json` was made by running the model classes of MiCT-Net-PyTorch and of SRTG (its
ResNets and MTNet) themselves (`tests/fixtures/make_reference_fixtures.py` says which revisions and how): every
tensor name and shape, and the float64 logits for deterministic weights (`tests.reference_weights`) on a fixed
input. Here a checkpoint file of the reference's layout is written from those names, loaded by our loaders, and
must give the same logits.
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


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """`name` -> the file the reference code would have written for its weights (made once per module)."""
    folder = tmp_path_factory.mktemp("reference_checkpoints")
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = _reference_checkpoint(MODELS[name], folder / f"{name}.pth.tar")
        return made[name]

    return get


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


def _layout(entry: dict) -> dict:
    """Keyword arguments that build our network as the reference code builds it (SRTG's ResNets: its layout;
    its MTNet has one layout only)."""
    if entry["network"].startswith("mtnet"):
        return {}
    fmt = {"MiCT-Net-PyTorch": reference_keys.MICT, "SRTG": reference_keys.SRTG}[entry["format"]]
    return reference_keys.reference_layout(fmt)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_reference_weights_load_strictly_and_give_the_reference_logits(name, checkpoint):
    """Every reference tensor maps onto one of ours (strict, none left over), and in float64 our network computes
    the reference's logits (float32 would drift through the SR networks' recurrences and the deep residual
    stacks, so the weights are loaded into a float64 copy of the network)."""
    entry = MODELS[name]
    path = checkpoint(name)
    model = network.build_model(name, len(entry["logits"][0]), **_layout(entry)).double()
    report = load_weights(model, path, strict=True)
    assert report.complete and len(report.loaded) == len(entry["tensors"])
    with torch.no_grad():
        logits = model.eval()(reference_input(entry["input_shape"]))
    expected = torch.tensor(entry["logits"], dtype=torch.float64)
    torch.testing.assert_close(logits, expected, rtol=1e-9, atol=1e-9 * expected.abs().max().item())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_reference_checkpoint_loads_by_network_name_for_inference(name, checkpoint):
    """What `tools.predict --weights FILE --network NAME` does with the reference's file."""
    entry = MODELS[name]
    path = checkpoint(name)
    loaded = load_model(path, "cpu", network=name)
    assert loaded.network == name and len(loaded.classes) == len(entry["logits"][0])
    # the same tensors in the same places as the float64 load above, in the model's float32
    model = network.build_model(name, len(entry["logits"][0]), **_layout(entry)).double()
    load_weights(model, path, strict=True)
    ours = loaded.model.state_dict()
    assert ours.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(ours[key], value.to(ours[key].dtype)), key
