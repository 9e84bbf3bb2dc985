"""The outcomes a run's samples are generated for: one place for the what-if session and the
cohort review.

A generator may take outcome variables as inputs (the lung model's response: its card's
``adapter.outcome_input``). For each such variable and sample, the value is the user's when
fixed, else drawn from the family's predicted probability for the scenario with the
sample's own u (abduction, action, prediction: `science.generative.outcome`), else not given
(no outcome model: the generator's implicit mode).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from ..families import ModelFamily
from ..science.generative.card import outcome_inputs
from ..science.generative.outcome import OutcomeDraw, choose_outcome


def sample_outcomes(family: ModelFamily, card: Mapping[str, Any],
                    predictions: Mapping[str, Mapping[str, Any]], seed: int,
                    fixed: Optional[Mapping[str, Any]] = None) -> list[OutcomeDraw]:
    """The outcomes one sample (``seed``) of one scenario (``predictions``: the family's for
    that scenario) is generated for; [] when the model takes none."""
    fixed = fixed or {}
    return [choose_outcome(name, seed, family.outcome_probability(name, predictions),
                           fixed.get(name))
            for name in outcome_inputs(card["config"])]


def given(draws: list[OutcomeDraw]) -> dict[str, Any]:
    """The scenario values of ``draws`` (those not given are left out)."""
    return {d.variable: d.value for d in draws if d.value is not None}
