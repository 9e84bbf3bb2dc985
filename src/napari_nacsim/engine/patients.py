"""A cohort patient's pre-treatment model input and clinical values (to open one patient
of a cohort manifest in the what-if workspace, scenario pre-filled)."""

from __future__ import annotations

import os
from typing import Any

from ..core.cohort import Cohort, load_cohort, load_timepoint
from ..families import get_family


def baseline_input(cohort: Cohort | str | os.PathLike, patient_id: str) -> dict[str, Any]:
    """``{"patient", "family", "clinical", "image", "mask", "context", "extra"}``: the baseline
    model input made
    the family's way (breast: the normalised subtraction MIP of T0; lung: the CT crop around
    the tumour), its tumour mask when the manifest has one (else None), the family's extra
    model inputs (``context``: lung lobe and vessel crops when the manifest lists those
    masks) and the validated clinical values. No registration is needed at the baseline."""
    if not isinstance(cohort, Cohort):
        cohort = load_cohort(cohort)
    family = get_family(cohort.family)
    patient = cohort.patient(patient_id)
    base = family.schema.baseline
    visit = load_timepoint(patient, base, family.schema)
    inputs = family.model_inputs({base: visit})[base]
    return {"patient": patient.id, "family": family.name, "clinical": dict(patient.clinical),
            "image": inputs["image"], "mask": inputs.get("tumour"),
            "context": family.model_context(inputs), "extra": dict(patient.extra)}
