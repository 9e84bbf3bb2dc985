"""Model identity: the model hash is the hash of the weights (one changed weight, another
hash), the card's hash and schema version are checked on loading, and the files that belong
to a model (prediction heads, evaluation results) name the hash of that model.

(Checking the hash for its length passes a hash that ignores the weights.)"""

from __future__ import annotations

import copy
import json
import shutil

import pytest

from napari_nacsim.core.checksum import file_sha256
from napari_nacsim.core.errors import InputError
from napari_nacsim.engine import bundled_model_path
from napari_nacsim.science.generative.card import model_hash
from napari_nacsim.science.generative.checkpoint import CARD, verify_checkpoint

FAMILIES = ("breast", "lung")


def _copy_model(family: str, dst):
    return shutil.copytree(bundled_model_path(family), dst)


def _card(folder) -> dict:
    return json.loads((folder / CARD).read_text())


def _smallest_weight_file(card: dict) -> str:
    return min(card["files"], key=lambda name: card["files"][name]["bytes"])


def _change_one_weight(path) -> None:
    """Add 1 to the first element of the first floating-point tensor of a safetensors file
    (written back as safetensors, as a re-save would)."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel())
    tensor = state[name].clone()
    tensor.view(-1)[0] += 1.0
    state[name] = tensor.contiguous()
    save_file(state, str(path), metadata={"component": path.stem, "format": "pt"})


@pytest.mark.parametrize("family", FAMILIES)
def test_bundled_card_hash_is_the_hash_of_its_weight_files(family):
    card = verify_checkpoint(bundled_model_path(family))
    assert card["model_hash"] == model_hash(card)
    folder = bundled_model_path(family)
    for entry in card["files"].values():
        assert file_sha256(folder / entry["path"]) == entry["sha256"]


def test_the_hash_depends_on_every_file_and_only_on_the_files():
    card = _card(bundled_model_path("breast"))
    base = model_hash(card)
    seen = {base}
    for name in card["files"]:
        changed = copy.deepcopy(card)
        digest = changed["files"][name]["sha256"]
        changed["files"][name]["sha256"] = digest[:-1] + ("0" if digest[-1] != "0" else "1")
        seen.add(model_hash(changed))
    assert len(seen) == 1 + len(card["files"])      # each file's weights move the hash
    renamed = copy.deepcopy(card)
    renamed["title"], renamed["config"]["default_steps"] = "another title", 99
    assert model_hash(renamed) == base               # settings and words do not


@pytest.mark.parametrize("family", FAMILIES)
def test_changing_one_weight_changes_the_model_hash(family, tmp_path):
    folder = _copy_model(family, tmp_path / "model")
    card = _card(folder)
    name = _smallest_weight_file(card)
    path = folder / card["files"][name]["path"]
    _change_one_weight(path)
    # the weight file no longer matches its card: refused, naming the file
    with pytest.raises(InputError, match=f"{path.name}: sha256 .* does not match"):
        verify_checkpoint(folder)
    # re-hashed the careless way (the file's entry updated, the model hash left): refused
    card["files"][name]["sha256"] = file_sha256(path)
    (folder / CARD).write_text(json.dumps(card))
    with pytest.raises(InputError, match="model_hash .* is not the hash of its weight files"):
        verify_checkpoint(folder)
    # and done properly: another model, another hash
    card["model_hash"] = model_hash(card)
    (folder / CARD).write_text(json.dumps(card))
    assert verify_checkpoint(folder)["model_hash"] != _card(bundled_model_path(family))[
        "model_hash"]


def _micro_network(family: str):
    """A micro network of ``family`` and its save_checkpoint."""
    import torch

    if family == "breast":
        from generative_helpers import micro_model
        from napari_nacsim.science.generative.checkpoint import save_checkpoint

        return micro_model(seed=2), save_checkpoint
    from napari_nacsim.science.generative.immunodiff.checkpoint import save_checkpoint
    from napari_nacsim.science.generative.immunodiff.config import MICRO
    from napari_nacsim.science.generative.immunodiff.network import ImmunoDiff

    torch.manual_seed(2)
    return ImmunoDiff(MICRO), save_checkpoint


@pytest.mark.parametrize("family", FAMILIES)
def test_saving_the_same_weights_twice_gives_the_same_hash_and_one_changed_weight_another(
        family, tmp_path):
    """The hash names the weights: saved again (same process or not), the same model; one
    weight changed, another (the safetensors metadata map is written in random order, so
    a file with two metadata keys had other bytes at each save)."""
    import torch

    network, save_checkpoint = _micro_network(family)
    a = _card(save_checkpoint(network, tmp_path / "a", {"title": "micro"}))
    b = _card(save_checkpoint(network, tmp_path / "b", {"title": "micro, again"}))
    assert a["model_hash"] == b["model_hash"]
    first = "unet"                                   # a component of both designs
    module = getattr(network, first)
    with torch.no_grad():
        next(module.parameters()).view(-1)[0] += 1e-3
    c = _card(save_checkpoint(network, tmp_path / "c", {"title": "micro"}))
    assert c["model_hash"] != a["model_hash"]
    assert c["files"][first]["sha256"] != a["files"][first]["sha256"]
    assert all(c["files"][n] == a["files"][n] for n in a["files"] if n != first)


@pytest.mark.parametrize("version", ["0", "2", None])
def test_a_card_of_another_schema_version_is_refused(version, tmp_path):
    folder = _copy_model("breast", tmp_path / "model")
    card = _card(folder)
    if version is None:
        del card["schema_version"]
    else:
        card["schema_version"] = version
    (folder / CARD).write_text(json.dumps(card))
    with pytest.raises(InputError) as err:
        verify_checkpoint(folder)
    message = str(err.value)
    assert "\n" not in message and CARD in message
    assert f"breast schema version {version}, this nacsim has version 1" in message


def test_bundled_prediction_heads_name_the_model_they_belong_to():
    from napari_nacsim.science.prediction.heads import read_heads_card
    from napari_nacsim.science.prediction.predict import has_heads, heads_folder

    folder = bundled_model_path("lung")
    if not has_heads(folder):
        pytest.skip("the bundled lung model has no prediction heads")
    heads = read_heads_card(heads_folder(folder))
    assert heads["model_hash"] == _card(folder)["model_hash"], (
        "the bundled heads were trained on another lung model: retrain them "
        "(training/evaluate_prediction.py) or bundle the model they belong to")


def test_heads_of_another_model_are_refused(tmp_path):
    """Heads saved for one model are refused by every other (here: one weight changed)."""
    import numpy as np

    from napari_nacsim.science.prediction.heads import (fit_response, fit_survival,
                                                         load_heads, save_heads)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    r = fit_response(x, (x[:, 0] > 0).astype(int), l2=0.1)
    s = fit_survival(x, rng.uniform(1, 30, 40), rng.uniform(size=40) < 0.7, l2=0.1)
    folder = _copy_model("lung", tmp_path / "model")
    card = _card(folder)
    heads = save_heads(folder / "prediction_heads", r, s, {
        "model_hash": card["model_hash"], "feature_variant": "full",
        "timestep_fraction": 0.1, "reference_log_risk": 0.0})
    load_heads(heads, card["model_hash"])
    name = _smallest_weight_file(card)
    _change_one_weight(folder / card["files"][name]["path"])
    card["files"][name]["sha256"] = file_sha256(folder / card["files"][name]["path"])
    card["model_hash"] = model_hash(card)
    with pytest.raises(InputError, match="heads were trained on lung model"):
        load_heads(heads, card["model_hash"])


@pytest.mark.parametrize("family", FAMILIES)
def test_evaluation_files_name_the_bundled_model_they_evaluate(family):
    """The evaluation the golden record names (tests/golden/<family>.json, "evaluation")
    is of the bundled model: its numbers are this model's, not an earlier one's."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    golden = json.loads((root / "tests" / "golden" / f"{family}.json").read_text())
    evaluation = golden.get("evaluation")
    if not evaluation:
        pytest.skip(f"no evaluation of the bundled {family} model recorded yet "
                    "(tests/golden/README.md)")
    recorded = json.loads((root / evaluation).read_text())
    found = recorded.get("model_hash") or recorded.get("model", {}).get("model_hash")
    bundled = _card(bundled_model_path(family))["model_hash"]
    assert found == bundled, (f"{evaluation} evaluates model {str(found)[:12]}, the bundled "
                              f"{family} model is {bundled[:12]}")
