"""A what-if session: one patient's pre-treatment image, a loaded generative model and a
tumour segmenter; each run turns a scenario (and what to compare) into generated follow-ups
with masks, sizes and deltas.

What a run does, for a `WhatIfRequest`:

- **arms**: the scenario of the panel, once per compared value of one variable (by default
  the family's comparison: pCR vs non-pCR for breast, PD-L1 <1 % vs >=50 % for lung; any
  variable at two or more values the user picks). Without a compared variable there is one
  arm. The family may attach model predictions to each arm (e.g. a response probability).
- **every follow-up time point** of the family for every arm (breast: T1 and T2), in one
  batch per sample, so the size-over-time plot and the compare grid come from one run; the
  request's ``target`` is the time point the grid shows.
- **samples**: ``samples`` > 1 repeats the batch with seeds ``seed, seed+1, ...``; each
  follow-up then has a mean image, a per-pixel standard-deviation map, the size as mean ± SD
  (and range) over the samples, and a mask of the pixels segmented as tumour in at least half
  of the samples.

What does not change is reused: the model and segmenter are loaded once (the engine caches
them), the baseline is validated, resampled to the model grid and segmented once per image,
and a finished run is remembered (toggling back to an earlier scenario costs nothing).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import time
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..core.errors import InputError
from ..core.scan import IMAGE, LABELS, Scan
from ..core.schema import FamilySchema, Variable
from ..families import Comparison, ModelFamily
from ..science.generative.card import outcome_inputs
from ..science.generative.outcome import FIXED, OutcomeDraw
from ..science.measure import (SizeChange, TumourSize, format_change_percent, format_diameter,
                               format_size, measure_tumour, recist_category, size_change)
from .jobs import CancelToken, Progress, Steps
from .outcomes import given, sample_outcomes
from .whatif import WhatIfModel, model_grid, simulate

AUTO = "auto"  # compare what the family compares by default
SYNTHETIC = "(synthetic)"


@dataclasses.dataclass(frozen=True)
class WhatIfRequest:
    """What the user asked for: the clinical scenario and how to run it."""

    clinical: Mapping[str, Any]        # conditioning values (the panel's scenario)
    target: str                        # follow-up time point shown side by side
    compare: Optional[str] = AUTO      # variable compared across values; None = one arm
    compare_values: Optional[tuple] = None  # its values (None: both states of a yes/no
    #                                         variable, every category, or the family default)
    seed: int = 0
    steps: Optional[int] = None        # None: the model's default
    sampler: Optional[str] = None
    samples: int = 1
    guidance: Optional[float] = None   # None: the model's default
    # Outcomes the user fixes for every arm (e.g. {"responder": True}: what a response would
    # look like); an outcome input of the model that is not fixed here is drawn per sample
    # from the predicted probability (`science.generative.outcome`)
    outcomes: Optional[Mapping[str, Any]] = None

    def key(self) -> tuple:
        values = None if self.compare_values is None else tuple(map(repr, self.compare_values))
        fixed = tuple(sorted((k, repr(v)) for k, v in (self.outcomes or {}).items()))
        return (tuple(sorted((k, repr(v)) for k, v in self.clinical.items())), self.compare,
                values, self.seed, self.steps, self.sampler, self.samples, self.guidance,
                fixed)


@dataclasses.dataclass
class FollowUp:
    """One generated follow-up of one arm: the image(s), the mask and the size."""

    time: str
    title: str                     # "T2 · pCR · HR+ HER2− (synthetic)"
    scenario: dict[str, Any]
    samples: list[Scan]
    image: Scan                    # the single sample, or the mean of the samples
    spread: Optional[Scan]         # per-pixel standard deviation (samples > 1)
    mask: Scan                     # tumour mask (majority of the samples' masks)
    sizes: list[TumourSize]        # one per sample
    change: SizeChange             # mean size vs the baseline
    baseline_diameter: float = 0.0  # the baseline tumour's longest diameter (mm)
    # per sample: the outcomes it was generated for (`OutcomeDraw`s; empty: the model takes
    # no outcome input)
    outcomes: list[list[OutcomeDraw]] = dataclasses.field(default_factory=list)

    def recist_per_sample(self) -> list[str]:
        """The RECIST 1.1 category of each sample, from its longest diameter against the
        baseline's ("" without a baseline tumour)."""
        if self.baseline_diameter <= 0:
            return ["" for _ in self.sizes]
        return [recist_category(100.0 * (s.diameter - self.baseline_diameter)
                                / self.baseline_diameter) for s in self.sizes]

    def outcome_share(self, variable: str) -> Optional[tuple[int, int]]:
        """(samples generated with ``variable`` true, samples with it given), or None."""
        given = [d.value for draws in self.outcomes for d in draws
                 if d.variable == variable and d.value is not None]
        return (sum(bool(v) for v in given), len(given)) if given else None

    @property
    def unit(self) -> str:
        return self.sizes[0].unit

    @property
    def size_mean(self) -> float:
        return float(np.mean([s.total for s in self.sizes]))

    @property
    def size_sd(self) -> float:
        totals = [s.total for s in self.sizes]
        return float(np.std(totals, ddof=1)) if len(totals) > 1 else 0.0

    @property
    def size_range(self) -> tuple[float, float]:
        totals = [s.total for s in self.sizes]
        return float(min(totals)), float(max(totals))

    @property
    def n_found(self) -> int:
        return sum(s.found for s in self.sizes)

    @property
    def diameter_mean(self) -> float:
        """Longest tumour diameter in mm (RECIST-style), mean over the samples."""
        return float(np.mean([s.diameter for s in self.sizes]))

    @property
    def diameter_sd(self) -> float:
        values = [s.diameter for s in self.sizes]
        return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0

    @property
    def diameter_change(self) -> SizeChange:
        """The longest diameter against the baseline's (mm)."""
        return size_change(self.baseline_diameter, self.diameter_mean, "mm")

    def describe_diameter(self) -> str:
        """"31.2 mm", "29.0 ± 2.1 mm" or "—" (no tumour in any sample)."""
        if self.n_found == 0:
            return "—"
        spread = f" ± {format_diameter(self.diameter_sd, '')}" if len(self.sizes) > 1 else ""
        return f"{format_diameter(self.diameter_mean, '')}{spread} mm"

    def describe_size(self) -> str:
        """"412 mm²", "412 ± 35 mm² (n=4, 371–455)" or "no tumour found"."""
        n = len(self.sizes)
        if self.n_found == 0:
            return f"no tumour found in {'any of the ' + str(n) + ' samples' if n > 1 else 'the image'}"
        if n == 1:
            return format_size(self.size_mean, self.unit)
        sd, lo, hi = (format_size(v, scale=self.size_mean)
                      for v in (self.size_sd, *self.size_range))
        return f"{format_size(self.size_mean)} ± {sd} {self.unit} (n={n}, {lo}–{hi})"

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time, "title": self.title, "scenario": self.scenario,
                "samples": len(self.samples), "seeds": [s.provenance.get("seed")
                                                        for s in self.samples],
                "size_mean": self.size_mean, "size_sd": self.size_sd,
                "size_min": self.size_range[0], "size_max": self.size_range[1],
                "unit": self.unit, "tumour_found_in_samples": self.n_found,
                "size_per_sample": [s.total for s in self.sizes],
                "change_vs_baseline": self.change.to_json(),
                "description": self.describe_size(),
                "diameter_mean_mm": self.diameter_mean, "diameter_sd_mm": self.diameter_sd,
                "diameter_per_sample_mm": [s.diameter for s in self.sizes],
                "diameter_change_vs_baseline": self.diameter_change.to_json(),
                "recist_per_sample": self.recist_per_sample(),
                # how the crops were composed (one mask and setting for all samples)
                **({"composition": self.samples[0].provenance["composition"]}
                   if self.samples and "composition" in self.samples[0].provenance else {}),
                **({"outcome_per_sample": [[d.to_json() for d in draws]
                                           for draws in self.outcomes]}
                   if any(self.outcomes) else {})}


@dataclasses.dataclass
class Arm:
    """One compared scenario (e.g. pCR) and its follow-ups at every time point."""

    label: str                     # "pCR", "PD-L1 TPS 50 %", or the scenario when nothing is compared
    clinical: dict[str, Any]
    followups: dict[str, FollowUp]
    # Model predictions for this scenario (the family's; e.g. a response probability):
    # name -> {"label", "value", "unit", "meaning"}.
    predictions: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def describe_predictions(self) -> str:
        """``"P(response) 0.42 · risk 1.3× cohort"``, or "" without predictions."""
        return " · ".join(f"{p['label']} {_number(p['value'])}{p.get('unit', '')}"
                          for p in self.predictions.values())

    def outcome_summary(self, follow: "FollowUp") -> dict[str, Any]:
        """Per outcome input of ``follow``'s samples: how many were generated with it true,
        out of how many, the predicted probability and where the value came from."""
        out = {}
        for draws in follow.outcomes[:1]:
            for draw in draws:
                share = follow.outcome_share(draw.variable)
                out[draw.variable] = {
                    "source": draw.source, "probability": draw.p,
                    "samples_true": share[0] if share else None,
                    "samples": share[1] if share else 0,
                    "share": share[0] / share[1] if share else None}
        return out

    def describe_outcomes(self, follow: "FollowUp", schema: FamilySchema) -> str:
        """``"3/8 responder"`` (drawn per sample), ``"fixed: responder"`` or ""."""
        parts = []
        for name, info in self.outcome_summary(follow).items():
            states = schema.variable(name).states
            if info["source"] == FIXED:
                parts.append(f"fixed: {states[int(bool(info['samples_true']))]}")
            elif info["samples"]:
                parts.append(f"{info['samples_true']}/{info['samples']} {states[1]}")
        return " · ".join(parts)


def _describe_diameter_change(follow: FollowUp) -> str:
    """"-8.0 mm (-26.4 %)", with ± over samples; "—" without a baseline tumour."""
    change = follow.diameter_change
    if change.baseline <= 0:
        return "—"
    spread = f" ± {format_diameter(follow.diameter_sd, '')}" if len(follow.samples) > 1 else ""
    return (f"{format_diameter(change.absolute, '', sign=True)}{spread} mm "
            f"({format_change_percent(change.percent)})")


def describe_recist(categories: Sequence[str]) -> str:
    """``"PR 3 · SD 5"``: RECIST categories of the samples, counted, in CR PR SD PD order;
    the single category for one sample; "" without a baseline tumour."""
    counts = collections.Counter(c for c in categories if c)
    if not counts:
        return ""
    if len(categories) == 1:
        return categories[0]
    return " · ".join(f"{c} {counts[c]}" for c in ("CR", "PR", "SD", "PD") if counts[c])


def _number(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


@dataclasses.dataclass
class WhatIfResult:
    request: WhatIfRequest
    family: ModelFamily
    baseline: Scan                 # the pre-treatment image on the model grid
    baseline_mask: Scan
    baseline_size: TumourSize
    arms: list[Arm]
    model: dict[str, Any]          # name, hash, path, device
    segmenter: dict[str, Any]
    seconds: dict[str, float]

    @property
    def target(self) -> str:
        return self.request.target

    @property
    def schema(self) -> FamilySchema:
        return self.family.schema

    @property
    def has_predictions(self) -> bool:
        return any(arm.predictions for arm in self.arms)

    @property
    def has_outcomes(self) -> bool:
        """Whether the samples were generated for outcomes (drawn or fixed)."""
        return any(any(f.outcomes) for arm in self.arms for f in arm.followups.values())

    def shown(self) -> list[tuple[Arm, FollowUp]]:
        """The follow-ups the compare grid shows (the target time of every arm)."""
        return [(arm, arm.followups[self.target]) for arm in self.arms]

    def table_rows(self) -> list[dict[str, Any]]:
        """Rows of the size table: the input (baseline), then every arm at every follow-up.
        Sizes and the longest diameter (mm, RECIST-style), each with its change vs the
        input; ± (SD over the samples) on every number derived from several samples."""
        unit = self.baseline_size.unit
        base = self.schema.baseline
        base_diameter = self.baseline_size.diameter
        rows = [{"scenario": f"{base} input (measured)", "outcome": "", "recist": "",
                 "time": base, "size": self.baseline_size.describe(diameter=False),
                 "size_value": self.baseline_size.total, "delta": "—", "delta_percent": "—",
                 "unit": unit, "predictions": "",
                 "diameter": (format_diameter(base_diameter) if self.baseline_size.found
                              else "—"),
                 "diameter_value": base_diameter, "diameter_delta": "—"}]
        for arm in self.arms:
            for tp, follow in arm.followups.items():
                change = follow.change
                several = len(follow.samples) > 1
                if not np.isfinite(change.percent):
                    pct = "n/a"
                else:  # the SD of the percentage: the size SD relative to the baseline
                    sd = 100.0 * follow.size_sd / change.baseline
                    sd_pct = f" ± {format_change_percent(sd, '', sign=False)}" if several \
                        else ""
                    pct = f"{format_change_percent(change.percent, '')}{sd_pct} %"
                rows.append({"scenario": follow.title, "time": tp,
                             "outcome": arm.describe_outcomes(follow, self.schema),
                             "recist": describe_recist(follow.recist_per_sample()),
                             "size": follow.describe_size(), "size_value": follow.size_mean,
                             "delta": change.absolute_text(follow.size_sd if several
                                                           else None),
                             "delta_percent": pct, "unit": unit,
                             "predictions": arm.describe_predictions(),
                             "diameter": follow.describe_diameter(),
                             "diameter_value": follow.diameter_mean,
                             "diameter_delta": _describe_diameter_change(follow)})
        return rows

    def to_report(self) -> dict[str, Any]:
        return {
            "synthetic": True,
            "label": "Generated follow-ups are SYNTHETIC counterfactuals, not measurements.",
            "family": self.family.name,
            "request": {**dataclasses.asdict(self.request),
                        "clinical": dict(self.request.clinical)},
            "model": self.model, "segmenter": self.segmenter,
            "baseline": {"time": self.schema.baseline, "size": self.baseline_size.to_json(),
                         "description": self.baseline_size.describe(),
                         "provenance": self.baseline.provenance},
            "scenarios": [{"label": arm.label, "clinical": arm.clinical,
                           **({"predictions": arm.predictions} if arm.predictions else {}),
                           **({"outcomes": {tp: arm.outcome_summary(f)
                                            for tp, f in arm.followups.items()}}
                              if self.has_outcomes else {}),
                           "followups": {tp: f.to_json() for tp, f in arm.followups.items()}}
                          for arm in self.arms],
            "seconds": self.seconds,
        }


def comparison_of(family: ModelFamily, compare: Optional[str],
                  values: Optional[Sequence[Any]] = None) -> Optional[Comparison]:
    """The arms of a request: ``AUTO`` = the family's default comparison (its values unless
    ``values`` are given), a variable name = that variable at ``values``, None = one arm."""
    if compare is None:
        return None
    if compare == AUTO:
        default = family.default_comparison()
        if default is None or not values:
            return default
        return family.comparison(default.variable.name, values)
    return family.comparison(compare, values)


def scenario_title(schema: FamilySchema, time_point: str, clinical: Mapping[str, Any],
                   first: Optional[str] = None) -> str:
    """``"T2 · pCR · HR+ HER2− (synthetic)"``: the compared variable first, then the other
    variables the schema names in titles (not a lung patient's age and blood counts: every
    arm shares them, and the header and the report list them once)."""
    names = [first] if first else []
    names += [v.name for v in schema.condition_variables if v.name != first and
              v.name in clinical and v.derive is None and v.in_title]
    parts = [schema.variable(n).describe(clinical[n]) for n in names]
    head = parts[:1] if first else []
    rest = " ".join(parts[1:] if first else parts)
    return " · ".join([time_point, *head, *([rest] if rest else [])]) + f" {SYNTHETIC}"


def _image_hash(scan: Scan) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(scan.array).tobytes())
    digest.update(np.asarray(scan.affine, float).tobytes())
    return digest.hexdigest()[:16]


class WhatIfSession:
    """One baseline image + models; `run` answers one request (cancellable)."""

    RESULT_CACHE = 16

    def __init__(self, model: WhatIfModel, segmenter: Any = None):
        self.model = model
        self.segmenter = segmenter
        self.family = model.family
        self.schema = model.schema
        self._baseline: Optional[tuple[str, Scan, Scan, TumourSize]] = None
        self._context: dict[str, Scan] = {}   # the family's extra model inputs, on the grid
        self._results: collections.OrderedDict[tuple, WhatIfResult] = collections.OrderedDict()

    # --- the baseline ------------------------------------------------------------------------
    def baseline(self, image: Scan, steps: Optional[Steps] = None,
                 context: Optional[Mapping[str, Scan]] = None
                 ) -> tuple[str, Scan, Scan, TumourSize]:
        """The model-grid baseline, its mask and size; computed once per image.
        ``context``: the family's extra model inputs of this image (``context_inputs``,
        e.g. lobe and vessel masks), kept on the model grid for the runs."""
        grid = model_grid(self.model, image)  # raises InputError on bad images
        context = {name: (scan if tuple(scan.shape) == tuple(grid.shape)
                          else self.family.resample(scan, grid.shape))
                   for name, scan in (context or {}).items()
                   if name in self.family.context_inputs and scan is not None}
        key = _image_hash(grid) + "".join(f"/{n}:{_image_hash(context[n])}"
                                          for n in sorted(context))
        if self._baseline is None or self._baseline[0] != key:
            same_image = self._baseline is not None and \
                self._baseline[0].split("/")[0] == key.split("/")[0]
            mask = self._baseline[2] if same_image else self._segment(grid)
            self._baseline = (key, grid, mask, measure_tumour(mask))
            self._context = context
            self._results.clear()
        if steps is not None:
            steps.advance(1, "baseline segmented")
        return self._baseline

    def _segment(self, image: Scan) -> Scan:
        if self.segmenter is None:
            raise InputError("segmenter", "no tumour segmentation model is loaded")
        return self.segmenter.segment(self.family.to_segmenter(image))

    # --- a run ------------------------------------------------------------------------------
    def arms_of(self, request: WhatIfRequest) -> tuple[Optional[Variable], list[tuple[str, dict]]]:
        """The compared variable (or None) and the arms: (label, clinical values)."""
        schema = self.schema
        clinical = schema.validate_clinical(dict(request.clinical), subject="scenario",
                                            partial=True)
        # outcomes known afterwards (a cohort patient's actual response, survival) are not
        # scenario inputs; an outcome the generator takes is drawn or fixed in `run`
        clinical = {k: v for k, v in clinical.items() if schema.variable(k).conditions_model}
        missing = [v.name for v in schema.condition_variables
                   if v.derive is None and v.name not in clinical]
        comparison = comparison_of(self.family, request.compare, request.compare_values)
        if comparison is not None and comparison.variable.name in missing:
            missing.remove(comparison.variable.name)
        if missing:
            raise InputError(f"scenario field '{missing[0]}'", "is missing")
        if comparison is None:
            return None, [(schema.describe({k: v for k, v in clinical.items()
                                            if schema.variable(k).derive is None}), clinical)]
        var = comparison.variable
        arms = []
        for label, value in zip(comparison.labels(), comparison.values):
            # derived variables (NLR) follow the compared value, validated like any scenario
            values = {k: v for k, v in clinical.items() if schema.variable(k).derive is None}
            arms.append((label, schema.validate_clinical({**values, var.name: value},
                                                         subject="scenario", partial=True)))
        return var, arms

    def run(self, image: Scan, request: WhatIfRequest, *, progress: Optional[Progress] = None,
            cancel: Optional[CancelToken] = None,
            context: Optional[Mapping[str, Scan]] = None) -> WhatIfResult:
        """``context``: the family's extra model inputs of ``image`` (see `baseline`)."""
        followup_times = self.family.followup_times
        if request.target not in followup_times:
            raise InputError(f"target '{request.target}'",
                             f"is not a follow-up time point ({', '.join(followup_times)})")
        if not 1 <= int(request.samples) <= 64:
            raise InputError("samples", f"{request.samples} must be between 1 and 64")
        var, arms = self.arms_of(request)
        steps_per_sample = int(request.steps or self.model.default_steps)
        n_images = len(arms) * len(followup_times) * request.samples
        steps = Steps(1 + request.samples * steps_per_sample + n_images, progress, cancel)
        steps.check()
        started = time.perf_counter()
        key, grid, base_mask, base_size = self.baseline(image, steps, context)
        cached = self._results.get((key, request.key()))
        if cached is not None:
            self._results.move_to_end((key, request.key()))
            steps.advance(steps.total, "done (remembered)")
            return dataclasses.replace(cached, request=request)
        t_base = time.perf_counter() - started

        # predictions first: a predicted outcome probability decides what each sample shows
        t0 = time.perf_counter()
        predictions = [self.family.predictions(self.model, grid, clinical, self._context,
                                               baseline_mask=base_mask)
                       for _, clinical in arms]
        t_pred = time.perf_counter() - t0
        takes = outcome_inputs(self.model.card["config"])
        fixed = self._fixed_outcomes(request, takes)
        generated: list[list[Scan]] = [[] for _ in range(len(arms) * len(followup_times))]
        drawn: list[list[list[OutcomeDraw]]] = [[] for _ in generated]
        t0 = time.perf_counter()
        for k in range(request.samples):
            seed = request.seed + k
            scenarios, draws = [], []
            for (_, clinical), predicted in zip(arms, predictions):
                # abduction, action, prediction: the sample's u (from its seed) against this
                # arm's probability; the same u in every arm (science.generative.outcome)
                arm_draws = sample_outcomes(self.family, self.model.card, predicted, seed, fixed)
                for tp in followup_times:
                    scenarios.append({"time": tp, **clinical, **given(arm_draws)})
                    draws.append(arm_draws)
            images = simulate(self.model, grid, scenarios, seed=seed,
                              steps=request.steps, sampler=request.sampler,
                              guidance_scale=request.guidance, context=self._context,
                              baseline_mask=base_mask,
                              progress=lambda i, n: steps.advance(1, f"generating sample "
                                                                     f"{k + 1}/{request.samples}"))
            for slot, outs, img, arm_draws in zip(generated, drawn, images, draws):
                if arm_draws:
                    img.provenance["outcome"] = [d.to_json() for d in arm_draws]
                slot.append(img)
                outs.append(arm_draws)
        t_gen = time.perf_counter() - t0

        t0 = time.perf_counter()
        result_arms = []
        i = 0
        for label, clinical in arms:
            followups = {}
            for tp in followup_times:
                samples = generated[i]
                i += 1
                masks = []
                for sample in samples:
                    masks.append(self._segment(sample))
                    steps.advance(1, f"segmenting {tp} {label}")
                followups[tp] = self._followup(tp, label, var, clinical, samples, masks,
                                               base_size)
                followups[tp].outcomes = drawn[i - 1]
            result_arms.append(Arm(label, clinical, followups, predictions[len(result_arms)]))
        t_seg = time.perf_counter() - t0

        result = WhatIfResult(
            request=request, family=self.family, baseline=grid, baseline_mask=base_mask,
            baseline_size=base_size, arms=result_arms,
            model={"name": self.model.card.get("title", self.model.path.name),
                   "model_hash": self.model.model_hash, "path": str(self.model.path),
                   "device": self.model.device},
            segmenter=self.segmenter.describe() if hasattr(self.segmenter, "describe") else {},
            seconds={"baseline": round(t_base, 3), "prediction": round(t_pred, 3),
                     "generation": round(t_gen, 3),
                     "segmentation": round(t_seg, 3),
                     "total": round(time.perf_counter() - started, 3)})
        self._results[(key, request.key())] = result
        while len(self._results) > self.RESULT_CACHE:
            self._results.popitem(last=False)
        return result

    def _fixed_outcomes(self, request: WhatIfRequest, takes: Sequence[str]) -> dict[str, Any]:
        """The request's fixed outcomes, parsed; only outcomes the model takes."""
        fixed = {}
        for name, value in (request.outcomes or {}).items():
            if value is None:
                continue
            if name not in takes:
                raise InputError(f"outcome '{name}'",
                                 "cannot be fixed: the model takes no such input "
                                 f"({', '.join(takes) or 'it takes no outcome'})")
            fixed[name] = self.schema.variable(name).parse(value, "outcome")
        return fixed

    def _followup(self, tp: str, label: str, var: Optional[Variable], clinical: dict,
                  samples: list[Scan], masks: list[Scan], base_size: TumourSize) -> FollowUp:
        title = scenario_title(self.schema, tp, clinical, var.name if var else None)
        sizes = [measure_tumour(m) for m in masks]
        first = samples[0]
        if len(samples) == 1:
            image, spread, mask = first, None, masks[0]
        else:
            stack = np.stack([s.array for s in samples])
            info = {"aggregate_of": len(samples),
                    "seeds": [s.provenance.get("seed") for s in samples]}
            image = _synthetic_like(first, stack.mean(axis=0), "mean of samples", info)
            spread = _synthetic_like(first, stack.std(axis=0, ddof=1),
                                     "per-pixel standard deviation of samples", info)
            votes = np.stack([m.array > 0 for m in masks]).mean(axis=0)
            mask = Scan(array=(votes >= 0.5).astype(np.uint8), affine=masks[0].affine,
                        kind=LABELS, provenance={**masks[0].provenance, **info,
                                                 "mask_rule": "tumour in at least half of "
                                                              "the samples"})
        mean_size = float(np.mean([s.total for s in sizes]))
        change = size_change(base_size, mean_size, base_size.unit)
        return FollowUp(tp, title, {"time": tp, **clinical}, samples, image, spread, mask,
                        sizes, change, base_size.diameter)


def _synthetic_like(template: Scan, array: np.ndarray, what: str, info: dict) -> Scan:
    provenance = {**template.provenance, **info, "aggregate": what}
    provenance.pop("seed", None)
    return Scan(array=array.astype(np.float32), affine=template.affine, kind=IMAGE,
                provenance=provenance)
