"""What a synthetic breast NAC patient is like clinically, and how the tumour responds.

The documented models behind the breast phantom (docs/phantoms-breast.md): receptor
subtype prevalences and pCR rates, and the tumour size reduction at T1 and T2, calibrated so
that cohort means equal the NAC paper's ground truth. Pure functions of the clinical values
and the patient's latent quantiles, so a counterfactual scenario re-evaluates them without
touching the anatomy.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np
from scipy import special, stats

FOLLOWUPS = ("T1", "T2")

# --- clinical prevalence model -----------------------------------------------------------

# Receptor subtypes: (HR, HER2) -> (share of patients, P(pCR | subtype)). Shares and pCR rates
# follow the I-SPY2 / ACRIN 6698 cohorts (HR+ 58 %, HER2+ 28 %, overall pCR about 34 %).
SUBTYPES: dict[tuple[bool, bool], tuple[float, float]] = {
    (True, False): (0.42, 0.17),    # HR+/HER2-
    (True, True): (0.16, 0.35),     # HR+/HER2+
    (False, True): (0.12, 0.65),    # HR-/HER2+
    (False, False): (0.30, 0.45),   # HR-/HER2- (triple negative)
}


def subtype_name(hr: bool, her2: bool) -> str:
    return f"HR{'+' if hr else '-'}/HER2{'+' if her2 else '-'}"


def subtype_given_pcr(pcr: bool) -> dict[tuple[bool, bool], float]:
    """P(subtype | pCR) by Bayes from the prevalence model above."""
    joint = {s: share * (rate if pcr else 1 - rate) for s, (share, rate) in SUBTYPES.items()}
    total = sum(joint.values())
    return {s: p / total for s, p in joint.items()}


def draw_clinical(rng: np.random.Generator) -> dict[str, bool]:
    keys = list(SUBTYPES)
    hr, her2 = keys[rng.choice(len(keys), p=[SUBTYPES[k][0] for k in keys])]
    pcr = bool(rng.random() < SUBTYPES[(hr, her2)][1])
    return {"pCR": pcr, "HR": bool(hr), "HER2": bool(her2)}


# --- response model ----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ResponseModel:
    """Tumour size reduction (projected area, fraction of T0) per follow-up.

    r = floor + (1 - floor) * B,  B ~ Beta(a, b), drawn at the patient's latent quantile u.
    E[r | t, pCR, subtype] = target[t, pCR] + offset[t, pCR, subtype], the offsets centred
    under P(subtype | pCR), so E[r | t, pCR] = target[t, pCR] exactly. The spread (s.d. of r)
    fixes the Beta concentration. ``floor`` < 0 lets some tumours grow.
    """

    # Published ground truth (NAC simulation paper, nnU-Net on real follow-ups).
    target: Mapping[tuple[str, bool], float] = dataclasses.field(default_factory=lambda: {
        ("T1", True): 0.4793, ("T1", False): 0.4313, ("T2", True): 0.8748, ("T2", False): 0.5928})
    spread: Mapping[tuple[str, bool], float] = dataclasses.field(default_factory=lambda: {
        ("T1", True): 0.10, ("T1", False): 0.10, ("T2", True): 0.08, ("T2", False): 0.11})
    floor: Mapping[tuple[str, bool], float] = dataclasses.field(default_factory=lambda: {
        ("T1", True): -0.2, ("T1", False): -0.2, ("T2", True): 0.0, ("T2", False): -0.2})
    # Raw subtype effect before centring: HER2+ and triple-negative tumours shrink faster,
    # HR+/HER2- slower. Kept small so that the subtype mix of a group barely moves its mean.
    subtype_shift: Mapping[str, Mapping[tuple[bool, bool], float]] = dataclasses.field(
        default_factory=lambda: {
            "T1": {(True, False): -0.015, (True, True): 0.0, (False, True): 0.01,
                   (False, False): 0.01},
            "T2": {(True, False): -0.02, (True, True): 0.0, (False, True): 0.015,
                   (False, False): 0.015}})
    rho: float = 0.7   # correlation of a patient's T1 and T2 latents (Gaussian copula)

    def offset(self, t: str, pcr: bool, subtype: tuple[bool, bool]) -> float:
        weights = subtype_given_pcr(pcr)
        shifts = self.subtype_shift[t]
        return shifts[subtype] - sum(w * shifts[s] for s, w in weights.items())

    def mean(self, t: str, pcr: bool, subtype: tuple[bool, bool]) -> float:
        return self.target[(t, pcr)] + self.offset(t, pcr, subtype)

    def beta_params(self, t: str, pcr: bool, subtype: tuple[bool, bool]):
        """(a, b, floor) of the reduction's Beta distribution on [floor, 1]."""
        lo = self.floor[(t, pcr)]
        width = 1.0 - lo
        group = (self.target[(t, pcr)] - lo) / width
        kappa = group * (1 - group) * width ** 2 / self.spread[(t, pcr)] ** 2 - 1
        mean = (self.mean(t, pcr, subtype) - lo) / width
        return mean * kappa, (1 - mean) * kappa, lo

    def reduction(self, t: str, pcr: bool, subtype: tuple[bool, bool], u: float) -> float:
        a, b, lo = self.beta_params(t, pcr, subtype)
        return float(lo + (1 - lo) * stats.beta.ppf(u, a, b))

    def latents(self, rng: np.random.Generator) -> dict[str, float]:
        """The patient's response quantiles: correlated uniforms, one per follow-up."""
        shared, *own = rng.standard_normal(1 + len(FOLLOWUPS))
        z = [math.sqrt(self.rho) * shared + math.sqrt(1 - self.rho) * e for e in own]
        return {t: float(special.ndtr(v)) for t, v in zip(FOLLOWUPS, z)}


RESPONSE = ResponseModel()
