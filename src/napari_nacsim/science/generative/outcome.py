"""Drawing the outcome a generated follow-up shows: abduction, action, prediction.

A treatment response is a rare, stochastic event carried by a few hundred voxels; a
diffusion model left to learn its probability implicitly under-samples it (docs/
lung-model.md). So the two jobs are split: a calibrated model says how likely the outcome
is under a scenario (p), and a generator conditioned on the outcome shows what this
patient's tumour looks like under it. Each sample couples them the way a structural causal
model does (Pearl's three steps):

- **abduction**: the sample's exogenous noise, one uniform number u per outcome variable,
  from the sample's seed (`outcome_uniform`: a low-discrepancy sequence over seeds, so a
  request's samples cover [0, 1) evenly), the same for every scenario;
- **action**: the scenario sets the clinical values, hence p;
- **prediction**: the sample shows the outcome u < p (`draw_outcome`) and its image is
  generated for it.

So one sample under a higher p can only turn from non-responder into responder
(counterfactuals are consistent across scenarios by construction), and over samples (seeds)
the share showing the outcome converges to p. A user may also fix the outcome (to see what
a response would look like), which skips the draw.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from typing import Any, Optional

import numpy as np

DRAWN, FIXED, NOT_GIVEN = "drawn", "fixed by the user", "not given"


# Consecutive seeds step through [0, 1) by the golden ratio's fraction (a Weyl sequence, the
# additive recurrence of quasi-Monte Carlo): any n consecutive seeds — a request's samples
# are seed, seed + 1, ... — lie evenly spread, so the share of n samples showing the outcome
# is within 2/n of p (a uniform draw per seed left 8 samples up to 0.5 off, and the first
# eight seeds held two u's below 0.05: every patient showed at least 2 of 8 responders)
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def outcome_uniform(seed: int, variable: str) -> float:
    """The sample's u for ``variable``: a function of the seed alone (never of the
    scenario), with its own offset per variable (the image noise comes from torch's
    generator)."""
    stream = zlib.crc32(variable.encode())  # a stable number per variable name
    offset = float(np.random.default_rng([stream, 0xAB]).random())
    return float((offset + int(seed) * _GOLDEN) % 1.0)


def draw_outcome(u: float, p: float) -> bool:
    """The outcome a sample with exogenous ``u`` shows under probability ``p``."""
    if not (0.0 <= p <= 1.0) or math.isnan(p):
        raise ValueError(f"probability {p!r} is not in [0, 1]")
    return bool(u < p)


@dataclasses.dataclass(frozen=True)
class OutcomeDraw:
    """What one sample was generated for: the variable, its value and where it came from
    (``source`` `DRAWN` with u and p, `FIXED`, or `NOT_GIVEN`: the model's implicit mode)."""

    variable: str
    value: Optional[Any]
    source: str
    u: Optional[float] = None
    p: Optional[float] = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def choose_outcome(variable: str, seed: int, probability: Optional[float],
                   fixed: Optional[Any] = None) -> OutcomeDraw:
    """The outcome of one sample: ``fixed`` when given, else drawn from ``probability``
    with the seed's u, else (no probability: no outcome model) not given."""
    if fixed is not None:
        return OutcomeDraw(variable, fixed, FIXED)
    if probability is None:
        return OutcomeDraw(variable, None, NOT_GIVEN)
    u = outcome_uniform(seed, variable)
    return OutcomeDraw(variable, draw_outcome(u, float(probability)), DRAWN, round(u, 6),
                       float(probability))
