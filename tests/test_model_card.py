"""The model card read without torch (`science.generative.card`): the refusals of a folder
that is not a model, the sampling defaults and their fallbacks, the model-input grid and the
outcome inputs, each asserted to its exact answer."""

from __future__ import annotations

import json

import pytest

from napari_nacsim.core.errors import InputError
from napari_nacsim.science.generative.card import (
    CARD, CARD_FORMAT, grid_shape, outcome_inputs, read_card, sampling_defaults)

VALID = {"format": CARD_FORMAT, "files": {}, "config": {"image_size": 16}}


def write_card(folder, card) -> None:
    (folder / CARD).write_text(card if isinstance(card, str) else json.dumps(card))


def test_a_valid_card_is_read_as_written(tmp_path):
    write_card(tmp_path, {**VALID, "title": "micro"})
    assert read_card(tmp_path) == {**VALID, "title": "micro"}


def test_a_folder_without_a_card_is_refused(tmp_path):
    with pytest.raises(InputError) as err:
        read_card(tmp_path)
    assert str(err.value) == f"{tmp_path}: is not a nacsim model folder (no {CARD})"


def test_a_card_that_is_not_json_is_refused_with_the_line(tmp_path):
    write_card(tmp_path, '{\n  "format": oops\n}')
    with pytest.raises(InputError) as err:
        read_card(tmp_path)
    assert str(err.value) == f"{tmp_path / CARD}: is not valid JSON (Expecting value at line 2)"


@pytest.mark.parametrize("change", [
    {"format": "nacsim-model-card/0"},          # sorts before the right one
    {"format": "nacsim-model-card/2"},          # and after it
    {"format": None},
    {"files": None},                            # a key removed (None below = deleted)
    {"config": None},
], ids=["older-format", "newer-format", "no-format", "no-files", "no-config"])
def test_a_card_of_another_format_or_without_files_or_config_is_refused(tmp_path, change):
    card = {**VALID, **change}
    card = {k: v for k, v in card.items() if v is not None}
    write_card(tmp_path, card)
    with pytest.raises(InputError) as err:
        read_card(tmp_path)
    assert str(err.value) == f"{tmp_path / CARD}: is not a {CARD_FORMAT} model card"


def test_sampling_defaults_fall_back_per_setting_and_are_typed():
    assert sampling_defaults({}) == {"default_steps": 20, "default_sampler": "dpmpp",
                                     "default_guidance": 1.0}
    mixed = sampling_defaults({"default_steps": "7", "default_guidance": 2})
    assert mixed == {"default_steps": 7, "default_sampler": "dpmpp", "default_guidance": 2.0}
    assert type(mixed["default_steps"]) is int and type(mixed["default_guidance"]) is float


def test_grid_shape_from_the_config_or_a_square_of_image_size():
    assert grid_shape({"grid_shape": [8, "16", 24], "image_size": 99}) == (8, 16, 24)
    assert grid_shape({"image_size": "64"}) == (64, 64)
    assert grid_shape({"grid_shape": [], "image_size": 32}) == (32, 32)   # empty: not set


def test_outcome_inputs_from_the_adapter_or_the_config():
    assert outcome_inputs({"adapter": {"outcome_input": ["response"]}}) == ("response",)
    assert outcome_inputs({"adapter": None, "outcome_input": ["response", "pfs"]}) == \
        ("response", "pfs")
    assert outcome_inputs({"adapter": {"outcome_input": []}, "outcome_input": ["pfs"]}) == \
        ("pfs",)
    assert outcome_inputs({}) == ()


def test_a_card_that_is_json_but_not_an_object_is_refused_in_one_line(tmp_path):
    from napari_nacsim.core.errors import InputError
    from napari_nacsim.science.generative.card import CARD, read_card

    for text in ("[]", "3", '"card"', "null"):
        (tmp_path / CARD).write_text(text)
        with pytest.raises(InputError, match="is not a .* model card"):
            read_card(tmp_path)
