"""Segmentation training cases from a family's phantoms or from a cohort manifest.

What nnU-Net segments is what the rest of nacsim measures on, so the cases are made by the
family's own preprocessing (``ModelFamily.model_inputs``, `science.preprocess.pipeline`):

- breast: one case per visit, the 2D subtraction MIP (``breast_mips``) and the footprint of
  the tumour mask on it;
- lung: one case per visit, the 3D CT crop in Hounsfield units (``lung_crops``) and the
  tumour mask cut with the same box.

The cases (`science.segmentation.dataset.Case`) are then exported to nnU-Net's raw format
by `science.segmentation.dataset.export_dataset`, which is handed the family's
``segmenter_input`` and ``segmentation`` specs. Worker processes are handed the family's
name (or the manifest's path) and look it up once.
"""

from __future__ import annotations

import os
from typing import Callable, Mapping, Sequence, Union

import numpy as np

from ..core.cohort import load_cohort, load_timepoint
from ..core.errors import InputError
from ..core.scan import LABELS, Scan, check_image_values
from ..core.schema import FamilySchema
from ..families import ModelFamily, family_names, get_family
from ..science.segmentation.dataset import Case, case_id
from .parallel import map_jobs

DEFAULT_MIP_SIZE = 128  # 2D inputs are resized to this square grid; 3D crops keep theirs
LESION_FREE_SUFFIX = "lesion-free"

Family = Union[ModelFamily, str]


def cases_from_visits(family: Family, patient_id: str,
                      visits: Mapping[str, Mapping[str, Scan]], *,
                      size: int = DEFAULT_MIP_SIZE) -> list[Case]:
    """Run the family's preprocessing on one patient's visits (time point -> channel/mask ->
    scan) and return one case per visit that has a tumour mask."""
    family = get_family(family)
    inputs = family.model_inputs(visits,
                                 size=size if family.segmenter_input.ndim == 2 else None)
    cases = []
    for timepoint in family.schema.timepoint_names:
        entry = inputs.get(timepoint)
        if entry is None or "tumour" not in entry:
            continue
        image = family.to_segmenter(entry["image"])
        check_image_values(image, f"patient {patient_id} {timepoint} "
                                  f"{family.segmenter_input.short_name}")
        label = entry["tumour"]
        label = label.derive((label.array > 0).astype(np.uint8), kind=LABELS)
        cases.append(Case(case_id(patient_id, timepoint), patient_id, timepoint, image, label))
    return cases


def _phantom_patient_cases(family: str, seed: int, index: int, timepoints: tuple[str, ...],
                           size: int, lesion_free: bool = False) -> list[Case]:
    chosen = get_family(family)  # a worker process is handed the name
    phantom = chosen.make_phantom(seed, index)
    rendering = phantom.render(tumour=False) if lesion_free else phantom.render()
    visits = {tp: scans for tp, scans in rendering.visits().items() if tp in timepoints}
    patient_id = f"{phantom.id}-{LESION_FREE_SUFFIX}" if lesion_free else phantom.id
    return cases_from_visits(chosen, patient_id, visits, size=size)


def _cohort_patient_cases(manifest: str, patient_id: str, timepoints: tuple[str, ...],
                          size: int) -> list[Case]:
    cohort = load_cohort(manifest)
    patient = cohort.patient(patient_id)
    visits = {tp: load_timepoint(patient, tp, cohort.family) for tp in patient.scans
              if tp in timepoints}
    if not any("tumour" in v for v in visits.values()):
        return []
    return cases_from_visits(cohort.family.name, patient.id, visits, size=size)


def _check_timepoints(schema: FamilySchema, timepoints: Sequence[str] | None) -> tuple[str, ...]:
    if timepoints is None:
        return schema.timepoint_names
    timepoints = tuple(timepoints)
    for tp in timepoints:
        if tp not in schema.timepoint_names:
            raise InputError("--timepoints", f"{tp!r} is not a {schema.name} time point "
                                             f"({', '.join(schema.timepoint_names)})")
    if schema.baseline not in timepoints:
        # Follow-ups are registered to, and lung crops centred on, the baseline.
        timepoints = (schema.baseline, *timepoints)
    return timepoints


def _flat(per_patient: list[list[Case]]) -> list[Case]:
    return [case for cases in per_patient for case in cases]


def phantom_cases(family: Family, n_patients: int, seed: int, *,
                  timepoints: Sequence[str] | None = None, size: int = DEFAULT_MIP_SIZE,
                  first_index: int = 0, jobs: int | None = None, lesion_free: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> list[Case]:
    """Cases of ``n_patients`` synthetic patients (rendered in memory, not written).

    ``lesion_free``: the patients are rendered with no tumour at any visit (breast only,
    `BreastPhantom.render(tumour=False)`); every case has an empty mask and its patient id
    ends in ``-lesion-free`` (e.g. ``BR0065-lesion-free_T1``)."""
    chosen = get_family(family)
    schema = chosen.schema
    if n_patients < 1:
        raise InputError("--phantoms", f"{n_patients} patients: need at least 1")
    if first_index < 0:
        raise InputError("patient index", f"{first_index} must be >= 0")
    if lesion_free and not (chosen.segmentation and chosen.segmentation.lesion_free):
        able = [n for n in family_names() if get_family(n).segmentation and
                get_family(n).segmentation.lesion_free]
        raise InputError("--lesion-free", f"lesion-free phantoms exist for "
                                          f"{', '.join(able)} only, not {schema.name}")
    tps = _check_timepoints(schema, timepoints)
    args = [(schema.name, seed, i, tps, size, lesion_free)
            for i in range(first_index, first_index + n_patients)]
    return _flat(map_jobs(_phantom_patient_cases, args, jobs, progress))


def cohort_cases(manifest: str | os.PathLike, *, timepoints: Sequence[str] | None = None,
                 size: int = DEFAULT_MIP_SIZE, jobs: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> tuple[str, list[Case]]:
    """(family, cases) of every patient of a cohort manifest; visits without a tumour mask
    are skipped (nnU-Net needs a mask for every training case)."""
    cohort = load_cohort(manifest)
    tps = _check_timepoints(cohort.family, timepoints)
    args = [(str(manifest), p.id, tps, size) for p in cohort.patients]
    cases = _flat(map_jobs(_cohort_patient_cases, args, jobs, progress))
    if not cases:
        raise InputError(manifest, "no visit in this cohort has a tumour mask; nnU-Net needs "
                                   "masks to train")
    return cohort.family.name, cases
