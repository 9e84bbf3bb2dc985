"""The prepared-patient cache of the paired cohorts (datasets.paired): a counterfactual
added to a patient whose factual half is already prepared renders only the counterfactual,
and gives exactly what preparing both at once gives."""

from __future__ import annotations

import numpy as np

from napari_nacsim.datasets import paired
from napari_nacsim.families import get_family


def test_a_counterfactual_is_added_to_a_prepared_patient_without_rendering_it_again(
        tmp_path, monkeypatch):
    family = get_family("breast")
    calls = []
    real = type(family).model_inputs

    def counting(self, visits):
        calls.append(1)
        return real(self, visits)

    monkeypatch.setattr(type(family), "model_inputs", counting)
    factual = paired.prepare_phantom_patient(family, 5, 0, 32, False, tmp_path / "a")
    assert len(calls) == 1
    both = paired.prepare_phantom_patient(family, 5, 0, 32, True, tmp_path / "a")
    assert len(calls) == 2 and both != factual       # only the counterfactual was rendered
    fresh = paired.prepare_phantom_patient(family, 5, 0, 32, True, tmp_path / "b")
    assert len(calls) == 4                            # from nothing: both rendered
    with np.load(both) as a, np.load(fresh) as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            assert np.array_equal(a[key], b[key]), key
        assert not np.array_equal(a["images"][2], a["cf_images"][2])  # the other outcome
