"""The scenario and what is compared, and the `WhatIfRequest` they make.

`Comparison` is given the box the scenario panel goes into, the Compare combo and the
Values field. For a model family it builds the family's `ScenarioPanel` and lists the
variables that can be compared (the family's own comparison first); from the panel, the
compared values and the Advanced values it makes the request. It reads and fills its
controls only; the workspace connects their signals.
"""

from __future__ import annotations

from typing import Any, Optional

from qtpy.QtWidgets import QComboBox, QLineEdit, QVBoxLayout

from ...core.errors import InputError
from ...core.schema import BINARY, CATEGORICAL
from ...engine.session import WhatIfRequest
from ...families import ModelFamily
from ..layers import METADATA_KEY
from ..scenario_panel import TARGET, ScenarioPanel
from .controls import narrow

NOTHING = "nothing (one scenario)"


class Comparison:
    def __init__(self, panel_layout: QVBoxLayout, compare_combo: QComboBox,
                 compare_values: QLineEdit):
        self.panel_layout = panel_layout
        self.compare_combo = compare_combo
        self.compare_values = compare_values
        self.panel: Optional[ScenarioPanel] = None
        self.family: Optional[ModelFamily] = None
        self._defaults: dict[str, tuple] = {}  # per comparable variable: the values compared

    @property
    def schema(self):
        return self.family.schema if self.family is not None else None

    @property
    def compared(self) -> Optional[str]:
        """The name of the compared variable; None: one scenario."""
        return self.compare_combo.currentData()

    def set_family(self, family: ModelFamily) -> ScenarioPanel:
        """A new scenario panel for ``family`` (the caller connects its ``changed``) and the
        family's comparable variables: its own comparison first and selected, then the
        others (their default values), then nothing."""
        self.family = family
        schema = family.schema
        if self.panel is not None:
            self.panel_layout.removeWidget(self.panel.native)
            self.panel.native.deleteLater()
        self.panel = ScenarioPanel(schema)
        self.panel_layout.addWidget(self.panel.native)
        for combo in self.panel.native.findChildren(QComboBox):  # long choices: no wider dock
            narrow(combo)
        self.compare_combo.blockSignals(True)
        self.compare_combo.clear()
        default = family.default_comparison()
        self._defaults = {}
        variables = [v for v in schema.condition_variables if v.derive is None]
        if default is not None:  # the family's comparison first
            variables.sort(key=lambda v: v.name != default.variable.name)
        for var in variables:
            values = default.values if default is not None and \
                var.name == default.variable.name else default_values(var)
            self._defaults[var.name] = values
            self.compare_combo.addItem(" vs ".join(var.describe(v) for v in values)
                                       if var.kind != CATEGORICAL else f"{var.label}: each "
                                       "category", var.name)
        self.compare_combo.addItem(NOTHING, None)
        self.compare_combo.setCurrentIndex(0 if default is not None else len(variables))
        self.compare_combo.blockSignals(False)
        self.show_values()
        return self.panel

    def show_values(self) -> None:
        """The Values field shows the compared values (editable for numbers and categories;
        a yes/no variable is compared in both states)."""
        name = self.compared
        values = self._defaults.get(name, ())
        var = self.schema.variable(name) if name is not None else None
        self.compare_values.blockSignals(True)
        self.compare_values.setText(", ".join(value_text(v) for v in values))
        self.compare_values.setEnabled(var is not None and var.kind != BINARY)
        self.compare_values.blockSignals(False)

    def show_compared(self) -> None:
        """The compared variable's control shows both states; the one it had comes back
        (never a hidden value) when something else, or nothing, is compared."""
        if self.panel is not None:
            self.panel.set_compared(self.compared)

    def prefill(self, layer) -> None:
        """The scenario takes the clinical values a layer's patient record holds (sample
        data, cohort patients, inputs made here); an `InputError` where the record
        disagrees with the schema."""
        if layer is None or self.panel is None:
            return
        patient = (layer.metadata.get(METADATA_KEY) or {}).get("patient") or {}
        values = patient.get("clinical_values")
        if isinstance(values, dict):
            self.panel.set_values(values)

    def scenario_text(self) -> str:
        """``"pCR vs non-pCR · HR+, HER2−"``: what is compared, then the values every cell
        shares (they are not repeated in the cell titles)."""
        if self.panel is None:
            return ""
        try:
            clinical = self.panel.clinical
        except InputError:
            return ""
        compared = self.compared
        schema = self.panel.schema
        shared = {k: v for k, v in clinical.items()
                  if k != compared and schema.variable(k).derive is None}
        parts = [self.compare_combo.currentText()] if compared is not None else []
        if shared:
            parts.append(schema.describe(shared))
        return " · ".join(parts)

    def request(self, sampling: Optional[dict[str, Any]], defaults: dict) -> WhatIfRequest:
        """The request of the panel's scenario and the compared values. ``sampling``: the
        Advanced values (None: Advanced is off); ``defaults``: the model's sampling defaults
        (its card)."""
        if self.panel is None:
            raise InputError("scenario", "no model is selected")
        scenario = self.panel.scenario  # validated by the schema
        target = scenario.pop(TARGET)
        compare = self.compared
        if compare is not None:  # each arm sets it; the held value must not matter
            scenario.pop(compare, None)
        values = None
        if compare is not None and self.schema.variable(compare).kind != BINARY:
            values = tuple(v.strip() for v in self.compare_values.text().split(",") if v.strip())
            # parsed and checked like any scenario value (one-line errors naming the field)
            values = self.family.comparison(compare, values).values

        def unless_default(key):
            """An Advanced value, None where it is the model's default: the same request
            with Advanced on or off (ticking it generates nothing new)."""
            value = sampling[key] if sampling is not None else None
            default = defaults[f"default_{key}"]
            if sampling is None or value == default or \
                    (isinstance(value, float) and abs(value - default) < 1e-9):
                return None
            return value

        return WhatIfRequest(
            clinical=scenario, target=target, compare=compare, compare_values=values,
            seed=sampling["seed"] if sampling is not None else 0,
            steps=unless_default("steps"), sampler=unless_default("sampler"),
            samples=sampling["samples"] if sampling is not None else self.family.default_samples,
            guidance=unless_default("guidance"), outcomes=self.panel.outcomes or None)


def default_values(var) -> tuple:
    """Values compared when a variable is picked: both states, every category, or for a
    number the ends of its reference range (else of its plausible range)."""
    if var.kind == BINARY:
        return (True, False)
    if var.kind == CATEGORICAL:
        return tuple(var.categories)
    lo, hi = var.normal or var.plausible or (0.0, 1.0)
    return (float(lo), float(hi))


def value_text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
