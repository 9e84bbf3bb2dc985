"""The scenario panel: one input per clinical variable, generated from the family schema.

Nothing here knows about pCR, PD-L1 or any other variable by name: the widgets come from
`FamilySchema` (type, unit, plausible and reference ranges, derived values), so adding a
variable to the schema adds its control. Binary variables are check boxes labelled with
their positive state, categories are drop-downs, percentages are sliders, other numbers are
spin boxes with their unit and reference range, derived values (NLR) are read-only.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSlider, FloatSpinBox, Label

from ..core.schema import BINARY, CATEGORICAL, FamilySchema, Variable

TARGET = "target"  # the widget choosing the follow-up time point to generate
FROM_MODEL = "drawn"  # an outcome choice: drawn per sample from the predicted probability


def _default(var: Variable) -> Any:
    if var.kind == BINARY:
        return False
    if var.kind == CATEGORICAL:
        return var.categories[0]
    lo, hi = var.normal or var.plausible or (0.0, 1.0)
    return round((lo + hi) / 2, 2)


def _control(var: Variable):
    tooltip = var.description
    if var.normal:
        tooltip += f" (reference {var.normal[0]:g}-{var.normal[1]:g} {var.unit})".rstrip()
    unit = f" ({var.unit})" if var.unit else ""
    common = {"name": var.name, "tooltip": tooltip.strip() or None}
    if var.kind == BINARY:
        return CheckBox(text=var.states[1], value=False, **common)
    if var.kind == CATEGORICAL:
        return ComboBox(label=var.label, choices=list(var.categories), **common)
    lo, hi = var.plausible or (0.0, 1e6)
    kind = FloatSlider if var.unit == "%" else FloatSpinBox
    widget = kind(label=f"{var.label}{unit}", min=lo, max=hi, step=0.1 if hi <= 100 else 1.0,
                  **common)
    widget.value = _default(var)
    return widget


class ScenarioPanel(Container):
    """The clinical scenario of one what-if run: target time point + condition variables.

    ``panel.scenario`` is the dict the engine takes (``{"target": "T2", "pCR": True, ...}``),
    already validated by the schema; ``panel.changed`` fires on every edit.

    The *compared* variable (`set_compared`) is generated at every value side by side, so
    its control is disabled (a yes/no box shows both states: partly checked); the value it
    had is held, and is the scenario's again when nothing is compared.
    """

    def __init__(self, schema: FamilySchema, values: Mapping[str, Any] | None = None):
        self.schema = schema
        followups = [t for t in schema.timepoints if t.name != schema.baseline]
        self._target = ComboBox(name=TARGET, label="Follow-up",
                                choices=[(f"{t.name} · {t.label}", t.name) for t in followups],
                                value=followups[-1].name)
        self._inputs = {v.name: _control(v) for v in schema.condition_variables
                        if v.derive is None}
        self._derived = {v.name: Label(name=v.name, label=f"{v.label} (derived)",
                                       tooltip=v.description or None)
                         for v in schema.condition_variables if v.derive is not None}
        super().__init__(widgets=[self._target, *self._inputs.values(), *self._derived.values()],
                         labels=True)
        for widget in self._inputs.values():
            widget.changed.connect(self._update_derived)
        self._outcomes: dict[str, ComboBox] = {}   # outcome inputs of the model
        self._compared: Optional[str] = None
        self._held: dict[str, Any] = {}        # compared variable -> its value before
        self._tooltips = {name: w.tooltip for name, w in self._inputs.items()}
        if values:
            self.set_values(values)
        self._update_derived()

    @property
    def clinical(self) -> dict[str, Any]:
        """Validated clinical values (derived ones computed); a compared variable has the
        value it had before it was compared."""
        raw = {name: widget.value for name, widget in self._inputs.items()}
        raw.update(self._held)
        return self.schema.validate_clinical(raw, subject="scenario", partial=True)

    @property
    def compared(self) -> Optional[str]:
        return self._compared

    def set_compared(self, name: Optional[str]) -> None:
        """Mark ``name`` (or nothing) as the variable compared side by side."""
        if name == self._compared:
            return
        if self._compared is not None:
            self._release(self._compared)
        self._compared = name if name in self._inputs else None
        if self._compared is None:
            return
        widget = self._inputs[self._compared]
        self._held[self._compared] = widget.value
        widget.enabled = False
        widget.tooltip = "compared: every value is generated side by side (choose another " \
                         "comparison, or nothing, to set it)"
        if isinstance(widget, CheckBox):  # both states: partly checked, no signal
            from qtpy.QtCore import Qt

            native = widget.native
            native.blockSignals(True)
            native.setTristate(True)
            native.setCheckState(Qt.PartiallyChecked)
            native.blockSignals(False)

    def _release(self, name: str) -> None:
        widget = self._inputs[name]
        value = self._held.pop(name)
        if isinstance(widget, CheckBox):
            native = widget.native
            native.blockSignals(True)
            native.setTristate(False)
            native.setChecked(bool(value))
            native.blockSignals(False)
        else:
            widget.value = value
        widget.enabled = True
        widget.tooltip = self._tooltips.get(name)

    @property
    def scenario(self) -> dict[str, Any]:
        return {TARGET: self._target.value, **self.clinical}

    # --- outcomes the model can be given ------------------------------------------------------
    def set_outcome_inputs(self, names: Sequence[str]) -> None:
        """One choice per outcome the model takes as an input (e.g. the lung response):
        "from the model" (drawn per sample from the predicted probability), or fixed to
        either state, to see what that outcome would look like for this patient. Choices
        of outcomes the model does not take are removed."""
        for name in list(self._outcomes):
            if name not in names:
                self.remove(self._outcomes.pop(name))
        for name in names:
            if name in self._outcomes:
                continue
            var = self.schema.variable(name)
            combo = ComboBox(name=f"outcome_{name}", label=var.label,
                             choices=[("from the model (drawn per sample)", FROM_MODEL),
                                      (f"fixed: {var.states[1]}", True),
                                      (f"fixed: {var.states[0]}", False)],
                             value=FROM_MODEL,
                             tooltip=f"{var.description}: drawn for each sample from the "
                                     "predicted probability, or fixed to see what it would "
                                     "look like")
            self._outcomes[name] = combo
            self.append(combo)

    @property
    def outcomes(self) -> dict[str, Any]:
        """The outcomes the user fixed (name -> value); drawn ones are left out."""
        return {name: combo.value for name, combo in self._outcomes.items()
                if combo.value != FROM_MODEL}

    def set_values(self, values: Mapping[str, Any]) -> None:
        """Pre-fill from a patient's clinical data (unknown or outcome-only keys ignored)."""
        known = {k: v for k, v in values.items() if k in self._inputs}
        clean = self.schema.validate_clinical(known, subject="patient", partial=True)
        for name, value in clean.items():
            if name in self._held:  # compared: the held value is the patient's
                self._held[name] = value
            elif name in self._inputs:  # derived values are recomputed, not set
                self._inputs[name].value = value
        if TARGET in values:
            self._target.value = values[TARGET]

    def _update_derived(self, *_):
        try:
            clinical = self.clinical
        except ValueError as err:  # an InputError: show it where the value would be
            for label in self._derived.values():
                label.value = str(err).split(": ", 2)[-1]
            return
        for name, label in self._derived.items():
            value = clinical.get(name)
            unit = self.schema.variable(name).unit
            label.value = "—" if value is None else f"{value:.2f} {unit}".strip()
