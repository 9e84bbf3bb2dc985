"""One deterministic patient split (science.generative.data.split_ids) for the breast and
lung training (issue 20)."""

from __future__ import annotations

import pytest

from napari_nacsim.core.errors import InputError
from napari_nacsim.science.generative.data import split_ids


def test_indices_split_as_names_do_and_a_zero_share_holds_out_none():
    train, held = split_ids(range(20), 0.1, 0, at_least_one=False)
    assert (train, held) == split_ids(reversed(range(20)), 0.1, 0, at_least_one=False)
    assert len(held) == 2 and sorted(train + held) == list(range(20)) and held == sorted(held)
    assert split_ids(range(20), 0.0, 0, at_least_one=False) == (list(range(20)), [])
    assert len(split_ids(range(4), 0.1, 0)[1]) == 1              # at least one held out
    assert split_ids(range(4), 0.1, 0, at_least_one=False)[1] == []


def test_a_bad_fraction_names_its_field():
    with pytest.raises(InputError, match="^test fraction: 0.0 must be between 0 and 1"):
        split_ids(range(4), 0.0, 0)
    with pytest.raises(InputError, match="^training.validation_share: 1.0 must be"):
        split_ids(range(4), 1.0, 0, at_least_one=False, field="training.validation_share")
