"""Run a cohort's cases one task each, in this process or on Dask distributed, resumably.

Two kinds of run use it: the cohort review (`ReviewJob`: one case per patient, which yields
that patient's follow-up rows of `engine.cohort_review`) and batch what-if runs (`BatchJob`:
one case per patient and scenario, a results folder each as `engine.results.write_result`).

How a run goes (`run_cases`):

- **Plan**: the job lists its cases lazily, in CSV order, from a manifest read as a stream
  (`core.cohort.CohortManifest`: a patient is parsed when its case is drawn, never the whole
  manifest at once), each with a *request hash*: a digest of everything its outputs depend
  on (the patient's manifest record and the size and modification time of its files, the
  model's hash, the run's options). Only a small payload
  travels with a task (the patient's record and the options); the worker reads the images
  from the manifest's paths and loads the models once per process (`_loaded`; on Dask the
  run's worker plugin brings the job's spec to each worker once and loads them when the
  worker starts).
- **Execute**: ``workers=0`` runs the cases here, one after another; otherwise on Dask
  (`engine.cohort_dask`: an embedded loopback `LocalCluster` sized to the machine, an existing
  scheduler, or SLURM/PBS/SGE/LSF jobs through dask-jobqueue), at most ``window`` tasks in
  flight, so that a 100,000-patient manifest is never all in the scheduler at once (the
  client submits cases in batches and learns each outcome from its task's state: a few ms
  of scheduling per case, not a round trip of its own).
- **Nothing lost**: each case writes its folder ``cases/<case>/`` atomically (a staging
  folder renamed into place) with ``case.json`` (status, request hash, rows) in it. With
  ``resume`` a case whose record has the request's hash is not run again; a case that
  raises is recorded as *failed* with a one-line reason and the run goes on; a worker that
  dies mid-case has its case rerun elsewhere by the scheduler.
- **Same answer everywhere**: every case runs on one torch thread (and ITK's one thread,
  `science.preprocess.registration`), wherever it runs, and the CSV is written at the end
  from the records in plan order: the images and the CSV are the same bytes whatever the
  number of workers and the order in which cases finish.
- **Bounded memory**: what the client holds grows with the window, not with the manifest.
  The cases are drawn from the manifest as the window has room; a finished case leaves only
  its record on disk and a count (done, failed, reused); the CSV is streamed from the
  records on disk in plan order (`CaseRecords`: read again for each pass, never a list).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import heapq
import json
import math
import os
import re
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

from ..core.atomic import atomic_directory, atomic_path, write_json_atomic
from ..core.cohort import Cohort, CohortManifest, Patient
from ..core.errors import InputError
from .jobs import Cancelled, CancelToken

FORMAT = "nacsim-cohort-run"
VERSION = 1
CASES = "cases"          # out/cases/<case id>/ : one folder per case
RECORD = "case.json"     # written last into a case's folder: status, request hash, rows
RUN = "run.json"         # what the run was asked (informational)
FAILED_CSV = "failed.csv"

DONE, SKIPPED, FAILED = "done", "skipped", "failed"


# --- cases and jobs -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Case:
    """One unit of work: ``id`` names its folder under ``cases/``; ``index`` is its place in
    the CSV; ``payload`` is what the worker needs (small: no images, no models); ``run``:
    the run that draws it (`run_cases` sets it), kept in the record (which run wrote it)."""

    id: str
    index: int
    request_hash: str
    payload: Any
    run: str = ""


class JobSpec:
    """What a worker needs to run cases of one job (on Dask: sent once to each worker, with
    the run's worker plugin, not with every task). Subclasses implement `preload` and
    `run`."""

    kind = "job"

    def preload(self) -> None:
        """Load the models into this process (a worker calls it once when it starts)."""

    def run(self, case: Case, folder: Path, *,
            cancel: Optional[CancelToken] = None) -> dict[str, Any]:
        """Run ``case``, writing its outputs into the (staging) ``folder``; return its record
        fields: ``status`` (DONE or SKIPPED), ``rows`` (CSV rows), maybe ``reason``.
        ``cancel`` (in-process runs): checked at every sampler step, raises `Cancelled`."""
        raise NotImplementedError  # each spec (review, batch): what one case is


class Job:
    """The client side of a run: the plan, the spec the workers get and the CSV."""

    kind = "job"
    spec: JobSpec

    # the interface every job (ReviewJob, BatchJob) fills in: no generic plan or table
    def __len__(self) -> int:
        raise NotImplementedError  # each job: how many cases its plan has

    def cases(self) -> Iterator[Case]:
        raise NotImplementedError  # each job: its cases, in the CSV's order

    def describe(self) -> dict[str, Any]:
        return {}

    def write_csv(self, records: Iterable[Mapping[str, Any]], path: Path) -> Path:
        """The table from every case's record in plan order; ``records`` may be iterated more
        than once (each time read again from disk: `CaseRecords`)."""
        raise NotImplementedError  # each job: its own table's columns


# --- running one case (here or on a worker) ------------------------------------------------

def case_folder(out: str | os.PathLike, case_id: str) -> Path:
    return Path(out) / CASES / case_id


def execute_case(spec: JobSpec, case: Case, out: str, *,
                 cancel: Optional[CancelToken] = None) -> dict[str, Any]:
    """Run one case and write its folder atomically; returns ``{"id", "status", "reason"}``.
    An exception inside the case becomes a *failed* record with a one-line reason (the run
    goes on); only the process dying loses the case (the scheduler then reruns it).
    ``cancel`` tripped mid-case raises `Cancelled` and leaves no folder (nor a record: the
    case is run again on resume)."""
    started = time.perf_counter()
    dest = case_folder(out, case.id)
    with one_torch_thread():
        try:
            with atomic_directory(dest) as staging:
                record = dict(spec.run(case, staging, cancel=cancel))
                record = _stamp(record, case, started)
                write_json_atomic(staging / RECORD, record)
        except Cancelled:
            raise  # not a failure of the case: nothing is recorded
        except Exception as err:  # noqa: BLE001 - every failure is recorded, the run goes on
            record = _stamp({"status": FAILED, "reason": one_line(err), "rows": []}, case,
                            started)
            write_failure(out, case, record)
    return {"id": case.id, "status": record["status"], "reason": record.get("reason", "")}


def write_failure(out: str | os.PathLike, case: Case, record: dict[str, Any]) -> None:
    with atomic_directory(case_folder(out, case.id)) as staging:
        write_json_atomic(staging / RECORD, record)


def _stamp(record: dict[str, Any], case: Case, started: float) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "id": case.id, "index": case.index,
            "request_hash": case.request_hash, "run": case.run,
            "status": record.get("status", DONE),
            "reason": record.get("reason", ""), "rows": record.get("rows", []),
            **{k: v for k, v in record.items() if k not in ("status", "reason", "rows")},
            "seconds": round(time.perf_counter() - started, 3),
            "host": f"{socket.gethostname()}:{os.getpid()}"}


def one_line(err: BaseException) -> str:
    """An exception as one line: `InputError` says "file: problem" already; others get
    their type."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if not isinstance(err, InputError):
        text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text[:400]


@contextlib.contextmanager
def one_torch_thread():
    """Run on one torch thread (as Dask workers do: one thread each), so that a case gives
    the same numbers wherever it runs; the thread count is restored afterwards."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def read_record(out: str | os.PathLike, case: Case) -> Optional[dict[str, Any]]:
    """The case's record when it answers this request (same hash), else None."""
    path = case_folder(out, case.id) / RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("request_hash") != case.request_hash:
        return None
    return record


# --- models, once per process ----------------------------------------------------------------

_LOADED: dict[tuple, tuple[Any, Any]] = {}


def _loaded(family: str, model_dir: str, model_hash: str, device: str) -> tuple[Any, Any]:
    """The generative model and the tumour segmenter of this process (loaded once, keyed by
    the model's hash); refuses a model folder whose hash is not the one the run asked for
    (a worker with another install)."""
    key = (family, model_dir, model_hash, device)
    if key not in _LOADED:
        from ..families import get_family
        from .whatif import load_model

        model = load_model(model_dir, device=device)
        if model.model_hash != model_hash:
            raise InputError(model_dir, f"has model hash {model.model_hash[:12]} on "
                                        f"{socket.gethostname()}, the run asked for "
                                        f"{model_hash[:12]} (install the same model on every "
                                        "worker)")
        _LOADED[key] = (model, get_family(family).load_segmenter(device=device))
    return _LOADED[key]


def _resolve_model(family: str, model: str | os.PathLike | None, subject: str
                   ) -> tuple[str, str]:
    """(model folder, model hash) read from the model card, without loading torch."""
    from ..families import get_family
    from ..science.generative.card import model_hash, read_card  # no torch
    from .whatif import bundled_model_path

    fam = get_family(family)
    if model is None and fam.bundled_generator is None:
        raise InputError(subject, f"the {family} family has no bundled generative model yet; "
                                  "pass a model folder")
    folder = Path(model) if model is not None else bundled_model_path(family)
    card = read_card(folder)
    if card.get("family") != family:
        raise InputError(subject, f"is a {family} cohort but the model is for "
                                  f"{card.get('family')}")
    return str(folder.resolve()), str(card.get("model_hash") or model_hash(card))


# --- request hashes -------------------------------------------------------------------------

def patient_record(patient: Patient) -> dict[str, Any]:
    return {"id": patient.id, "clinical": patient.clinical,
            "scans": {tp: {c: str(p) for c, p in v.items()} for tp, v in patient.scans.items()},
            "masks": {tp: {c: str(p) for c, p in v.items()} for tp, v in patient.masks.items()},
            "extra": patient.extra}


def request_hash(kind: str, patient: Patient, options: Mapping[str, Any]) -> str:
    """A digest of what a case's outputs depend on: the patient's manifest record, the size
    and modification time of each of its files (an edited image is redone), the options."""
    files = {}
    for table in (patient.scans, patient.masks):
        for entries in table.values():
            for path in entries.values():
                try:
                    st = os.stat(path)
                    files[str(path)] = [st.st_size, st.st_mtime_ns]
                except OSError:
                    files[str(path)] = None
    payload = {"format": FORMAT, "version": VERSION, "kind": kind,
               "patient": patient_record(patient), "files": files, "options": dict(options)}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def safe_name(text: str) -> str:
    """A folder name for a case id (a short digest is added where characters were
    replaced, so that two ids never share a folder)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "case"
    if name != text:
        name += "-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:6]
    return name


def _check_format(fmt: str) -> None:
    from .dicom_export import FORMATS

    if fmt not in FORMATS:
        raise InputError("--format", f"{fmt!r} is not one of {', '.join(FORMATS)}")


def wants_nifti(fmt: str) -> bool:
    from .dicom_export import wants

    return wants(fmt, "nifti")


def _format_option(fmt: str) -> dict[str, str]:
    """The format's part of a case's request hash: none for the default (NIfTI), so that
    the records of runs made before there was a choice still answer a resumed run."""
    return {} if fmt == "nifti" else {"format": fmt}


def _described(segmenter: Any) -> dict[str, Any]:
    """What the SEG and SR name as the algorithm: the segmenter's own description."""
    describe = getattr(segmenter, "describe", None)
    return dict(describe()) if callable(describe) else \
        {"name": getattr(segmenter, "name", type(segmenter).__name__)}


# --- the review -----------------------------------------------------------------------------

# images written per follow-up (CaseImages attribute -> file name part); masks as labels
REVIEW_IMAGES = (("generated", "generated"), ("generated_mask", "generated_tumour"),
                 ("difference", "difference"), ("counterfactual", "counterfactual"),
                 ("counterfactual_mask", "counterfactual_tumour"))


@dataclasses.dataclass(frozen=True)
class ModelSpec(JobSpec):
    """What every case of a model run (review, batch) needs: the cohort's family, root and
    metadata (plain data: the schema is looked up by name on the worker), the model (folder
    and the hash every worker must find there) and the sampling and output options."""

    family: str
    root: str
    meta: dict
    model_dir: str
    model_hash: str
    seed: int = 0
    steps: Optional[int] = None
    sampler: Optional[str] = None
    device: str = "auto"
    format: str = "nifti"    # the images: "nifti", "dicom" (dicom/; batch: no NIfTI) or "both"

    def preload(self) -> None:
        self.models()

    def models(self) -> tuple[Any, Any]:
        """(generative model, tumour segmenter) of this process, loaded once."""
        return _loaded(self.family, self.model_dir, self.model_hash, self.device)

    def one_patient(self, patient: Patient) -> Cohort:
        """The cohort of one patient, on the worker."""
        from ..families import get_family

        return Cohort(family=get_family(self.family).schema, patients=[patient],
                      root=Path(self.root), meta=dict(self.meta))


@dataclasses.dataclass(frozen=True)
class ReviewSpec(ModelSpec):
    images: bool = True
    inputs: bool = False     # also the inputs on the model grid (the inspector shows them)

    kind = "review"

    def run(self, case: Case, folder: Path, *,
            cancel: Optional[CancelToken] = None) -> dict[str, Any]:
        from ..core.scan_io import write_scan
        from .cohort_review import review_cohort
        from .dicom_export import wants

        model, segmenter = self.models()
        cohort = self.one_patient(case.payload)
        review = review_cohort(cohort, model=model, segmenter=segmenter, seed=self.seed,
                               steps=self.steps, sampler=self.sampler, cancel=cancel)
        cases = list(review)
        if not cases:
            reason = review.skipped[0].reason if review.skipped else "no case"
            return {"status": SKIPPED, "reason": reason, "rows": []}
        files = []
        if self.images and wants(self.format, "nifti"):
            written = set()
            for c in cases:
                for attr, part in REVIEW_IMAGES + (REVIEW_INPUTS if self.inputs else ()):
                    # the baseline is every follow-up's: written once, under its own time
                    tp = c.baseline_time if attr.startswith("baseline") else c.time
                    name = f"{tp}_{part}.nii.gz"
                    scan = getattr(c.images, attr)
                    if scan is None or name in written:
                        continue
                    written.add(name)
                    write_scan(scan, folder / name, extra={"patient": c.patient,
                                                           "timepoint": tp, "role": attr})
                    files.append(name)
        if self.images and wants(self.format, "dicom"):
            from ..families import get_family
            from .dicom_export import DICOM_FOLDER, write_review_dicom

            write_review_dicom(cases, get_family(self.family), folder / DICOM_FOLDER,
                               segmenter=_described(segmenter))
            files.append(DICOM_FOLDER)
        return {"status": DONE, "rows": [c.row() for c in cases], "unit": cases[0].unit,
                "files": files, "cases": [_case_fields(c) for c in cases]}


# with ``inputs``: what the inspector shows beside them (not generated: the patient's scans
# on the model grid, the phantom's ground truth), so that a case is shown from its folder
REVIEW_INPUTS = (("baseline", "input"), ("baseline_mask", "input_tumour"),
                 ("real", "real"), ("real_mask", "real_tumour"),
                 ("counterfactual_truth", "truth"), ("counterfactual_truth_mask", "truth_tumour"))
# `CaseReview` fields kept in the record (with the images: the case as the inspector had it)
CASE_FIELDS = ("patient", "baseline_time", "time", "clinical", "scenario_text",
               "counterfactual", "unit", "metrics", "provenance", "predictions")


def _case_fields(case) -> dict[str, Any]:
    return {name: getattr(case, name) for name in CASE_FIELDS}


def read_review_case(folder: str | os.PathLike) -> tuple[dict[str, Any], list]:
    """A finished review case's record and its follow-ups (`CaseReview`), read back from
    its folder (the inspector: a case finished in this run, on a worker or before a resume).
    Needs a folder written with ``inputs`` (`ReviewJob(..., inputs=True)`); a failed or
    skipped case has no follow-ups."""
    from ..core.scan_io import read_scan
    from .cohort_review import CaseImages, CaseReview

    folder = Path(folder)
    try:
        record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(folder / RECORD, f"cannot be read ({one_line(err)})") from None
    if record.get("status") != DONE:
        return record, []
    reviews = []
    for fields in record.get("cases", []):
        def scan(attr, part):
            tp = fields["baseline_time"] if attr.startswith("baseline") else fields["time"]
            path = folder / f"{tp}_{part}.nii.gz"
            return read_scan(path) if path.is_file() else None

        images = {attr: scan(attr, part) for attr, part in REVIEW_IMAGES + REVIEW_INPUTS}
        missing = [attr for attr in ("baseline", "real", "generated", "difference")
                   if images[attr] is None]
        if missing:
            raise InputError(folder, f"has no {missing[0]} image of {fields['time']} (a run "
                                     "without the inspector's inputs: run it again here)")
        reviews.append(CaseReview(images=CaseImages(**images),
                                  **{name: fields[name] for name in CASE_FIELDS}))
    return record, reviews


class ReviewJob(Job):
    """The cohort review of `engine.cohort_review`, one task per patient (a patient's
    follow-ups are generated in one batch, as in the in-process review, so each of its
    follow-up cases is the same there and here)."""

    kind = "review"

    def __init__(self, manifest: Cohort | str | os.PathLike, *, model=None, seed: int = 0,
                 steps: Optional[int] = None, sampler: Optional[str] = None,
                 device: str = "auto", images: bool = True, format: str = "nifti",
                 inputs: bool = False):
        self.cohort = manifest if isinstance(manifest, Cohort) else CohortManifest(manifest)
        self.source = str(manifest) if not isinstance(manifest, Cohort) else str(
            self.cohort.root)
        if steps is not None and int(steps) < 1:
            raise InputError("steps", f"{steps} must be at least 1")
        _check_format(format)
        if not images and format != "nifti":
            raise InputError("--format", f"{format}: --no-images writes no images to give a "
                                         "format")
        if inputs and not (images and wants_nifti(format)):
            raise InputError("inputs", "are written as NIfTI beside the generated images: "
                                       "they need images in NIfTI")
        family = self.cohort.family.name
        model_dir, model_hash = _resolve_model(family, model, self.source)
        self.spec = ReviewSpec(family=family, root=str(self.cohort.root),
                               meta=dict(self.cohort.meta), model_dir=model_dir,
                               model_hash=model_hash, seed=int(seed),
                               steps=None if steps is None else int(steps), sampler=sampler,
                               device=device, images=images, format=format, inputs=inputs)
        # ``inputs`` only when asked: the records of runs without it still answer the CLI
        self._options = {"model_hash": model_hash, "seed": int(seed), "steps": steps,
                         "sampler": sampler, "device": device, "images": images,
                         **_format_option(format), **({"inputs": True} if inputs else {})}

    def __len__(self) -> int:
        return len(self.cohort.patients)

    def runnable(self) -> int:
        """Patients with a follow-up scan (the others are recorded as skipped at once)."""
        if isinstance(self.cohort, CohortManifest):  # counted when it was read
            return self.cohort.with_followup
        schema = self.cohort.family
        return sum(any(tp != schema.baseline for tp in p.scans) for p in self.cohort.patients)

    def cases(self) -> Iterator[Case]:
        for index, patient in enumerate(self.cohort.patients):
            yield Case(safe_name(patient.id), index,
                       request_hash(self.kind, patient, self._options), patient)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "manifest": self.source, "family": self.spec.family,
                "model": self.spec.model_dir, **self._options}

    def write_csv(self, records: Iterable[Mapping[str, Any]], path: Path) -> Path:
        from .cohort_review import rows_to_csv

        return rows_to_csv(DoneRows(records), records_unit(records), path)


# --- batch what-if runs ---------------------------------------------------------------------

COMPARE = "compare"  # the scenario name of the family's default comparison


@dataclasses.dataclass(frozen=True)
class BatchSpec(ModelSpec):
    samples: int = 1
    figure: bool = True

    kind = "batch"

    def run(self, case: Case, folder: Path, *,
            cancel: Optional[CancelToken] = None) -> dict[str, Any]:
        from .dicom_export import check_exportable, wants, write_result_as
        from .patients import baseline_input
        from .session import AUTO, WhatIfRequest, WhatIfSession

        patient, scenario, overrides = case.payload
        model, segmenter = self.models()
        cohort = self.one_patient(patient)
        family = model.family
        entry = baseline_input(cohort, patient.id)
        if wants(self.format, "dicom"):
            check_exportable(entry["image"])   # a DICOM input lacking what DICOM output needs
        clinical = {**entry["clinical"], **(overrides or {})}
        request = WhatIfRequest(clinical=clinical, target=family.followup_times[-1],
                                compare=AUTO if overrides is None else None, seed=self.seed,
                                steps=self.steps, sampler=self.sampler, samples=self.samples)
        result = WhatIfSession(model, segmenter).run(entry["image"], request,
                                                     context=entry["context"], cancel=cancel)
        write_result_as(result, folder, self.format, overwrite=True, figure=self.figure,
                        extra_report={"patient": patient.id, "batch_scenario": scenario,
                                      "synthetic_patient": bool(patient.extra.get("phantom"))})
        return {"status": DONE, "rows": batch_rows(result, patient.id, scenario, case.id)}


def batch_rows(result, patient: str, scenario: str, folder: str) -> list[dict[str, Any]]:
    """One row per arm and follow-up time: sizes and diameters (mean, SD over the samples),
    their change vs the input, RECIST per sample, outcomes and predictions."""
    from .session import describe_recist

    rows = []
    base = result.baseline_size
    for arm in result.arms:
        for tp, follow in arm.followups.items():
            prov = follow.samples[0].provenance
            rows.append({
                "patient": patient, "scenario": scenario, "arm": arm.label, "time": tp,
                "samples": len(follow.samples), "unit": follow.unit,
                "size_t0": base.total, "size_mean": follow.size_mean,
                "size_sd": follow.size_sd, "size_change_percent": follow.change.percent,
                "diameter_t0_mm": base.diameter, "diameter_mean_mm": follow.diameter_mean,
                "diameter_sd_mm": follow.diameter_sd,
                "recist": describe_recist(follow.recist_per_sample()),
                "outcome": arm.describe_outcomes(follow, result.schema),
                **{f"predicted_{name}": p.get("value") for name, p in arm.predictions.items()},
                "model_hash": result.model.get("model_hash"), "seed": prov.get("seed"),
                "steps": prov.get("steps"), "sampler": prov.get("sampler"),
                "folder": f"{CASES}/{folder}"})
    return rows


BATCH_HEAD = ("patient", "scenario", "arm", "time", "samples", "unit", "size_t0", "size_mean",
              "size_sd", "size_change_percent", "diameter_t0_mm", "diameter_mean_mm",
              "diameter_sd_mm", "recist", "outcome")
BATCH_TAIL = ("model_hash", "seed", "steps", "sampler", "folder")


def parse_overrides(text: str, schema) -> dict[str, Any]:
    """``"pCR=yes,HR=+"`` -> validated values of the family's conditioning variables (the
    patient's other values are kept)."""
    values: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = (s.strip() for s in part.partition("="))
        if not sep:
            raise InputError(f"--scenario {text!r}", f"{part!r} is not NAME=VALUE")
        try:
            var = schema.variable(name)
        except (KeyError, InputError):
            var = None
        if var is None or not var.conditions_model or var.derive is not None:
            known = ", ".join(v.name for v in schema.condition_variables if v.derive is None)
            raise InputError(f"--scenario {text!r}", f"{name!r} is not a scenario variable of "
                                                     f"the {schema.name} model ({known})")
        values[name] = var.parse(value, f"--scenario {text!r}")
    if not values:
        raise InputError("--scenario", f"{text!r} sets no variable")
    return values


class BatchJob(Job):
    """Every patient x scenario: a what-if run (`WhatIfSession`, ``samples`` per scenario)
    whose results folder (`write_result`) is the case's folder. A scenario sets some
    conditioning values over the patient's own; without scenarios each patient gets the
    family's default comparison (breast: pCR vs non-pCR) under its own values."""

    kind = "batch"

    def __init__(self, manifest: Cohort | str | os.PathLike, scenarios: Sequence[str] = (), *,
                 model=None, seed: int = 0, steps: Optional[int] = None,
                 sampler: Optional[str] = None, samples: Optional[int] = None,
                 device: str = "auto", figure: bool = True, format: str = "nifti"):
        self.cohort = manifest if isinstance(manifest, Cohort) else CohortManifest(manifest)
        self.source = str(manifest) if not isinstance(manifest, Cohort) else str(
            self.cohort.root)
        if samples is None:  # the family's default (lung: several, a response is a chance)
            from ..families import get_family

            samples = get_family(self.cohort.family.name).default_samples
        if not 1 <= int(samples) <= 64:
            raise InputError("samples", f"{samples} must be between 1 and 64")
        if steps is not None and int(steps) < 1:
            raise InputError("steps", f"{steps} must be at least 1")
        _check_format(format)
        family = self.cohort.family.name
        self.scenarios: list[tuple[str, Optional[dict]]] = (
            [(text, parse_overrides(text, self.cohort.family)) for text in scenarios]
            or [(COMPARE, None)])
        names = [safe_name(n) for n, _ in self.scenarios]
        if len(set(names)) != len(names):
            raise InputError("--scenario", "the same scenario is given twice")
        model_dir, model_hash = _resolve_model(family, model, self.source)
        self.spec = BatchSpec(family=family, root=str(self.cohort.root),
                              meta=dict(self.cohort.meta), model_dir=model_dir,
                              model_hash=model_hash, seed=int(seed),
                              steps=None if steps is None else int(steps), sampler=sampler,
                              samples=int(samples), device=device, figure=figure,
                              format=format)
        self._options = {"model_hash": model_hash, "seed": int(seed), "steps": steps,
                         "sampler": sampler, "samples": int(samples), "device": device,
                         "figure": figure, **_format_option(format)}

    def __len__(self) -> int:
        return len(self.cohort.patients) * len(self.scenarios)

    def runnable(self) -> int:
        return len(self)

    def cases(self) -> Iterator[Case]:
        index = 0
        for patient in self.cohort.patients:
            for name, overrides in self.scenarios:
                options = {**self._options, "scenario": name, "values": overrides}
                yield Case(f"{safe_name(patient.id)}/{safe_name(name)}", index,
                           request_hash(self.kind, patient, options),
                           (patient, name, overrides))
                index += 1

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "manifest": self.source, "family": self.spec.family,
                "model": self.spec.model_dir, "scenarios": [n for n, _ in self.scenarios],
                **self._options}

    def write_csv(self, records: Iterable[Mapping[str, Any]], path: Path) -> Path:
        from .cohort_review import write_rows_csv

        rows = DoneRows(records)
        header = [*BATCH_HEAD,
                  *sorted({k for row in rows for k in row if k.startswith("predicted_")}),
                  *BATCH_TAIL]
        return write_rows_csv(rows, header, path)


# --- the run --------------------------------------------------------------------------------

@dataclasses.dataclass
class RunProgress:
    """Where a run stands (passed to the progress callback after every finished case)."""

    total: int
    done: int = 0          # finished this run (done or skipped)
    failed: int = 0        # recorded as failed this run
    reused: int = 0        # finished before (``resume``): not run again
    last: str = ""         # the case that just finished (or was found finished: resume)
    dashboard: str = ""    # the Dask dashboard's address, when one runs
    workers: int = 0
    where: str = ""        # "in this process" or "on Dask"

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.done - self.failed - self.reused)

    def describe(self) -> str:
        """"done 3 · failed 1 · left 4" (done: also those found finished, on resume); the
        inspector's progress, in the words of the CLI's bar."""
        return (f"done {self.done + self.reused} · failed {self.failed} · "
                f"left {self.remaining}")


class CaseRecords:
    """Every case's record in plan order, read from its folder each time it is iterated (a
    100,000-case run never holds them all). A case without a record of this request is an
    error: after a complete run there is none, unless its folder was changed meanwhile."""

    def __init__(self, job: Job, out: str | os.PathLike):
        self.job, self.out = job, Path(out)

    def __len__(self) -> int:
        return len(self.job)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for case in self.job.cases():
            record = read_record(self.out, case)
            if record is None:
                raise InputError(case_folder(self.out, case.id), "has no record of this "
                                                                 "request after the run (was "
                                                                 "the folder changed "
                                                                 "meanwhile?)")
            yield record


class DoneRows:
    """The CSV rows of the finished cases' records, in plan order; re-iterable as the
    records are (a table's header is one pass over them, its rows another)."""

    def __init__(self, records: Iterable[Mapping[str, Any]]):
        self.records = records

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        for record in self.records:
            if record.get("status") == DONE:
                yield from record["rows"]


def records_unit(records: Iterable[Mapping[str, Any]]) -> str:
    """The size unit of the first case that has one ("mm²" when none has)."""
    return next((r["unit"] for r in records if r.get("unit")), "mm²")


@dataclasses.dataclass
class RunSummary:
    """How a run ended: counts and the cases at fault; the records stay on disk."""

    total: int
    computed: int                       # cases run this time
    reused: int                         # cases finished before (resume): not run again
    failed: list[tuple[str, str]]       # (case id, one-line reason), this run or before
    skipped: list[tuple[str, str]]
    records: CaseRecords                # every case's record, in plan order, read from disk
    csv: Optional[Path]
    seconds: float
    workers: int
    run: str = ""                       # this run's id: the ``run`` of the records it wrote
    dashboard: str = ""

    def ran(self) -> Iterator[str]:
        """The ids of the cases this run wrote, in plan order (from their records)."""
        return (r["id"] for r in self.records if r.get("run") == self.run)


def run_cases(job: Job, out: str | os.PathLike, *, csv_path: str | os.PathLike | None = None,
              workers: Optional[int] = None, scheduler: Optional[str] = None,
              cluster: Optional[str] = None, cluster_options: Optional[Mapping[str, Any]] = None,
              client: Any = None, resume: bool = False, overwrite: bool = False,
              retry_failed: bool = False, window: Optional[int] = None,
              progress: Optional[Callable[[RunProgress], None]] = None,
              cancel: Optional[CancelToken] = None,
              on_start: Optional[Callable[[RunProgress], None]] = None,
              execute: Optional[Callable[[JobSpec, Case, str], dict]] = None,
              collect: bool = True) -> Optional[RunSummary]:
    """Run every case of ``job``, writing ``out/cases/<case>/`` per case and, at the end, the
    CSV (``csv_path``; default ``out/<kind>.csv``). Where: ``client`` (a connected
    `distributed.Client`), ``scheduler`` (an address or a scheduler file), ``cluster``
    (``slurm``, ``pbs``, ``sge``, ``lsf`` with ``cluster_options``), ``workers=0`` (this
    process) or else an embedded loopback `LocalCluster` of ``workers`` processes (None:
    sized to the machine). ``resume``: cases whose record answers the same request are not
    run again (failed ones are, with ``retry_failed``). Raises `jobs.Cancelled` when
    ``cancel`` is tripped (what finished is kept: resume later). ``execute`` (default
    `execute_case`) and ``collect=False`` (no CSV, returns None) serve the scheduling
    benchmark (``benchmarks/cohort_scale.py``)."""
    execute = execute or execute_case
    started = time.perf_counter()
    out = Path(out)
    csv_path = Path(csv_path) if csv_path is not None else out / f"{job.kind}.csv"
    _prepare(out, job, resume, overwrite)
    state = RunProgress(total=len(job))
    run_id = uuid.uuid4().hex[:12]

    def pending() -> Iterator[Case]:
        """The cases to run, drawn from the job's plan as there is room for them (a resumed
        run reads each record as it goes; each one reused is reported like a finished one,
        with ``state.last``)."""
        for case in job.cases():
            if resume:
                record = read_record(out, case)
                if record is not None and (record.get("status") != FAILED or not retry_failed):
                    state.reused += 1
                    state.last = case.id
                    if progress is not None:
                        progress(state)
                    continue
            yield dataclasses.replace(case, run=run_id)

    def finished(case_id: str, status: str) -> None:
        if status == FAILED:
            state.failed += 1
        else:
            state.done += 1
        state.last = case_id
        if progress is not None:
            progress(state)

    if client is None and scheduler is None and cluster is None and workers == 0:
        state.workers, state.where = 1, "in this process"
        if on_start is not None:
            on_start(state)
        for case in pending():
            if cancel is not None:
                cancel.check()
            # in this process the token reaches the case (a sampler step, not a whole case)
            result = execute(job.spec, case, str(out), **(
                {"cancel": cancel} if execute is execute_case and cancel is not None else {}))
            finished(case.id, result["status"])
    else:
        from .cohort_dask import connect, run_on_dask

        with connect(client=client, workers=workers, scheduler=scheduler, cluster=cluster,
                     cluster_options=cluster_options) as (dask_client, dashboard):
            state.dashboard, state.where = dashboard, "on Dask"
            run_on_dask(dask_client, job.spec, pending(), str(out), state, finished,
                        window=window, cancel=cancel, on_start=on_start, execute=execute)
    if cancel is not None:
        cancel.check()
    if not collect:
        return None
    return _collect(job, out, csv_path, state, run_id, time.perf_counter() - started)


def _prepare(out: Path, job: Job, resume: bool, overwrite: bool) -> None:
    cases = out / CASES
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    held = cases.is_dir() and any(cases.iterdir())
    if held and not (resume or overwrite):
        raise InputError(out, "already holds a run's cases (--resume to finish it, or "
                              "--overwrite to run every case again)")
    cases.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / RUN, {"format": FORMAT, "version": VERSION, **job.describe(),
                                  "cases": len(job)})


def _collect(job: Job, out: Path, csv_path: Path, state: RunProgress, run_id: str,
             seconds: float) -> RunSummary:
    """The records on disk, streamed in plan order -> the CSV (and failed.csv when any
    failed): one pass checks that every case has its record and lists those at fault, the
    job's table makes its own passes (header, rows)."""
    records = CaseRecords(job, out)
    failed, skipped = [], []
    for record in records:
        if record["status"] == FAILED:
            failed.append((record["id"], record.get("reason", "")))
        elif record["status"] == SKIPPED:
            skipped.append((record["id"], record.get("reason", "")))
    written = job.write_csv(records, csv_path)
    failed_path = out / FAILED_CSV
    if failed:
        with atomic_path(failed_path) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(["case", "reason"])
                writer.writerows(failed)
    elif failed_path.exists():
        failed_path.unlink()
    return RunSummary(total=len(job), computed=state.done + state.failed, reused=state.reused,
                      failed=failed, skipped=skipped, records=records, csv=written,
                      seconds=seconds, workers=state.workers, run=run_id,
                      dashboard=state.dashboard)


def review_rows_summary(records: Iterable[Mapping[str, Any]], lowest: int = 3
                        ) -> dict[str, Any]:
    """`cohort_review.summarise` from the records' rows (the CSV's numbers), in one pass over
    them (after the first with a unit): the means, and the ``lowest`` rows by SSIM."""
    from .cohort_review import METRICS, column_name

    unit = records_unit(records)
    columns = {metric.key: column_name(metric, unit) for metric in METRICS}
    sums, counts = dict.fromkeys(columns, 0), dict.fromkeys(columns, 0)
    tally = {"cases": 0, "patients": 0, "truth": 0, "patient": None}

    def counted(rows: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        for row in rows:
            tally["cases"] += 1
            # a patient's rows are adjacent in plan order: a new id is a new patient
            tally["patients"] += row["patient"] != tally["patient"]
            tally["patient"] = row["patient"]
            tally["truth"] += bool(row.get("counterfactual_scenario"))
            for key, column in columns.items():
                value = row.get(column)
                if value is not None and math.isfinite(float(value)):
                    sums[key] += float(value)
                    counts[key] += 1
            yield row

    # nsmallest: sorted(...)[:n] without the list (ties in plan order, as sorted keeps them)
    worst = heapq.nsmallest(lowest, counted(DoneRows(records)),
                            key=lambda row: row.get("ssim") or 0.0)
    means = {key: sums[key] / counts[key] if counts[key] else None for key in columns}
    return {"n_cases": tally["cases"], "n_patients": tally["patients"],
            "n_with_truth": tally["truth"], "unit": unit, "means": means, "lowest": worst}
