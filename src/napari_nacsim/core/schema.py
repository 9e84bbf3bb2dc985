"""The clinical-variable schema of each model family: the single source of truth.

Cohort validation, model conditioning and the generated widgets all read these objects;
adding a clinical variable is a change here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

from .errors import InputError

BINARY = "binary"
CATEGORICAL = "categorical"
CONTINUOUS = "continuous"

_TRUE = {"1", "true", "yes", "y", "positive", "pos", "+"}
_FALSE = {"0", "false", "no", "n", "negative", "neg", "-"}


def _ascii_signs(text: str) -> str:
    """Display names use the typographic minus ("HER2−"); users type a hyphen."""
    return text.replace("\u2212", "-").replace("\u2013", "-")


@dataclasses.dataclass(frozen=True)
class Variable:
    """One clinical variable.

    ``plausible`` bounds reject absurd values (typos, wrong units); ``normal`` is the
    reference range shown to clinicians. ``derive`` computes a derived variable (e.g. NLR)
    from the others; a supplied value must then agree with it.
    """

    name: str
    label: str
    kind: str
    unit: str = ""
    plausible: tuple[float, float] | None = None
    normal: tuple[float, float] | None = None
    categories: tuple[str, ...] = ()
    states: tuple[str, str] = ("negative", "positive")  # display names of False / True
    required: bool = True
    outcome: bool = False  # an outcome (known only afterwards) rather than a baseline fact
    conditions_model: bool = True
    derive: Callable[[Mapping[str, Any]], float] | None = None
    description: str = ""
    group: str = ""  # the model's conditioning group (lung: clinical, blood, immunotherapy)
    # named in every scenario title (table rows, layer names, report) even when it is not
    # the compared variable; False for the patient's many background values (lung: age,
    # blood counts), which every arm shares and the header and report list once
    in_title: bool = True

    def parse(self, value: Any, subject: str) -> Any:
        """Normalise ``value`` to bool / category string / float, or raise `InputError`."""
        field = f"{subject}: clinical field '{self.name}'" if subject else f"'{self.name}'"
        if value is None or (isinstance(value, str) and not value.strip()):
            raise InputError(field, "is missing")
        if self.kind == BINARY:
            if isinstance(value, bool):
                return value
            if isinstance(value, (int, float)) and value in (0, 1):
                return bool(value)
            text = _ascii_signs(str(value).strip().lower())
            if text in _TRUE or text == _ascii_signs(self.states[1].lower()):
                return True
            if text in _FALSE or text == _ascii_signs(self.states[0].lower()):
                return False
            raise InputError(field, f"= {value!r} is not a yes/no value "
                                    f"({self.states[0]}/{self.states[1]}, true/false, 0/1)")
        if self.kind == CATEGORICAL:
            lookup = {c.lower(): c for c in self.categories}
            text = str(value).strip().lower()
            if text not in lookup:
                raise InputError(field, f"= {value!r} is not one of {', '.join(self.categories)}")
            return lookup[text]
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InputError(field, f"= {value!r} is not a number") from None
        if not math.isfinite(number):
            raise InputError(field, f"= {value!r} is not a finite number")
        if self.plausible and not (self.plausible[0] <= number <= self.plausible[1]):
            lo, hi = self.plausible
            raise InputError(field, f"= {number:g} {self.unit} is outside the plausible range "
                                    f"{lo:g}-{hi:g} {self.unit} (wrong unit or typo?)")
        return number

    def describe(self, value: Any) -> str:
        if self.kind == BINARY:  # the state names say it all: "HR+", "non-pCR", "responder"
            return self.states[1] if value else self.states[0]
        if self.kind == CATEGORICAL:
            return f"{self.label} {value}"
        return f"{self.label} {value:g} {self.unit}".strip()


@dataclasses.dataclass(frozen=True)
class TimePoint:
    name: str
    label: str
    weeks: float


@dataclasses.dataclass(frozen=True)
class FamilySchema:
    """What a model family's data look like: time points, image channels, masks, variables."""

    name: str
    version: str
    title: str
    timepoints: tuple[TimePoint, ...]
    channels: tuple[str, ...]  # images acquired per time point
    masks: tuple[str, ...]     # label images per time point (tumour first)
    variables: tuple[Variable, ...]
    # masks every patient's baseline visit must have, and why (lung: the model input is the
    # CT cut around the baseline tumour); a manifest without one fails on loading, naming
    # the manifest, the patient and the field
    baseline_masks: tuple[tuple[str, str], ...] = ()

    @property
    def baseline(self) -> str:
        return self.timepoints[0].name

    @property
    def timepoint_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.timepoints)

    def variable(self, name: str) -> Variable:
        for var in self.variables:
            if var.name == name:
                return var
        raise KeyError(f"{self.name} schema has no variable {name!r}")

    @property
    def condition_variables(self) -> tuple[Variable, ...]:
        return tuple(v for v in self.variables if v.conditions_model)

    def validate_clinical(self, values: Mapping[str, Any], subject: str = "",
                          partial: bool = False) -> dict[str, Any]:
        """Check and normalise a patient's clinical values; returns a new dict.

        Unknown names, missing required values and out-of-range values raise `InputError`
        naming the field. Derived variables are computed (or checked when given).
        ``partial`` allows missing required values (e.g. a scenario that overrides a few).
        """
        prefix = f"{subject}: " if subject else ""
        known = {v.name for v in self.variables}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"{prefix}clinical field '{unknown[0]}'",
                             f"is not a {self.name} variable (known: {', '.join(sorted(known))})")
        out: dict[str, Any] = {}
        for var in self.variables:
            if var.derive is not None:
                continue
            raw = values.get(var.name)
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                if var.required and not partial:
                    var.parse(None, subject)  # raises "is missing"
                continue
            out[var.name] = var.parse(raw, subject)
        for var in self.variables:
            if var.derive is None:
                continue
            try:
                derived = float(var.derive(out))
            except (KeyError, ZeroDivisionError):
                derived = None
            given = values.get(var.name)
            if given is not None:
                parsed = var.parse(given, subject)
                if derived is not None and not math.isclose(parsed, derived, rel_tol=0.05,
                                                            abs_tol=0.05):
                    raise InputError(f"{prefix}clinical field '{var.name}'",
                                     f"= {parsed:g} disagrees with the value derived from the "
                                     f"other fields ({derived:.2f})")
                out[var.name] = parsed
            elif derived is not None:
                out[var.name] = var.parse(derived, subject)
        return out

    def describe(self, values: Mapping[str, Any]) -> str:
        return ", ".join(self.variable(k).describe(v) for k, v in values.items())


# --- the families --------------------------------------------------------------------------

BREAST = FamilySchema(
    name="breast",
    version="1",
    title="Breast cancer under neoadjuvant chemotherapy (DCE-MRI MIP)",
    timepoints=(
        TimePoint("T0", "pre-treatment", 0.0),
        TimePoint("T1", "early treatment (3 weeks)", 3.0),
        TimePoint("T2", "mid treatment (12 weeks)", 12.0),
    ),
    channels=("pre", "post"),  # pre-contrast and first post-contrast DCE phase
    masks=("tumour",),
    variables=(
        Variable("pCR", "pCR", BINARY, states=("non-pCR", "pCR"), outcome=True,
                 description="Pathological complete response at surgery"),
        Variable("HR", "HR", BINARY, states=("HR−", "HR+"),
                 description="Hormone-receptor status (ER and/or PR positive)"),
        Variable("HER2", "HER2", BINARY, states=("HER2−", "HER2+"),
                 description="HER2 receptor status"),
    ),
)


def _nlr(values: Mapping[str, Any]) -> float:
    return values["ANC"] / values["ALC"]


LUNG = FamilySchema(
    name="lung",
    version="1",
    title="Non-small cell lung cancer under immunotherapy (CT)",
    timepoints=(
        TimePoint("pre", "pre-treatment", 0.0),
        TimePoint("post", "after immunotherapy (6 weeks)", 6.0),
    ),
    channels=("ct",),
    masks=("tumour", "lobes", "vessels"),
    baseline_masks=(("tumour", "the lung model's input is the CT cut around the baseline "
                               "tumour"),),
    variables=(
        Variable("age", "Age", CONTINUOUS, "years", plausible=(18, 110), group="clinical",
                 in_title=False),
        Variable("sex", "Sex", CATEGORICAL, categories=("female", "male"), group="clinical",
                 in_title=False),
        Variable("race", "Race", CATEGORICAL,
                 categories=("White", "Black", "Asian", "Other"), group="clinical",
                 in_title=False),
        Variable("CEA", "CEA", CONTINUOUS, "ng/mL", plausible=(0, 10000), normal=(0, 5),
                 description="Carcinoembryonic antigen", group="blood",
                 in_title=False),
        Variable("ANC", "ANC", CONTINUOUS, "10^9/L", plausible=(0, 100), normal=(1.5, 8.0),
                 description="Absolute neutrophil count", group="blood",
                 in_title=False),
        Variable("ALC", "ALC", CONTINUOUS, "10^9/L", plausible=(0.01, 50), normal=(1.0, 4.0),
                 description="Absolute lymphocyte count", group="blood",
                 in_title=False),
        Variable("NLR", "NLR", CONTINUOUS, "", plausible=(0, 1000), normal=(0.8, 3.5),
                 derive=_nlr, description="Neutrophil-to-lymphocyte ratio = ANC / ALC",
                 group="blood", in_title=False),
        Variable("AEC", "AEC", CONTINUOUS, "10^9/L", plausible=(0, 20), normal=(0.0, 0.5),
                 description="Absolute eosinophil count", group="blood",
                 in_title=False),
        Variable("AMC", "AMC", CONTINUOUS, "10^9/L", plausible=(0, 20), normal=(0.2, 1.0),
                 description="Absolute monocyte count", group="blood",
                 in_title=False),
        Variable("PD_L1", "PD-L1 TPS", CONTINUOUS, "%", plausible=(0, 100),
                 description="PD-L1 tumour proportion score", group="immunotherapy"),
        Variable("responder", "Response", BINARY, states=("non-responder", "responder"),
                 required=False, outcome=True, conditions_model=False,
                 description="Complete or partial response (RECIST) at 6 weeks"),
        Variable("survival_months", "Survival", CONTINUOUS, "months", plausible=(0, 600),
                 required=False, outcome=True, conditions_model=False,
                 description="Follow-up time to death or censoring"),
        Variable("death", "Death observed", BINARY, states=("censored", "died"), required=False,
                 outcome=True, conditions_model=False,
                 description="True if survival_months ends in death, False if censored"),
    ),
)

# --- the schema registry -------------------------------------------------------------------
# Families are registered above core (`napari_nacsim.families.register_family`), which feeds
# their schemas down here; core reads schemas by name (manifests, model cards) without ever
# looking a family up. The built-in schemas are known from the start, so a manifest of
# theirs can be read with core alone.

_SCHEMAS: dict[str, FamilySchema] = {BREAST.name: BREAST, LUNG.name: LUNG}


def register_schema(schema: FamilySchema) -> FamilySchema:
    """Make ``schema`` known by its name (replacing an earlier one of that name: the family
    registry decides whether a replacement is allowed)."""
    _SCHEMAS[schema.name] = schema
    return schema


def unregister_schema(name: str) -> None:
    _SCHEMAS.pop(name, None)


def family_schema(name: str | FamilySchema) -> FamilySchema:
    """The clinical schema of a registered model family, by name."""
    key = name.name if isinstance(name, FamilySchema) else str(name)
    try:
        return _SCHEMAS[key]
    except KeyError:
        raise InputError("family", f"{key!r} is not a model family "
                                   f"(known: {', '.join(_SCHEMAS)})") from None
