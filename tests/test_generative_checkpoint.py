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
