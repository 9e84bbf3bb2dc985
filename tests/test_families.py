"""The model-family registry: lookups, registration rules, comparisons, model grids."""

from __future__ import annotations

import numpy as np
import pytest

from napari_nacsim.core.errors import InputError
from napari_nacsim.core.scan import Scan, affine_from_spacing
from napari_nacsim.core.schema import BREAST, LUNG, family_schema
from napari_nacsim.families import (family_names, get_family, register_family,
                                    unregister_family)
from napari_nacsim.families.breast import BreastFamily


def test_registry_lists_and_finds_the_built_in_families():
    assert family_names()[:2] == ["breast", "lung"]
    assert get_family("lung").schema is LUNG
    assert get_family(BREAST) is get_family("breast")          # by schema too
    assert family_schema("breast") is BREAST                     # core's own schema registry
    with pytest.raises(InputError, match="'kidney' is not a model family"):
        get_family("kidney")


def test_registration_refuses_a_second_family_of_the_same_name():
    with pytest.raises(ValueError, match="already registered"):
        register_family(BreastFamily())
    other = BreastFamily()
    register_family(other, replace=True)
    try:
        assert get_family("breast") is other
    finally:
        register_family(BreastFamily(), replace=True)
    unregister_family("not-there")  # no error


def test_core_reads_the_schemas_the_registry_hands_down():
    # core never looks a family up: registering feeds core's schema registry, unregistering
    # empties it again (manifests and model cards of that family are then refused)
    import dataclasses

    copied = dataclasses.replace(BREAST, name="breast-copy")

    class Copy(BreastFamily):
        name = copied.name
        schema = copied

    with pytest.raises(InputError, match="'breast-copy' is not a model family"):
        family_schema("breast-copy")
    register_family(Copy())
    try:
        assert family_schema("breast-copy") is copied
    finally:
        unregister_family("breast-copy")
    with pytest.raises(InputError, match=r"not a model family \(known: breast, lung\)"):
        family_schema("breast-copy")


def test_comparisons_over_values():
    lung, breast = get_family("lung"), get_family("breast")
    default = lung.default_comparison()
    assert default.variable.name == "PD_L1" and default.values == (0.0, 50.0)
    assert default.labels() == ["PD-L1 TPS 0 %", "PD-L1 TPS 50 %"]
    assert breast.default_comparison().labels() == ["pCR", "non-pCR"]
    assert lung.comparison("race").values == ("White", "Black", "Asian", "Other")
    assert lung.comparison("ANC", ["2", "8"]).values == (2.0, 8.0)
    for variable, values, words in (("PD_L1", None, "give the values"),
                                    ("PD_L1", [5], "at least two values"),
                                    ("PD_L1", [5, 5.0], "values repeat"),
                                    ("PD_L1", [5, 500], "plausible range"),
                                    ("NLR", [2, 8], "not a variable the model is conditioned"),
                                    ("responder", None, "not a variable the model is")):
        with pytest.raises(InputError, match=words):
            lung.comparison(variable, values)


def test_counterfactuals_come_from_the_family():
    clinical = {"pCR": True, "HR": False, "HER2": True}
    assert get_family("breast").counterfactual(clinical) == {**clinical, "pCR": False}
    lung = get_family("lung")
    assert lung.counterfactual({"PD_L1": 0.0})["PD_L1"] == 50.0
    assert lung.counterfactual({"PD_L1": 80.0})["PD_L1"] == 0.0


def test_a_mip_on_another_grid_is_resampled_with_its_spacing_kept():
    breast = get_family("breast")
    rng = np.random.default_rng(0)
    mip = Scan(array=rng.random((90, 120)).astype(np.float32),
               affine=affine_from_spacing((1.5, 1.5)), kind="image")
    on_grid = breast.to_model_grid(mip, (64, 64))
    assert on_grid.shape == (64, 64)
    step = on_grid.provenance["history"][-1]
    assert step["input_shape"] == [90, 120] and step["input_spacing_mm"] == [1.5, 1.5]
    # the same stretch of the patient: 120 x 1.5 mm = 180 mm across 64 pixels
    np.testing.assert_allclose(on_grid.spacing, (180 / 64, 180 / 64))
    assert breast.to_model_grid(on_grid, (64, 64)) is on_grid    # already on the grid
    with pytest.raises(InputError, match=r"outside \[0, 1\].*nacsim mip"):
        breast.to_model_grid(Scan(array=mip.array * 10, affine=mip.affine), (64, 64))
    with pytest.raises(InputError, match="takes a 2D breast subtraction MIP"):
        breast.to_model_grid(Scan(array=np.zeros((4, 8, 8), np.float32) + 0.5,
                                  affine=affine_from_spacing((1, 1, 1))), (64, 64))


def test_3d_display_slice_is_where_the_tumour_is_largest():
    lung = get_family("lung")
    mask = np.zeros((16, 8, 8), np.uint8)
    mask[5, 2:4, 2:4] = 1
    mask[9, 1:6, 1:6] = 1
    scan = Scan(array=mask, affine=affine_from_spacing((4, 3, 3)), kind="labels")
    assert lung.display_slice(scan) == 9
    plane, spacing = lung.figure_plane(scan, 9)
    assert plane.sum() == 25 and spacing == (3.0, 3.0)
    assert get_family("breast").display_slice(None) is None


def test_window_presets_and_body_mask_come_from_the_family():
    from napari_nacsim.science.preprocess.lung import HU_WINDOWS

    breast, lung = get_family("breast"), get_family("lung")
    assert [p.limits for p in breast.window_presets] == [breast.model_input.display_range]
    assert {p.name: (p.level, p.width) for p in lung.window_presets} == HU_WINDOWS
    assert lung.window_presets[0].limits == lung.model_input.display_range  # lung first
    assert lung.window_presets[1].describe() == "mediastinal (L 40, W 400)"
    assert lung.model_input.value_unit == "HU"
    # The breast body: the phantom's breasts and chest, not the air around them.
    mip = breast.sample_case(0)["inputs"]["T0"]["image"]
    body = breast.body_mask(mip)
    assert body.shape == mip.shape and 0.3 < body.mean() < 0.8
    assert not body[:5].any() and body[-5:, 40:90].all()   # air above, chest below
    assert lung.body_mask(mip) is None                        # a CT crop: all body
