"""One component save/load (science.generative.weights) for the breast and lung models and
the lung training's resume state (issue 20)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from napari_nacsim.core.checksum import file_sha256
from napari_nacsim.core.errors import InputError
from napari_nacsim.science.generative.weights import load_components, save_components


def _parts(seed: int):
    torch.manual_seed(seed)
    return {"encoder": torch.nn.Linear(3, 4), "tower": torch.nn.Linear(4, 2)}


def test_round_trip_with_a_half_precision_component(tmp_path):
    parts = _parts(0)
    files = save_components(parts, tmp_path / "m", half=("tower",))
    assert set(files) == {"encoder", "tower"}
    for name, entry in files.items():
        path = tmp_path / "m" / entry["path"]
        assert entry["sha256"] == file_sha256(path) and entry["bytes"] == path.stat().st_size
    assert load_file(str(tmp_path / "m" / "tower.safetensors"))["weight"].dtype == torch.float16
    assert load_file(str(tmp_path / "m" / "encoder.safetensors"))["weight"].dtype == \
        torch.float32
    again = _parts(1)
    load_components(again, tmp_path / "m", files)
    assert torch.equal(again["encoder"].weight, parts["encoder"].weight)
    assert again["tower"].weight.dtype == torch.float32      # cast back to the module's
    assert torch.equal(again["tower"].weight, parts["tower"].weight.half().float())
    # the same weights give the same bytes (the model hash depends on them)
    assert save_components(parts, tmp_path / "n", half=("tower",)) == {
        k: v for k, v in files.items()}


def test_another_network_is_refused_naming_the_card_or_the_file(tmp_path):
    files = save_components(_parts(0), tmp_path / "m")
    with pytest.raises(InputError, match=r"model_card.json: lists components \['encoder', "
                                         r"'tower'\], the config needs \['encoder'\]"):
        load_components({"encoder": torch.nn.Linear(3, 4)}, tmp_path / "m", files)
    wider = {"encoder": torch.nn.Linear(3, 5), "tower": torch.nn.Linear(4, 2)}
    with pytest.raises(InputError, match="encoder.safetensors: does not fit the config"):
        load_components(wider, tmp_path / "m", files)
