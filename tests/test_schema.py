"""The clinical schema: normalisation, derived values, and clear errors for bad values."""

from __future__ import annotations

import pytest

from napari_nacsim.core.errors import InputError
from napari_nacsim.core.schema import BREAST, LUNG, family_schema

LUNG_OK = {"age": 64, "sex": "Male", "race": "white", "CEA": 3.2, "ANC": 4.5, "ALC": 1.5,
           "AEC": 0.2, "AMC": 0.5, "PD_L1": 60}


def test_breast_binary_spellings():
    out = BREAST.validate_clinical({"pCR": "yes", "HR": "HR+", "HER2": 0})
    assert out == {"pCR": True, "HR": True, "HER2": False}
    assert BREAST.validate_clinical({"pCR": False, "HR": "negative", "HER2": "positive"}) == \
        {"pCR": False, "HR": False, "HER2": True}


def test_lung_normalises_and_derives_nlr():
    out = LUNG.validate_clinical(LUNG_OK)
    assert out["sex"] == "male" and out["race"] == "White"
    assert out["NLR"] == pytest.approx(3.0)


@pytest.mark.parametrize("values, field, problem", [
    ({"HR": True, "HER2": False}, "pCR", "is missing"),
    ({"pCR": "maybe", "HR": True, "HER2": False}, "pCR", "not a yes/no value"),
    ({"pCR": True, "HR": True, "HER2": False, "ER": True}, "ER", "is not a breast variable"),
])
def test_breast_errors_name_the_field(values, field, problem):
    with pytest.raises(InputError, match=problem) as err:
        BREAST.validate_clinical(values, subject="patient P1")
    assert f"'{field}'" in str(err.value) and "patient P1" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("override, field, problem", [
    ({"ANC": 4500}, "ANC", "outside the plausible range"),
    ({"age": -3}, "age", "outside the plausible range"),
    ({"PD_L1": 140}, "PD_L1", "outside the plausible range"),
    ({"CEA": "high"}, "CEA", "not a number"),
    ({"CEA": float("nan")}, "CEA", "not a finite number"),
    ({"sex": "unknown"}, "sex", "not one of female, male"),
    ({"NLR": 9.0}, "NLR", "disagrees with the value derived"),
    ({"ALC": None}, "ALC", "is missing"),
])
def test_lung_errors_name_the_field(override, field, problem):
    values = {**LUNG_OK, **override}
    with pytest.raises(InputError, match=problem) as err:
        LUNG.validate_clinical(values, subject="LU0001")
    assert f"'{field}'" in str(err.value)


def test_partial_scenarios_and_unknown_family():
    assert BREAST.validate_clinical({"pCR": True}, partial=True) == {"pCR": True}
    with pytest.raises(InputError, match="not a model family"):
        family_schema("prostate")


def test_schema_is_the_single_source_for_conditioning():
    assert [v.name for v in BREAST.condition_variables] == ["pCR", "HR", "HER2"]
    lung_conditions = {v.name for v in LUNG.condition_variables}
    assert {"PD_L1", "ANC", "NLR"} <= lung_conditions
    assert "survival_months" not in lung_conditions
    assert BREAST.timepoint_names == ("T0", "T1", "T2") and BREAST.baseline == "T0"


def test_display_names_typed_with_a_plain_hyphen():
    assert BREAST.validate_clinical({"pCR": "non-pCR", "HR": "HR-", "HER2": "HER2+"}) == \
        {"pCR": False, "HR": False, "HER2": True}
