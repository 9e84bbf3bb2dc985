"""Applying the bundled heads to one patient: what the lung family shows beside each
scenario and what `nacsim predict` prints.

The heads live next to the lung model they were trained on (``<model>/prediction_heads``,
card ``heads_card.json``); features come from that model (`features.extract`, the card's
variant and timestep). The survival risk is reported relative to the training cohort: the
hazard ratio against the cohort's median patient, exp(risk - median risk).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from ...core.errors import InputError

HEADS_FOLDER = "prediction_heads"


def heads_folder(model_path: str | Path) -> Path:
    return Path(model_path) / HEADS_FOLDER


def has_heads(model_path: str | Path) -> bool:
    return (heads_folder(model_path) / "heads_card.json").exists()


@functools.lru_cache(maxsize=4)
def _load(folder: str, model_hash: str):
    from .heads import load_heads

    return load_heads(folder, model_hash)


def head_input(network, card: Mapping[str, Any], pre_hu: np.ndarray, lobes: np.ndarray,
               vessels: np.ndarray, clinical: Mapping[str, Any],
               baseline_diameter_mm: Optional[float] = None) -> np.ndarray:
    """The heads' input row for one patient, as the heads card lists it (``inputs``; a
    card without the list: the denoiser features alone, as the first heads)."""
    from . import features
    from .clinical import clinical_row

    parts = []
    for name in card.get("inputs", ["denoiser_features"]):
        if name == "denoiser_features":
            parts.append(features.extract(network, pre_hu, lobes, vessels, clinical,
                                          variant=card["feature_variant"],
                                          timestep_fraction=float(card["timestep_fraction"])))
        elif name == "clinical":
            parts.append(np.asarray(clinical_row(clinical), np.float32))
        elif name == "baseline_diameter":
            if baseline_diameter_mm is None:
                raise InputError("baseline tumour mask", "is needed by the response head "
                                                         "(it uses the measured tumour size)")
            parts.append(np.asarray([diameter_feature(baseline_diameter_mm)], np.float32))
        else:
            raise InputError("prediction heads card", f"lists an unknown input {name!r}")
    return np.concatenate(parts)[None]


def diameter_feature(diameter_mm: float) -> float:
    """ln(longest diameter / 30 mm): tumour burden on the log scale response models use;
    a tumour too small to measure counts as 1 mm."""
    return math.log(max(float(diameter_mm), 1.0) / 30.0)


def predict(network, model_path: str | Path, model_hash: str, pre_hu: np.ndarray,
            lobes: np.ndarray, vessels: np.ndarray, clinical: Mapping[str, Any], *,
            baseline_diameter_mm: Optional[float] = None) -> dict[str, dict[str, Any]]:
    """name -> {"label", "value", "unit", "meaning"} (the engine's prediction format);
    the response probability names the outcome it is the probability of (``"outcome"``),
    so that a generator taking that outcome can be given it (`generative.outcome`)."""
    response, survival, card = _load(str(heads_folder(model_path)), model_hash)
    x = head_input(network, card, pre_hu, lobes, vessels, clinical, baseline_diameter_mm)
    p = 1.0 / (1.0 + math.exp(-float(response.predict(x)[0])))
    ratio = math.exp(float(survival.predict(x)[0]) - float(card["reference_log_risk"]))
    n = card.get("training_cohort", {}).get("patients", "?")
    return {
        "response_probability": {
            "label": "P(response)", "value": round(p, 4), "unit": "", "outcome": "responder",
            "meaning": f"predicted probability of RECIST response (CR/PR) at 6 weeks under "
                       f"this scenario (heads trained on {n} synthetic patients)"},
        "survival_risk": {
            "label": "risk", "value": round(ratio, 3), "unit": "× cohort",
            "meaning": "predicted hazard of death relative to the training cohort's median "
                       "patient (2 = twice the cohort's hazard, 0.5 = half)"},
    }
