"""A cohort patient's pre-treatment model input and clinical values (to open one patient
of a cohort manifest in the what-if workspace, scenario pre-filled)."""

from __future__ import annotations

import os
from typing import Any

from ..core.cohort import Cohort, load_cohort, load_timepoint
from ..core.errors import InputError


def baseline_input(cohort: Cohort | str | os.PathLike, patient_id: str) -> dict[str, Any]:
    """``{"patient", "clinical", "image", "mask"}``: the baseline model input (breast: the
    normalised subtraction MIP of T0; no registration is needed at the baseline), its tumour
    mask MIP when the manifest has one (else None) and the validated clinical values."""
    from ..science.preprocess.pipeline import breast_mips

    if not isinstance(cohort, Cohort):
        cohort = load_cohort(cohort)
    schema = cohort.family
    if schema.name != "breast":
        raise InputError(f"cohort family '{schema.name}'",
                         "has no generative model yet (only breast)")
    patient = cohort.patient(patient_id)
    base = schema.baseline
    visit = load_timepoint(patient, base, schema)
    mips = breast_mips({base: visit})[base]
    return {"patient": patient.id, "clinical": dict(patient.clinical), "image": mips["mip"],
            "mask": mips.get("tumour"), "extra": dict(patient.extra)}
