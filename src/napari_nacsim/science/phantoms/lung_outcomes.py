"""What a synthetic lung patient is like clinically, and what happens to them.

The documented models behind the lung phantom (docs/phantoms-lung.md): baseline clinical
values at realistic ranges, RECIST response at 6 weeks from a logistic model, the tumour's
diameter change, and overall survival from a Weibull proportional-hazards model with
censoring. Pure functions of the clinical values and the patient's latent uniforms, so a
counterfactual scenario re-evaluates them without touching the images.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from ..measure import recist_category  # the phantom's truth uses the standard

# --- clinical values -----------------------------------------------------------------------

RACES = ("White", "Black", "Asian", "Other")
RACE_PROBABILITIES = (0.70, 0.15, 0.08, 0.07)


def draw_clinical(rng: np.random.Generator) -> dict[str, Any]:
    """Baseline clinical values of one patient (NLR is derived by the schema).

    Blood counts are log-normal around typical values of advanced NSCLC before ICI; a shared
    "systemic inflammation" factor raises neutrophils and monocytes and lowers lymphocytes, as
    in real cohorts. Every random number is drawn whatever the branch taken, so the stream stays
    aligned.
    """
    z = rng.standard_normal(8)
    inflammation = z[7]
    pdl1_group, pdl1_within = rng.random(2)
    age = float(np.clip(np.round(66.0 + 9.0 * z[0]), 35, 90))
    sex = "male" if rng.random() < 0.55 else "female"
    race = RACES[int(rng.choice(len(RACES), p=RACE_PROBABILITIES))]
    cea = float(np.clip(np.round(4.0 * np.exp(1.3 * z[1]), 1), 0.2, 5000))
    anc = float(np.clip(np.round(5.0 * np.exp(0.30 * z[2] + 0.20 * inflammation), 2), 0.5, 40))
    alc = float(np.clip(np.round(1.5 * np.exp(0.38 * z[3] - 0.15 * inflammation), 2), 0.1, 8))
    aec = float(np.clip(np.round(0.15 * np.exp(0.75 * z[4]), 2), 0.0, 3))
    amc = float(np.clip(np.round(0.55 * np.exp(0.30 * z[5] + 0.12 * inflammation), 2), 0.05, 5))
    # PD-L1 tumour proportion score: a third each <1 %, 1-49 % (skewed low), >=50 %.
    if pdl1_group < 1 / 3:
        pdl1 = 0.0
    elif pdl1_group < 2 / 3:
        pdl1 = float(np.clip(np.round(np.exp(pdl1_within * np.log(49.0))), 1, 49))
    else:
        pdl1 = float(np.round(50 + 50 * pdl1_within))
    return {"age": age, "sex": sex, "race": race, "CEA": cea, "ANC": anc, "ALC": alc,
            "AEC": aec, "AMC": amc, "PD_L1": pdl1}


# --- response, tumour change and survival models -------------------------------------------

# Log-odds of response (CR/PR at 6 weeks). The intercept is calibrated so that the mean
# probability over the phantom population is 0.257 (19/74); see docs/phantoms-lung.md.
RESPONSE_MODEL = {
    "intercept": -1.83,
    "pdl1_1_49": 0.60,       # TPS 1-49 % vs <1 %
    "pdl1_50_plus": 1.40,    # TPS >= 50 % vs <1 %
    "log_nlr": -0.90,        # per ln(NLR / 3)
    "log_cea": -0.25,        # per ln(CEA / 4 ng/mL)
    "log_aec": 0.30,         # per ln((AEC + 0.05) / 0.20)
    "log_amc": -0.20,        # per ln(AMC / 0.55)
    "log_diameter": -0.50,   # per ln(baseline longest diameter / 30 mm): tumour burden
}

# Weibull proportional hazards for overall survival, times in months.
SURVIVAL_MODEL = {
    "shape": 1.2,
    "baseline_median_months": 10.0,  # at linear predictor 0 (non-responder, NLR 3, CEA 4, 66 y)
    "responder": -1.10,
    "log_nlr": 0.40,
    "log_cea": 0.15,
    "age_per_decade": 0.10,
    "admin_censoring_months": (12.0, 60.0),  # uniform: staggered entry, analysis at 5 years
    "loss_to_follow_up_mean_months": 120.0,  # exponential drop-out
}

CR_FRACTION_OF_RESPONDERS = 0.12  # tumours that vanish at 6 weeks


def response_logit(clinical: Mapping[str, Any], diameter_mm: float) -> float:
    m = RESPONSE_MODEL
    pdl1 = clinical["PD_L1"]
    return (m["intercept"]
            + m["pdl1_1_49"] * (1.0 <= pdl1 < 50.0)
            + m["pdl1_50_plus"] * (pdl1 >= 50.0)
            + m["log_nlr"] * math.log(max(clinical["NLR"], 1e-3) / 3.0)
            + m["log_cea"] * math.log(max(clinical["CEA"], 1e-2) / 4.0)
            + m["log_aec"] * math.log((clinical["AEC"] + 0.05) / 0.20)
            + m["log_amc"] * math.log(max(clinical["AMC"], 1e-2) / 0.55)
            + m["log_diameter"] * math.log(diameter_mm / 30.0))


def response_probability(clinical: Mapping[str, Any], diameter_mm: float) -> float:
    return 1.0 / (1.0 + math.exp(-response_logit(clinical, diameter_mm)))


def diameter_change_percent(responder: bool, u: float) -> float:
    """Change of the longest diameter at 6 weeks from the patient's latent uniform ``u``.

    One ``u`` serves both branches (a high ``u`` is a sensitive tumour), so a counterfactual
    that flips the response keeps the tumour's rank: responders -32 % .. -90 %, or vanish
    (the top 12 %); non-responders +50 % (PD) .. -28 % (SD). The margins around the RECIST
    thresholds (-30 %, +20 %) keep the category unambiguous on voxel masks.
    """
    if responder:
        partial = 1.0 - CR_FRACTION_OF_RESPONDERS
        if u >= partial:
            return -100.0
        return -(32.0 + 58.0 * u / partial)
    return 50.0 - 78.0 * u


def survival_outcome(clinical: Mapping[str, Any], responder: bool,
                     u_event: float, u_admin: float, u_loss: float) -> tuple[float, bool]:
    """(months, death) by inverting the Weibull PH survival function at ``u_event``."""
    m = SURVIVAL_MODEL
    k = m["shape"]
    scale = math.log(2.0) / m["baseline_median_months"] ** k  # lambda: S(t) = exp(-l t^k e^eta)
    eta = (m["responder"] * bool(responder)
           + m["log_nlr"] * math.log(max(clinical["NLR"], 1e-3) / 3.0)
           + m["log_cea"] * math.log(max(clinical["CEA"], 1e-2) / 4.0)
           + m["age_per_decade"] * (clinical["age"] - 66.0) / 10.0)
    event = (-math.log(1.0 - u_event) / (scale * math.exp(eta))) ** (1.0 / k)
    lo, hi = m["admin_censoring_months"]
    censor = min(lo + (hi - lo) * u_admin,
                 -m["loss_to_follow_up_mean_months"] * math.log(1.0 - u_loss))
    months = max(0.1, round(min(event, censor), 2))  # a visit is at least a few days later
    return months, bool(event <= censor)


def kaplan_meier_median(months, death) -> float:
    """Kaplan-Meier median survival (months); inf when the curve never reaches 0.5.

    Hand-written (a few lines) because the textbook definition, the first time S(t) <= 0.5,
    is what the docs report; statsmodels' SurvfuncRight.quantile uses S(t) < 0.5.
    """
    months, death = np.asarray(months, float), np.asarray(death, bool)
    order = np.lexsort((~death, months))  # deaths before censorings at tied times
    at_risk, surv = len(months), 1.0
    for t, d in zip(months[order], death[order]):
        if d:
            surv *= 1.0 - 1.0 / at_risk
            if surv <= 0.5:
                return float(t)
        at_risk -= 1
    return float("inf")
