"""The ceiling: the phantom's own response probability and hazard, scored like a model.

The phantom draws each patient's response from a known probability p (PD-L1, NLR, CEA,
AEC, AMC and the baseline tumour diameter; docs/phantoms-lung.md) and the survival time
from a Weibull proportional-hazards model with linear predictor

    η = -1.10 · responder + 0.40 ln(NLR/3) + 0.15 ln(CEA/4) + 0.10 (age - 66)/10.

No model can beat p at predicting the response (it is the Bayes posterior: the draw itself
is an independent uniform), so p thresholded at the prevalence gives the Bayes-optimal
balanced accuracy. For survival there are two oracles:

- ``eta_baseline`` (the target of a pre-treatment model): what is knowable before treatment,
  the log of the expected relative hazard over the response draw,
  η₀ + ln(p·e^(-1.10) + 1 - p), with η₀ the non-response part of η;
- ``eta_true`` (knows the response that happened): the phantom's η itself, an upper bound no
  pre-treatment model can reach (the response is a coin flip with probability p).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from ..phantoms.lung_outcomes import SURVIVAL_MODEL, response_probability


def oracle(clinical: Mapping[str, Any], probability: float) -> dict[str, float]:
    """The phantom's p, ``eta_baseline`` and ``eta_true`` of one patient from its factual
    clinical values (with ``responder``) and its response probability p (the phantom's
    `Outcome.response_probability`, stored in every record)."""
    m = SURVIVAL_MODEL
    p = float(probability)
    eta0 = (m["log_nlr"] * math.log(max(clinical["NLR"], 1e-3) / 3.0)
            + m["log_cea"] * math.log(max(clinical["CEA"], 1e-2) / 4.0)
            + m["age_per_decade"] * (clinical["age"] - 66.0) / 10.0)
    responder = bool(clinical["responder"])
    return {"probability": p,
            "eta_baseline": eta0 + math.log(p * math.exp(m["responder"]) + 1.0 - p),
            "eta_true": eta0 + m["responder"] * responder}


def patient_oracle(cohort_seed: int, index: int) -> dict[str, float]:
    from ..phantoms import lung

    patient = lung.make_patient(cohort_seed, index)
    return oracle(patient.clinical, response_probability(patient.clinical,
                                                         patient.tumour_diameter_mm))


def without_tumour_size(probability: float, diameter_mm: float) -> float:
    """The phantom's probability with its tumour-size term removed (the diameter set to the
    30 mm reference): the best a model that sees only the clinical values could do, so the
    gap to ``probability`` is all the image can add to the response."""
    from ..phantoms.lung_outcomes import RESPONSE_MODEL

    p = min(max(float(probability), 1e-12), 1 - 1e-12)
    logit = math.log(p / (1 - p)) - RESPONSE_MODEL["log_diameter"] * math.log(diameter_mm / 30.0)
    return 1.0 / (1.0 + math.exp(-logit))
