"""The clinical design matrix of the clinical-only baselines and of "features + clinical".

Standard practice for the variables of the lung schema, not the phantom's own model: the
skewed laboratory values on a log scale, PD-L1 as a percentage and as the two clinical
cut-offs (>= 1 %, >= 50 %), sex and race as indicators, age in decades.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from ...core.schema import LUNG

COLUMNS = ("age_decades", "male", "race_black", "race_asian", "race_other", "log_CEA",
           "log_ANC", "log_ALC", "log_NLR", "log_AEC", "log_AMC", "PD_L1_fraction",
           "PD_L1_ge_1", "PD_L1_ge_50")


def clinical_row(clinical: Mapping[str, Any]) -> list[float]:
    values = LUNG.validate_clinical(dict(clinical), subject="clinical values", partial=True)
    missing = [k for k in ("age", "sex", "race", "CEA", "ANC", "ALC", "AEC", "AMC", "PD_L1")
               if values.get(k) is None]
    if missing:
        from ...core.errors import InputError

        raise InputError(f"clinical field '{missing[0]}'", "is missing (the prediction "
                                                           "baselines need every value)")
    nlr = values.get("NLR") or values["ANC"] / max(values["ALC"], 1e-3)
    pdl1 = float(values["PD_L1"])
    return [float(values["age"]) / 10.0, float(values["sex"] == "male"),
            float(values["race"] == "Black"), float(values["race"] == "Asian"),
            float(values["race"] == "Other"),
            math.log(max(values["CEA"], 0.1)), math.log(max(values["ANC"], 0.05)),
            math.log(max(values["ALC"], 0.05)), math.log(max(nlr, 0.05)),
            math.log(values["AEC"] + 0.05), math.log(max(values["AMC"], 0.01)),
            pdl1 / 100.0, float(pdl1 >= 1.0), float(pdl1 >= 50.0)]


def clinical_matrix(clinicals: Sequence[Mapping[str, Any]]) -> np.ndarray:
    return np.array([clinical_row(c) for c in clinicals], np.float32)
