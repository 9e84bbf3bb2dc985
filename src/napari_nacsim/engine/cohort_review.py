"""Review a model over a cohort with real follow-ups: per case, how far the generated
follow-up is from the real one (the failure-case inspector's engine).

A *case* is one patient at one follow-up time point that has real scans. For each case the
patient's baseline is preprocessed like the model's training data, the family's way (breast:
registered, normalised subtraction MIPs; lung: CT crops around the tumour), the model generates the follow-up under the patient's real
scenario, and every image is measured by the same tumour segmenter, on the model grid:

- **image**: SSIM and PSNR of generated vs real over the model's value range
  (`science.measure.image_agreement`, which ``training/evaluate_nac.py`` uses too);
- **size**: tumour size at baseline, real and generated; ``match`` (100 * min / max, see
  `science.measure.match_percent`), the signed size error in percent of the real size, and
  the Dice overlap of the generated and real masks;
- **counterfactual** (only where ground truth exists, i.e. nacsim phantoms, whose generator
  can render the scenario the patient did not have): the generated counterfactual against
  that rendering, SSIM, PSNR and size match. ``None`` otherwise.

Cases are yielded one by one (the UI fills its table as they come); patients without a
follow-up, or without the values the model is conditioned on, are skipped with a reason.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np

from ..core.atomic import atomic_path
from ..core.cohort import Cohort, Patient, load_cohort, load_timepoint
from ..core.errors import InputError
from ..core.scan import IMAGE, Scan
from ..core.schema import FamilySchema
from ..families import ModelFamily, get_family
from ..science.measure import dice, image_agreement, match_percent, measure_tumour
from .jobs import CancelToken, Progress, Steps
from .outcomes import given, sample_outcomes
from .whatif import WhatIfModel, load_model, model_grid, simulate

DIFFERENCE = "generated minus real follow-up"


@dataclasses.dataclass(frozen=True)
class Metric:
    """One per-case number: its key (attribute and CSV column), how to show it."""

    key: str
    label: str            # table header without unit
    unit: str             # "" / "dB" / "%" / "size" (the cohort's size unit: mm² or mL)
    decimals: int
    description: str
    counterfactual: bool = False


METRICS: tuple[Metric, ...] = (  # table and CSV order: what finds failures first
    Metric("ssim", "SSIM", "", 2, "structural similarity, generated vs real follow-up"),
    Metric("psnr", "PSNR", "dB", 2, "peak signal-to-noise ratio, generated vs real follow-up"),
    Metric("match", "Match", "%", 1, "size match 100·min/max of generated and real "
                                     "(100 = perfect)"),
    Metric("size_error_percent", "Size error", "%", 1,
           "(generated − real) / real size; empty when the real follow-up has no tumour"),
    Metric("dice", "Dice", "", 2, "overlap of the generated and real tumour masks; empty "
                                  "when neither has a tumour"),
    Metric("size_t0", "Size T0", "size", 1, "tumour size at baseline (segmented)"),
    Metric("size_real", "Size real", "size", 1, "tumour size of the real follow-up (segmented)"),
    Metric("size_generated", "Size gen.", "size", 1,
           "tumour size of the generated follow-up (segmented)"),
    Metric("cf_ssim", "CF SSIM", "", 2, "counterfactual: SSIM of the generated counterfactual "
                                        "vs the phantom's ground truth", True),
    Metric("cf_psnr", "CF PSNR", "dB", 2, "counterfactual: PSNR vs the ground truth", True),
    Metric("cf_match", "CF match", "%", 1, "counterfactual: size match 100·min/max of "
                                           "generated and ground truth", True),
    Metric("cf_size_truth", "CF size truth", "size", 1,
           "counterfactual: tumour size of the ground-truth rendering (segmented)", True),
    Metric("cf_size_generated", "CF size gen.", "size", 1,
           "counterfactual: tumour size of the generated counterfactual (segmented)", True),
)


@dataclasses.dataclass
class CaseImages:
    """Everything on the model grid; generated images are synthetic Scans with provenance."""

    baseline: Scan
    baseline_mask: Scan
    real: Scan
    real_mask: Scan
    generated: Scan
    generated_mask: Scan
    difference: Scan                         # generated - real, synthetic
    counterfactual: Optional[Scan] = None    # generated under the scenario not had
    counterfactual_mask: Optional[Scan] = None
    counterfactual_truth: Optional[Scan] = None
    counterfactual_truth_mask: Optional[Scan] = None


@dataclasses.dataclass
class CaseReview:
    patient: str
    baseline_time: str                       # the family's baseline time point (T0)
    time: str                                # the follow-up time point
    clinical: dict[str, Any]                 # the patient's real scenario (model conditions)
    scenario_text: str                       # "non-pCR, HR+, HER2−"
    counterfactual: Optional[dict[str, Any]]  # the flipped scenario, where ground truth exists
    unit: str                                # size unit (mm² on MIPs)
    metrics: dict[str, Optional[float]]      # METRICS keys -> value (None: not defined)
    images: CaseImages
    provenance: dict[str, Any]               # model, seed, steps, sampler, segmenter
    # the family's model predictions under the real scenario (name -> {"label", "value", ...})
    predictions: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.patient} {self.time}"

    @property
    def has_truth(self) -> bool:
        return self.counterfactual is not None

    def row(self) -> dict[str, Any]:
        """A flat record (the CSV row)."""
        row: dict[str, Any] = {"patient": self.patient, "time": self.time,
                               "scenario": self.scenario_text,
                               "counterfactual_scenario": self.provenance.get(
                                   "counterfactual_text", "")}
        for metric in METRICS:
            row[column_name(metric, self.unit)] = self.metrics.get(metric.key)
        for name, prediction in self.predictions.items():
            row[f"predicted_{name}"] = prediction.get("value")
        for key in ("outcome", "counterfactual_outcome"):  # what each image was generated for
            for draw in self.provenance.get(key, ()):
                row[f"{key}_{draw['variable']}"] = draw.get("value")
                for part in ("u", "p"):       # the sample's draw, where it was drawn
                    if draw.get(part) is not None:
                        row[f"{key}_{draw['variable']}_{part}"] = draw[part]
        for key in ("model_hash", "seed", "steps", "sampler", "segmenter"):
            row[key] = self.provenance.get(key)
        return row


@dataclasses.dataclass(frozen=True)
class Skipped:
    patient: str
    reason: str


def column_name(metric: Metric, unit: str) -> str:
    """CSV column: ``size_t0_mm2``, ``psnr_db``, ``match_percent``, ``ssim``."""
    suffix = {"size": {"mm²": "mm2", "mL": "ml"}.get(unit, unit), "dB": "db",
              "%": "percent" if "percent" not in metric.key else ""}.get(metric.unit, "")
    return f"{metric.key}_{suffix}" if suffix else metric.key


def metric_unit(metric: Metric, size_unit: str) -> str:
    return size_unit if metric.unit == "size" else metric.unit


# --- the review ---------------------------------------------------------------------------

class CohortReview:
    """Iterator over the `CaseReview` of every case of a cohort (see module docstring).

    Construction validates (raises `InputError` for a bad manifest or a family without a
    model) and loads the models; iterating does the work. ``skipped`` fills as it goes.
    """

    def __init__(self, cohort: Cohort | str | os.PathLike, *, model: WhatIfModel | None = None,
                 segmenter: Any = None, seed: int = 0, steps: int | None = None,
                 sampler: str | None = None, progress: Optional[Progress] = None,
                 cancel: Optional[CancelToken] = None):
        self.cohort = cohort if isinstance(cohort, Cohort) else load_cohort(cohort)
        self.family: ModelFamily = get_family(self.cohort.family)
        self.source = str(cohort) if not isinstance(cohort, Cohort) else str(self.cohort.root)
        if model is None and self.family.bundled_generator is None:
            raise InputError(self.source, f"the {self.family.name} family has no bundled "
                                          "generative model yet; pass a model folder")
        if cancel is not None:
            cancel.check()
        self.model = model or load_model(family=self.family.name)
        if self.model.family.name != self.family.name:
            raise InputError(self.source, f"is a {self.family.name} cohort but the model is "
                                          f"for {self.model.family.name}")
        self.segmenter = segmenter if segmenter is not None else self.family.load_segmenter()
        self.seed, self.sampler = int(seed), sampler or self.model.default_sampler
        self.steps = int(steps or self.model.default_steps)
        if self.steps < 1:
            raise InputError("steps", f"{self.steps} must be at least 1")
        self.skipped: list[Skipped] = []
        self.plan = [(p, self._followups(p)) for p in self.cohort.patients]
        self.n_cases = sum(len(f) for _, f in self.plan)  # at most (patients may be skipped)
        # per patient: preprocessing, every sampler step, measuring
        self._steps = Steps(sum(2 + self.steps for _, f in self.plan if f), progress, cancel)
        self._iter = self._run()

    @property
    def schema(self) -> FamilySchema:
        return self.cohort.family

    def __iter__(self) -> "CohortReview":
        return self

    def __next__(self) -> CaseReview:
        return next(self._iter)

    def _followups(self, patient: Patient) -> list[str]:
        return [tp for tp in self.schema.timepoint_names
                if tp != self.schema.baseline and tp in patient.scans]

    def _conditions(self, patient: Patient) -> Optional[dict[str, Any]]:
        variables = [v for v in self.schema.condition_variables if v.derive is None]
        missing = [v.name for v in variables if v.name not in patient.clinical]
        if missing:
            self.skipped.append(Skipped(patient.id, f"no {missing[0]} value (the model is "
                                                    "conditioned on it)"))
            return None
        return {v.name: patient.clinical[v.name] for v in variables}

    def _run(self) -> Iterator[CaseReview]:
        for patient, followups in self.plan:
            self._steps.check()
            if not followups:
                self.skipped.append(Skipped(patient.id, "no follow-up scans"))
                continue
            clinical = self._conditions(patient)
            if clinical is None:
                self._steps.advance(2 + self.steps, f"{patient.id} skipped")
                continue
            yield from self._patient(patient, followups, clinical)

    def _patient(self, patient: Patient, followups: list[str],
                 clinical: dict[str, Any]) -> Iterator[CaseReview]:
        schema, family = self.schema, self.family
        steps = self._steps
        steps.advance(0, f"{patient.id}: reading and registering scans")
        visits = {tp: load_timepoint(patient, tp, schema) for tp in [schema.baseline, *followups]}
        steps.check()  # registration takes seconds per follow-up: check before and after
        prepared = family.model_inputs(visits)
        inputs = self._on_grid(prepared)
        baseline = model_grid(self.model, inputs[schema.baseline])
        context = family.model_context(prepared[schema.baseline])
        cf_clinical, truth = None, {}
        if patient.extra.get("phantom"):
            steps.advance(0, f"{patient.id}: rendering the counterfactual ground truth")
            cf_clinical = family.counterfactual(clinical)
            truth = self._truth(patient, followups, cf_clinical)
        steps.advance(1, f"{patient.id}: preprocessed")

        base_mask = self._segment(baseline)
        size_t0 = measure_tumour(base_mask)
        # the outcome each scenario's image is generated for (a model that takes one): drawn
        # from the predicted probability with the seed's u, as in a what-if run
        predictions = family.predictions(self.model, baseline, clinical, context,
                                         baseline_mask=base_mask)
        draws = sample_outcomes(family, self.model.card, predictions, self.seed)
        scenarios = [{"time": tp, **clinical, **given(draws)} for tp in followups]
        cf_draws = []
        if cf_clinical is not None:
            cf_predictions = family.predictions(self.model, baseline, cf_clinical, context,
                                                baseline_mask=base_mask)
            cf_draws = sample_outcomes(family, self.model.card, cf_predictions, self.seed)
            scenarios += [{"time": tp, **cf_clinical, **given(cf_draws)} for tp in followups]
        generated = simulate(self.model, baseline, scenarios, seed=self.seed, steps=self.steps,
                             sampler=self.sampler, context=context,
                             progress=lambda i, n: steps.advance(1, f"{patient.id}: generating"))
        provenance = {
            "model": self.model.card.get("title", self.model.path.name),
            "model_hash": self.model.model_hash, "seed": self.seed, "steps": self.steps,
            "sampler": self.sampler,
            "segmenter": getattr(self.segmenter, "name", type(self.segmenter).__name__),
            "counterfactual_text": schema.describe(cf_clinical) if cf_clinical else "",
            **({"outcome": [d.to_json() for d in draws]} if draws else {}),
            **({"counterfactual_outcome": [d.to_json() for d in cf_draws]} if cf_draws else {}),
        }
        value_range = family.model_input.value_range or family.model_input.display_range
        cases = []
        for k, tp in enumerate(followups):
            steps.check()
            gen, real = generated[k], inputs[tp]
            gen_mask, real_mask = self._segment(gen), self._segment(real)
            metrics = _pair_metrics(gen, real, gen_mask, real_mask, value_range)
            metrics["size_t0"] = size_t0.total
            images = CaseImages(baseline, base_mask, real, real_mask, gen, gen_mask,
                                _difference(gen, real))
            if cf_clinical is not None:
                cf, cf_truth = generated[len(followups) + k], truth[tp]
                cf_mask, truth_mask = self._segment(cf), self._segment(cf_truth)
                cf_metrics = _pair_metrics(cf, cf_truth, cf_mask, truth_mask, value_range)
                metrics.update(cf_ssim=cf_metrics["ssim"], cf_psnr=cf_metrics["psnr"],
                               cf_size_truth=cf_metrics["size_real"],
                               cf_size_generated=cf_metrics["size_generated"],
                               cf_match=cf_metrics["match"])
                images.counterfactual, images.counterfactual_mask = cf, cf_mask
                images.counterfactual_truth, images.counterfactual_truth_mask = cf_truth, truth_mask
            cases.append(CaseReview(
                patient=patient.id, baseline_time=schema.baseline, time=tp,
                clinical=dict(clinical), scenario_text=schema.describe(clinical),
                counterfactual=cf_clinical,
                unit=size_t0.unit, metrics={m.key: metrics.get(m.key) for m in METRICS},
                images=images, provenance=provenance, predictions=predictions))
        steps.advance(1, f"{patient.id}: measured")
        yield from cases

    def _segment(self, image: Scan) -> Scan:
        return self.segmenter.segment(self.family.to_segmenter(image))

    def _on_grid(self, inputs: Mapping[str, Mapping[str, Scan]]) -> dict[str, Scan]:
        """Time point -> model input on the model grid (follow-ups registered to the
        baseline and on its intensity scale, as the model was trained)."""
        return {tp: self.family.resample(entry["image"], self.model.grid)
                for tp, entry in inputs.items()}

    def _truth(self, patient: Patient, followups: list[str],
               cf_clinical: dict[str, Any]) -> dict[str, Scan]:
        """The phantom rendered under the counterfactual scenario, preprocessed like the real
        scans: the ground truth of what the model should have generated."""
        from ..datasets.phantom_cohort import phantom_of

        phantom = phantom_of(self.cohort, patient)
        return self._on_grid(self.family.counterfactual_truth(phantom, cf_clinical))


def review_cohort(cohort: Cohort | str | os.PathLike, *, model: WhatIfModel | None = None,
                  segmenter: Any = None, seed: int = 0, steps: int | None = None,
                  sampler: str | None = None, progress: Optional[Progress] = None,
                  cancel: Optional[CancelToken] = None) -> CohortReview:
    """Review ``cohort`` (a `Cohort` or a manifest path); iterate the result for the cases.
    Raises `InputError` at once for a bad manifest or a family without a model;
    `jobs.Cancelled` while iterating once ``cancel`` is tripped."""
    return CohortReview(cohort, model=model, segmenter=segmenter, seed=seed, steps=steps,
                        sampler=sampler, progress=progress, cancel=cancel)


# --- metrics ------------------------------------------------------------------------------

def _pair_metrics(generated: Scan, reference: Scan, gen_mask: Scan, ref_mask: Scan,
                  value_range: tuple[float, float] = (0.0, 1.0)) -> dict[str, Optional[float]]:
    """Image and size agreement; SSIM and PSNR over the model's value range (breast MIPs:
    [0, 1]; CT: the display window in HU)."""
    gen_size, ref_size = measure_tumour(gen_mask).total, measure_tumour(ref_mask).total
    overlap = dice(gen_mask.array, ref_mask.array)
    return {
        # float64 whatever the scans hold (a real CT may be int16)
        **image_agreement(np.asarray(generated.array, np.float64),
                          np.asarray(reference.array, np.float64), value_range),
        "size_real": ref_size, "size_generated": gen_size,
        "match": match_percent(gen_size, ref_size),
        "size_error_percent": 100.0 * (gen_size - ref_size) / ref_size if ref_size > 0 else None,
        "dice": overlap if math.isfinite(overlap) else None,
    }


def _difference(generated: Scan, real: Scan) -> Scan:
    array = (np.asarray(generated.array, np.float32) - np.asarray(real.array, np.float32))
    history = list(generated.provenance.get("history", []))
    history.append({"step": "difference", "what": DIFFERENCE})
    provenance = {**generated.provenance, "history": history, "difference": DIFFERENCE,
                  "label": "SYNTHETIC - difference of a generated counterfactual and the real "
                           "follow-up"}
    return Scan(array=array, affine=generated.affine, kind=IMAGE, provenance=provenance)


def summarise(cases: Sequence[CaseReview]) -> dict[str, Any]:
    """Mean of every metric over the cases where it is defined, and the counts."""
    means: dict[str, Optional[float]] = {}
    for metric in METRICS:
        values = [c.metrics.get(metric.key) for c in cases]
        values = [v for v in values if v is not None and math.isfinite(v)]
        means[metric.key] = float(np.mean(values)) if values else None
    return {"n_cases": len(cases), "n_patients": len({c.patient for c in cases}),
            "n_with_truth": sum(c.has_truth for c in cases),
            "unit": cases[0].unit if cases else "", "means": means}


def describe_summary(summary: Mapping[str, Any]) -> str:
    """One line: "12 cases (6 patients) · mean SSIM 0.712 · PSNR 21.3 dB · match 81.2 % ..."."""
    n, means, unit = summary["n_cases"], summary["means"], summary["unit"]
    if not n:
        return "no cases"
    parts = [f"{n} case{'s' if n != 1 else ''} ({summary['n_patients']} patient"
             f"{'s' if summary['n_patients'] != 1 else ''})"]
    for key in ("ssim", "psnr", "match", "dice", "cf_ssim", "cf_match"):
        metric = next(m for m in METRICS if m.key == key)
        value = means.get(key)
        if value is not None:
            unit_text = metric_unit(metric, unit)
            parts.append(f"{'mean ' if len(parts) == 1 else ''}{metric.label} "
                         f"{value:.{metric.decimals}f}{' ' + unit_text if unit_text else ''}")
    return " · ".join(parts)


def cases_to_csv(cases: Sequence[CaseReview], path: str | os.PathLike) -> Path:
    """Write one row per case (see `CaseReview.row`); empty cells where a metric is not
    defined. Atomic: a reader never sees half a table."""
    return rows_to_csv([c.row() for c in cases], cases[0].unit if cases else "mm²", path)


def rows_to_csv(rows: Iterable[Mapping[str, Any]], unit: str,
                path: str | os.PathLike) -> Path:
    """`cases_to_csv` from the cases' rows (`CaseReview.row`, e.g. read back from the
    per-case records of a distributed run: `engine.cohort_runner`); ``unit``: the cohort's
    size unit. ``rows`` is iterated twice (the header's columns, then the rows): a list, or
    a re-iterable that streams them (`cohort_runner.DoneRows`). Atomic."""
    path = Path(path)
    keys = {k for row in rows for k in row}  # one pass for the header's optional columns
    header = ["patient", "time", "scenario", "counterfactual_scenario",
              *(column_name(m, unit) for m in METRICS),
              *sorted(k for k in keys if k.startswith("predicted_")),
              *sorted(k for k in keys if k.startswith(("outcome_", "counterfactual_outcome_"))),
              "model_hash", "seed", "steps", "sampler", "segmenter"]
    return write_rows_csv(rows, header, path)


def write_rows_csv(rows: Iterable[Mapping[str, Any]], header: Sequence[str],
                   path: str | os.PathLike) -> Path:
    """The rows under ``header`` (other keys ignored), empty cells where a value is None or
    NaN, floats rounded to 6 digits. Atomic: a reader never sees half a table."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(header), extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _cell(v) for k, v in row.items()})
    return path


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(round(value, 6))
    return value
