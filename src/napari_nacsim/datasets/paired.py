"""Paired cohorts from a family's phantoms or from a cohort manifest.

A paired cohort (`science.generative.data.PairedCohort`) is what the generative core trains
and is evaluated on: per patient, the model input of every time point on one grid, the
tumour masks on the same grid, and the clinical values. Filling one takes a family: its
phantoms (``ModelFamily.make_phantom``), its preprocessing (``model_inputs``: breast
registration and subtraction MIPs) and its resampling onto the model grid. Preparing a
phantom patient can be slow, so each is cached as one ``.npz`` and reused.

Worker processes get the family's *name* (a family object does not travel between
processes) and look it up once; everywhere else the family object is passed on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np

from ..core.atomic import atomic_path
from ..core.cohort import Cohort, load_cohort, load_timepoint
from ..core.errors import InputError
from ..core.scan import Scan
from ..families import ModelFamily, get_family
from ..science.generative.data import PairedCohort
from .parallel import map_jobs, worker_count
from .phantom_cohort import phantom_of

Family = Union[ModelFamily, str]


def model_arrays(family: ModelFamily, inputs: Mapping[str, Mapping[str, Scan]], size: int
                 ) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """A patient's model inputs (time point -> ``{"image", "tumour"}``, as
    `ModelFamily.model_inputs` gives them) resampled onto the model grid of ``size``:
    images ``(T, *grid)`` float32, tumour masks ``(T, *grid)`` uint8, in schema order, and
    the grid's spacing (that of the baseline, which every visit is aligned to)."""
    grid = (size,) * family.model_input.ndim
    images, masks, spacing = [], [], None
    for tp in family.schema.timepoint_names:
        image = family.resample(inputs[tp]["image"], grid)
        mask = family.resample(inputs[tp]["tumour"], grid)
        images.append(np.asarray(image.array, np.float32))
        masks.append((mask.array > 0).astype(np.uint8))
        spacing = spacing or tuple(float(s) for s in image.spacing)
    return np.stack(images), np.stack(masks), spacing


def prepare_phantom_patient(family: Family, cohort_seed: int, index: int, size: int,
                            counterfactual: bool, cache_dir: Path) -> Path:
    """Render + preprocess one phantom patient (and optionally its counterfactual); cached."""
    family = get_family(family)  # a worker process is handed the name
    name = f"{family.name}_s{cohort_seed}_i{index:04d}_{size}{'_cf' if counterfactual else ''}"
    path = Path(cache_dir) / f"{name}.npz"
    if path.exists():
        return path
    patient = family.make_phantom(cohort_seed, index)
    factual = path.with_name(path.name.replace("_cf.npz", ".npz"))
    if counterfactual and factual.exists():
        # the factual half is already prepared (a phantom renders the same every time):
        # only the counterfactual is rendered
        with np.load(factual) as z:
            payload = {k: z[k] for k in z.files}
        clinical = json.loads(str(payload["clinical"]))
    else:
        rendering = patient.render()
        images, masks, spacing = model_arrays(family, family.model_inputs(rendering.visits()),
                                              size)
        clinical = rendering.clinical
        payload = dict(images=images, masks=masks, spacing=np.array(spacing), id=patient.id,
                       clinical=json.dumps(clinical), truth=json.dumps(rendering.truth))
    if counterfactual:
        cf = patient.render(family.counterfactual(clinical))
        cf_images, cf_masks, _ = model_arrays(family, family.model_inputs(cf.visits()), size)
        payload.update(cf_images=cf_images, cf_masks=cf_masks,
                       cf_clinical=json.dumps(cf.clinical), cf_truth=json.dumps(cf.truth))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **payload)
    return path


def phantom_ids(family: Family, cohort_seed: int, n_patients: int) -> list[str]:
    """The patient ids of the first ``n_patients`` phantoms of a cohort (cheap: drawing a
    phantom's parameters renders nothing)."""
    family = get_family(family)
    return [family.make_phantom(cohort_seed, i).id for i in range(n_patients)]


def phantom_cohort(family: Family, cohort_seed: int, n_patients: int, size: int, *,
                   cache_dir: Path, counterfactual_ids: Sequence[str] = (), jobs: int = 1,
                   progress: Callable[[int, int], None] | None = None) -> PairedCohort:
    """Prepare (or read from cache) ``n_patients`` synthetic patients of ``family`` (a
    registered family or its name) on a model grid of ``size`` pixels per side.
    ``jobs`` > 1 prepares in worker processes (built-in families only: a family registered
    at run time is unknown to a fresh worker)."""
    family = get_family(family)
    ids = phantom_ids(family, cohort_seed, n_patients)
    # A worker process is handed the name; in this process the family itself serves.
    who = family.name if worker_count(jobs, n_patients) > 1 else family
    tasks = [(who, cohort_seed, i, size, ids[i] in set(counterfactual_ids), Path(cache_dir))
             for i in range(n_patients)]
    paths = map_jobs(prepare_phantom_patient, tasks, jobs, progress)
    images, masks, clinical, truth = [], [], [], []
    cf_images, cf_masks, cf_clinical = {}, {}, {}
    spacing = None
    for pid, path in zip(ids, paths):
        with np.load(path) as z:
            images.append(z["images"])
            masks.append(z["masks"])
            clinical.append(json.loads(str(z["clinical"])))
            truth.append(json.loads(str(z["truth"])))
            spacing = tuple(float(s) for s in z["spacing"])
            if "cf_images" in z.files:
                cf_images[pid] = z["cf_images"]
                cf_masks[pid] = z["cf_masks"]
                cf_clinical[pid] = json.loads(str(z["cf_clinical"]))
                truth[-1]["counterfactual_truth"] = json.loads(str(z["cf_truth"]))
    return PairedCohort(family.schema, ids, np.stack(images), np.stack(masks), clinical,
                        spacing, truth, cf_images, cf_masks, cf_clinical)


def manifest_cohort(manifest: Any, size: int, *, counterfactual: bool = True,
                    progress: Callable[[int, int], None] | None = None
                    ) -> tuple[PairedCohort, list[tuple[str, str]]]:
    """A cohort manifest as a paired cohort on a model grid of ``size`` (every time point of
    the schema needed; the family's preprocessing), plus ``(patient, reason)`` for the
    patients left out. Phantom patients (``extra.phantom`` in the manifest) also get their
    counterfactual ground truth when ``counterfactual``."""
    cohort = manifest if isinstance(manifest, Cohort) else load_cohort(manifest)
    family = get_family(cohort.family)
    schema = family.schema
    conditions = [v.name for v in schema.condition_variables if v.derive is None]
    ids, images, masks, clinical, truth, skipped = [], [], [], [], [], []
    cf_images, cf_masks, cf_clinical = {}, {}, {}
    spacing = None
    for k, patient in enumerate(cohort.patients):
        missing = [tp for tp in schema.timepoint_names if tp not in patient.scans or
                   patient.mask_path(tp) is None]
        absent = [n for n in conditions if n not in patient.clinical]
        if missing or absent:
            what = f"no {missing[0]} scan with a tumour mask" if missing else \
                f"no {absent[0]} value"
            skipped.append((patient.id, what))
            continue
        visits = {tp: load_timepoint(patient, tp, schema) for tp in schema.timepoint_names}
        imgs, msks, spacing = model_arrays(family, family.model_inputs(visits), size)
        ids.append(patient.id)
        images.append(imgs)
        masks.append(msks)
        clinical.append(dict(patient.clinical))
        truth.append(dict((patient.extra.get("phantom") or {}).get("truth") or {}))
        if counterfactual and patient.extra.get("phantom"):
            scenario = family.counterfactual(patient.clinical)
            cf = family.counterfactual_truth(phantom_of(cohort, patient), scenario)
            cf_images[patient.id], cf_masks[patient.id], _ = model_arrays(family, cf, size)
            cf_clinical[patient.id] = scenario
        if progress:
            progress(k + 1, len(cohort.patients))
    if not ids:
        raise InputError(getattr(cohort, "root", "cohort"), "no patient has every time point "
                                                            "with a tumour mask")
    return (PairedCohort(schema, ids, np.stack(images), np.stack(masks), clinical, spacing,
                         truth, cf_images, cf_masks, cf_clinical), skipped)
