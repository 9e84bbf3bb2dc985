"""Checkpoints: safetensors + JSON model card, sha256 verification, nothing unpickled."""

from __future__ import annotations

import json

import pytest
import torch

from generative_helpers import micro_model, scenarios
from napari_nacsim.core.errors import InputError
from napari_nacsim.science.generative.checkpoint import (CARD, load_checkpoint, save_checkpoint,
                                                         verify_checkpoint)
from napari_nacsim.science.generative.sampling import generate


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = micro_model(seed=5)
    folder = save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "model",
                             {"title": "micro", "training": {"command": "pytest"}})
    return model, folder


def test_round_trip_gives_identical_images(saved):
    model, folder = saved
    loaded, card = load_checkpoint(folder)
    image = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    sc = scenarios(("T1", True), ("T2", False))
    a = generate(model, image, sc, seed=1, steps=3, sampler="dpmpp")
    b = generate(loaded, image, sc, seed=1, steps=3, sampler="dpmpp")
    # The frozen text tower is stored in float16 (store_half): contexts agree to fp16 precision
    torch.testing.assert_close(a, b, rtol=0, atol=2e-3)
    for name in ("unet", "controlnet"):
        for (k, v), (k2, v2) in zip(getattr(model, name).state_dict().items(),
                                    getattr(loaded, name).state_dict().items()):
            assert k == k2 and torch.equal(v, v2)
    assert card["family"] == "breast" and card["schema_version"] == "1"
    assert card["training"]["command"] == "pytest"


def test_card_lists_every_file_with_its_sha256(saved):
    _, folder = saved
    card = json.loads((folder / CARD).read_text())
    assert set(card["files"]) == {"unet", "controlnet", "prompt_tokens", "text_tower"}
    for entry in card["files"].values():
        assert (folder / entry["path"]).suffix == ".safetensors"
        assert len(entry["sha256"]) == 64
    assert len(card["model_hash"]) == 64
    assert card["config"]["image_size"] == 16
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt"))


def test_tampered_file_is_refused(saved, tmp_path):
    _, folder = saved
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in folder.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    verify_checkpoint(copy)
    data = bytearray((copy / "controlnet.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (copy / "controlnet.safetensors").write_bytes(bytes(data))
    with pytest.raises(InputError, match="controlnet.safetensors: sha256 .* does not match"):
        load_checkpoint(copy)
    (copy / "controlnet.safetensors").unlink()
    with pytest.raises(InputError, match="missing"):
        verify_checkpoint(copy)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(InputError, match="no model_card.json"):
        load_checkpoint(tmp_path)
    (tmp_path / CARD).write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_checkpoint(tmp_path)


def test_sampling_defaults_change_the_card_not_the_weights(tmp_path):
    import importlib.util
    import shutil
    from pathlib import Path

    from napari_nacsim.engine import load_model

    folder = save_checkpoint(micro_model(seed=5), tmp_path / "model", {"title": "micro"})
    before = json.loads((folder / CARD).read_text())
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(
        "set_sampling_defaults", root / "training" / "set_sampling_defaults.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([str(folder), "--steps", "7", "--guidance", "2",
                        "--evidence", "test"]) == 0
    card = verify_checkpoint(folder)                       # weights still verify
    assert card["model_hash"] == before["model_hash"] and card["files"] == before["files"]
    assert (card["config"]["default_steps"], card["config"]["default_guidance"]) == (7, 2.0)
    entry = card["sampling_defaults_history"][-1]
    assert entry["to"] == {"default_steps": 7, "default_guidance": 2.0}
    assert entry["evidence"] == "test" and "--steps 7" in entry["command"]
    model = load_model(folder, device="cpu")
    assert (model.default_steps, model.default_guidance) == (7, 2.0)
    # bad values are refused with one line and leave the card alone
    copy = shutil.copytree(folder, tmp_path / "copy")
    assert script.main([str(copy), "--sampler", "euler", "--evidence", "x"]) == 2
    assert script.main([str(copy), "--guidance", "0.5", "--evidence", "x"]) == 2
    assert json.loads((copy / CARD).read_text()) == card


def _copy(folder, dst):
    import shutil

    return shutil.copytree(folder, dst)


def _tensor_dtypes(path) -> set:
    from safetensors.torch import load_file

    return {v.dtype for v in load_file(str(path)).values() if v.is_floating_point()}


def test_the_text_tower_is_stored_in_half_precision_only_when_the_config_says_so(saved,
                                                                                  tmp_path):
    from generative_helpers import MICRO

    _, folder = saved                                    # MICRO: store_half true
    assert _tensor_dtypes(folder / "text_tower.safetensors") == {torch.float16}
    assert _tensor_dtypes(folder / "unet.safetensors") == {torch.float32}
    text = {k: v for k, v in MICRO["text"].items() if k != "store_half"}
    full = save_checkpoint(micro_model(seed=5, text=text), tmp_path / "full")
    assert _tensor_dtypes(full / "text_tower.safetensors") == {torch.float32}


def test_the_card_says_its_outputs_are_synthetic(saved):
    _, folder = saved
    assert json.loads((folder / CARD).read_text())["synthetic_output"] is True


@pytest.mark.parametrize("recorded", ["0" * 64, "f" * 64], ids=["below", "above"])
def test_any_other_recorded_sha256_or_model_hash_is_refused(saved, tmp_path, recorded):
    """Whichever side of the real digest the recorded one sorts on."""
    from napari_nacsim.science.generative.card import model_hash

    _, folder = saved
    copy = _copy(folder, tmp_path / "copy")
    card = json.loads((copy / CARD).read_text())
    digest = card["files"]["unet"]["sha256"]
    card["files"]["unet"]["sha256"] = recorded
    (copy / CARD).write_text(json.dumps(card))
    with pytest.raises(InputError) as err:
        verify_checkpoint(copy)
    assert str(err.value) == (f"{copy / 'unet.safetensors'}: sha256 {digest[:12]}... does not "
                              f"match the model card ({recorded[:12]}...): the file is corrupt "
                              "or was changed")
    card["files"]["unet"]["sha256"] = digest
    real = card["model_hash"]
    assert real == model_hash(card)
    card["model_hash"] = recorded
    (copy / CARD).write_text(json.dumps(card))
    with pytest.raises(InputError) as err:
        verify_checkpoint(copy)
    assert str(err.value) == (f"{copy / CARD}: model_hash {recorded[:12]}... is not the hash "
                              f"of its weight files ({real[:12]}...): the card was edited")


def test_sampling_defaults_refused_at_their_limits_and_accepted_on_them(saved, tmp_path):
    from napari_nacsim.science.generative.checkpoint import set_sampling_defaults

    _, folder = saved
    copy = _copy(folder, tmp_path / "copy")
    before = (copy / CARD).read_bytes()
    refusals = [
        ({"default_steps": 5, "steps": 3, "zz": 1},
         "sampling defaults: unknown setting 'steps' (known: default_steps, default_sampler, "
         "default_guidance)"),
        ({"default_steps": 0}, "--steps: 0 must be at least 1"),
        ({"default_guidance": 0.99}, "--guidance: 0.99 must be at least 1"),
    ]
    for changes, message in refusals:
        with pytest.raises(InputError) as err:
            set_sampling_defaults(copy, changes, {"evidence": "test"})
        assert str(err.value) == message
    assert (copy / CARD).read_bytes() == before          # a refusal leaves the card alone
    card = set_sampling_defaults(copy, {"default_steps": 1, "default_guidance": 1.0},
                                 {"evidence": "test"})
    assert (card["config"]["default_steps"], card["config"]["default_guidance"]) == (1, 1.0)
    assert card["sampling_defaults_history"][-1]["to"] == {"default_steps": 1,
                                                            "default_guidance": 1.0}
