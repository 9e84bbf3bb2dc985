"""The scenario panel is generated from the clinical schema alone."""

from __future__ import annotations

import dataclasses

import pytest

from napari_nacsim.core.schema import BREAST, CONTINUOUS, LUNG, Variable
from napari_nacsim.plugin.scenario_panel import TARGET, ScenarioPanel

pytestmark = pytest.mark.viewer


def test_breast_panel_has_target_and_toggles(qtbot):
    panel = ScenarioPanel(BREAST)
    names = [w.name for w in panel]
    assert names == [TARGET, "pCR", "HR", "HER2"]
    assert [type(panel[n]).__name__ for n in ("pCR", "HR", "HER2")] == ["CheckBox"] * 3
    assert panel[TARGET].choices == ("T1", "T2")
    panel.set_values({"pCR": "yes", "HR": True, "HER2": 0, TARGET: "T1"})
    assert panel.scenario == {TARGET: "T1", "pCR": True, "HR": True, "HER2": False}


def test_lung_panel_units_ranges_and_derived_nlr(qtbot):
    panel = ScenarioPanel(LUNG, values={"ANC": 6.0, "ALC": 2.0, "PD_L1": 80, "sex": "male",
                                        "responder": True, "survival_months": 12})
    assert type(panel["PD_L1"]).__name__ == "FloatSlider"
    assert type(panel["ANC"]).__name__ == "FloatSpinBox"
    assert panel["ANC"].label == "ANC (10^9/L)" and "reference 1.5-8" in panel["ANC"].tooltip
    assert (panel["ANC"].min, panel["ANC"].max) == (0, 100)
    assert "responder" not in [w.name for w in panel]  # outcome, not a condition
    assert panel["NLR"].value == "3.00"
    panel["ALC"].value = 1.5
    assert panel["NLR"].value == "4.00"
    assert panel.scenario["NLR"] == pytest.approx(4.0)
    assert panel.scenario["PD_L1"] == 80 and panel.scenario["sex"] == "male"


def test_a_new_schema_variable_needs_no_widget_code(qtbot):
    crp = Variable("CRP", "CRP", CONTINUOUS, "mg/L", plausible=(0, 500), normal=(0, 5))
    extended = dataclasses.replace(LUNG, variables=LUNG.variables + (crp,))
    panel = ScenarioPanel(extended)
    assert panel["CRP"].label == "CRP (mg/L)"
    panel["CRP"].value = 42.0
    assert panel.scenario["CRP"] == 42.0
