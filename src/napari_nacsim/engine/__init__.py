"""The what-if service: a case + scenarios -> generated follow-up images with provenance.

Used identically by the CLI, the napari widgets and the evaluation. A model family is a
plug-in (`napari_nacsim.families`): the engine asks the family of a model (its card names
it) what its input is, how visits become inputs, what to compare, how to measure.

- `whatif`: load a model, simulate follow-ups of one image under scenarios.
- `session`: a patient's what-if runs (arms to compare, every follow-up time, samples,
  masks, sizes, deltas), reusing what does not change.
- `results`: write a run to a folder (NIfTI + sidecars, report.json) and draw it.
- `cohort_review`: run the model over a cohort with real follow-ups, per-case metrics (the
  failure-case inspector, `nacsim review`).
- `patients`: a cohort patient's baseline model input and clinical values.
- `jobs`: cancellation and progress shared by long calls.
"""

from .jobs import Cancelled, CancelToken
from .session import AUTO, Arm, FollowUp, WhatIfRequest, WhatIfResult, WhatIfSession
from .whatif import (WhatIfModel, bundled_model_path, default_family, load_model, model_grid,
                     parse_scenario, sample_case, simulate)

__all__ = ["AUTO", "Arm", "CancelToken", "Cancelled", "FollowUp",
           "WhatIfModel", "WhatIfRequest", "WhatIfResult", "WhatIfSession",
           "bundled_model_path", "default_family", "load_model", "model_grid", "parse_scenario", "sample_case",
           "simulate"]
