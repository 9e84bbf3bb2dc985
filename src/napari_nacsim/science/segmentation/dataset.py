"""Cohorts as nnU-Net v2 raw datasets: model inputs with their tumour masks.

What nnU-Net segments is what the rest of nacsim measures on, so the training cases are
made by the same preprocessing as everything else (`preprocess.pipeline`):

- breast: one case per visit, the 2D subtraction MIP (``breast_mips``) and the footprint of
  the tumour mask on it;
- lung: one case per visit, the 3D CT crop in Hounsfield units (``lung_crops``) and the
  tumour mask cut with the same box. Channel name ``CT``: nnU-Net then normalises with the
  dataset's foreground intensity statistics (clipping to its 0.5-99.5 percentiles), the
  scheme meant for CT.

Files follow nnU-Net's raw format (``DatasetXXX_Name/imagesTr/<case>_0000.nii.gz``,
``labelsTr/<case>.nii.gz``, ``dataset.json``) and are read by nnU-Net's ``SimpleITKIO``,
whose array order is nacsim's ``(z, y, x)``. A 2D MIP is stored as a NIfTI volume of one
slice whose slice spacing is 999 mm, nnU-Net's own convention for 2D data: the large value
makes the planner treat the slice axis as the odd one out and plan a 2D U-Net, whatever the
in-plane spacing. `nnunet_input` gives the same arrays and spacing for in-memory inference,
so training and prediction cannot disagree on axes or spacing.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ...core.atomic import atomic_directory, atomic_path
from ...core.errors import InputError
from ...core.scan import LABELS, Scan, check_image_values
from ...core.schema import FamilySchema

SLICE_SPACING_2D = 999.0  # nnU-Net's spacing for the non-axis of 2D images
FILE_ENDING = ".nii.gz"
TUMOUR_LABEL = 1

# What each family's segmenter takes, its dataset id and name, whether its phantoms can be
# drawn lesion-free: the family registry (`ModelFamily.segmenter_input`, `.segmentation`).
DEFAULT_MIP_SIZE = 128
LESION_FREE_SUFFIX = "lesion-free"


def family_of(family: str):
    """The registered model family of a name (`napari_nacsim.families`)."""
    from ...families import get_family

    return get_family(family)


@dataclasses.dataclass
class Case:
    """One training case: a model input and its tumour mask on the same grid."""

    case_id: str
    patient_id: str
    timepoint: str
    image: Scan
    label: Scan

    def __post_init__(self):
        if self.image.shape != self.label.shape:
            raise InputError(f"case {self.case_id}", f"mask shape {self.label.shape} differs "
                                                     f"from image shape {self.image.shape}")


def case_id(patient_id: str, timepoint: str) -> str:
    """A file-name-safe nnU-Net case identifier."""
    def clean(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-") or "x"

    return f"{clean(patient_id)}_{clean(timepoint)}"


# --- arrays as nnU-Net sees them ----------------------------------------------------------

def nnunet_input(image: Scan) -> tuple[np.ndarray, dict[str, list[float]]]:
    """``image`` as nnU-Net's ``(channels, z, y, x)`` float32 array plus ``{"spacing"}``,
    exactly as its ``SimpleITKIO`` reads the exported files."""
    array = np.asarray(image.array, dtype=np.float32)
    if image.ndim == 2:
        return array[None, None], {"spacing": [SLICE_SPACING_2D, *map(float, image.spacing)]}
    return array[None], {"spacing": [float(s) for s in image.spacing]}


def _nnunet_affine(scan: Scan) -> np.ndarray:
    affine = np.array(scan.affine, dtype=float)
    if scan.ndim == 2:
        column = affine[:3, 2]
        norm = np.linalg.norm(column)
        affine[:3, 2] = column / norm * SLICE_SPACING_2D if norm > 0 else [0, 0, SLICE_SPACING_2D]
    return affine


def write_nnunet_file(scan: Scan, path: str | os.PathLike, *, label: bool = False) -> Path:
    """Write ``scan`` as nnU-Net expects it (NIfTI; 2D as one slice of 999 mm), atomically."""
    import nibabel as nib

    array = scan.array
    if label:
        array = (array > 0).astype(np.uint8) * TUMOUR_LABEL
    else:
        array = array.astype(np.float32)
    data = array.T if scan.ndim == 3 else array.T[:, :, None]  # (z, y, x) -> NIfTI (x, y, z)
    affine = _nnunet_affine(scan)
    img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


# --- cases from visits ---------------------------------------------------------------------

def cases_from_visits(family: str, patient_id: str, visits: Mapping[str, Mapping[str, Scan]],
                      *, size: int = DEFAULT_MIP_SIZE) -> list[Case]:
    """Run the family's preprocessing on one patient's visits (time point -> channel/mask ->
    scan) and return one case per visit that has a tumour mask."""
    chosen = family_of(family)
    schema = chosen.schema
    # 2D inputs are resized to the segmenter's square grid; 3D crops have a fixed grid
    inputs = chosen.model_inputs(visits, size=size if chosen.segmenter_input.ndim == 2 else None)
    cases = []
    for timepoint in schema.timepoint_names:
        entry = inputs.get(timepoint)
        if entry is None or "tumour" not in entry:
            continue
        image = chosen.to_segmenter(entry["image"])
        check_image_values(image, f"patient {patient_id} {timepoint} "
                                  f"{chosen.segmenter_input.short_name}")
        label = entry["tumour"]
        label = label.derive((label.array > 0).astype(np.uint8), kind=LABELS)
        cases.append(Case(case_id(patient_id, timepoint), patient_id, timepoint, image, label))
    return cases


def _phantom_patient_cases(family: str, seed: int, index: int, timepoints: tuple[str, ...],
                           size: int, lesion_free: bool = False) -> list[Case]:
    from ..phantoms import make_patient

    phantom = make_patient(family, seed, index)
    rendering = phantom.render(tumour=False) if lesion_free else phantom.render()
    visits = {tp: {**rendering.scans[tp], **rendering.masks.get(tp, {})}
              for tp in rendering.scans if tp in timepoints}
    patient_id = f"{phantom.id}-{LESION_FREE_SUFFIX}" if lesion_free else phantom.id
    return cases_from_visits(family, patient_id, visits, size=size)


def _cohort_patient_cases(manifest: str, patient_id: str, timepoints: tuple[str, ...],
                          size: int) -> list[Case]:
    from ...core.cohort import load_cohort, load_timepoint

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


def _run_jobs(job: Callable, arguments: list[tuple], jobs: int | None,
              progress: Callable[[int, int], None] | None) -> list[Case]:
    jobs = max(1, min(jobs or min(2, os.cpu_count() or 1), len(arguments)))
    results: list[list[Case]] = []
    if jobs == 1:
        for done, args in enumerate(arguments, start=1):
            results.append(job(*args))
            if progress:
                progress(done, len(arguments))
    else:
        # spawn: ANTs/ITK and torch are not fork-safe once initialised.
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(job, *args) for args in arguments]
            for done, future in enumerate(futures, start=1):
                results.append(future.result())
                if progress:
                    progress(done, len(arguments))
    return [case for cases in results for case in cases]


def phantom_cases(family: str, n_patients: int, seed: int, *,
                  timepoints: Sequence[str] | None = None, size: int = DEFAULT_MIP_SIZE,
                  first_index: int = 0, jobs: int | None = None, lesion_free: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> list[Case]:
    """Cases of ``n_patients`` synthetic patients (rendered in memory, not written).

    ``lesion_free``: the patients are rendered with no tumour at any visit (breast only,
    `BreastPhantom.render(tumour=False)`); every case has an empty mask and its patient id
    ends in ``-lesion-free`` (e.g. ``BR0065-lesion-free_T1``)."""
    chosen = family_of(family)
    schema = chosen.schema
    if n_patients < 1:
        raise InputError("--phantoms", f"{n_patients} patients: need at least 1")
    if lesion_free and not (chosen.segmentation and chosen.segmentation.lesion_free):
        from ...families import family_names

        able = [n for n in family_names() if family_of(n).segmentation and
                family_of(n).segmentation.lesion_free]
        raise InputError("--lesion-free", f"lesion-free phantoms exist for "
                                          f"{', '.join(able)} only, not {schema.name}")
    tps = _check_timepoints(schema, timepoints)
    args = [(schema.name, seed, i, tps, size, lesion_free)
            for i in range(first_index, first_index + n_patients)]
    return _run_jobs(_phantom_patient_cases, args, jobs, progress)


def cohort_cases(manifest: str | os.PathLike, *, timepoints: Sequence[str] | None = None,
                 size: int = DEFAULT_MIP_SIZE, jobs: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> tuple[str, list[Case]]:
    """(family, cases) of every patient of a cohort manifest; visits without a tumour mask
    are skipped (nnU-Net needs a mask for every training case)."""
    from ...core.cohort import load_cohort

    cohort = load_cohort(manifest)
    tps = _check_timepoints(cohort.family, timepoints)
    args = [(str(manifest), p.id, tps, size) for p in cohort.patients]
    cases = _run_jobs(_cohort_patient_cases, args, jobs, progress)
    if not cases:
        raise InputError(manifest, "no visit in this cohort has a tumour mask; nnU-Net needs "
                                   "masks to train")
    return cohort.family.name, cases


# --- export --------------------------------------------------------------------------------

def dataset_folder_name(dataset_id: int, name: str) -> str:
    if not 1 <= int(dataset_id) <= 999:
        raise InputError("--dataset-id", f"{dataset_id} is not in 1..999 (nnU-Net uses three "
                                          "digits)")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", name):
        raise InputError("--dataset-name", f"{name!r}: use letters, digits and '-' only")
    return f"Dataset{int(dataset_id):03d}_{name}"


def dataset_json(family: str, cases: Sequence[Case], **extra: Any) -> dict[str, Any]:
    """nnU-Net's ``dataset.json`` for these cases (with nacsim's provenance added)."""
    spec = family_of(family).segmenter_input
    return {
        "channel_names": {"0": spec.channel},
        "labels": {"background": 0, "tumour": TUMOUR_LABEL},
        "numTraining": len(cases),
        "file_ending": FILE_ENDING,
        "overwrite_image_reader_writer": "SimpleITKIO",
        "name": f"nacsim {family} tumour segmentation",
        "description": f"{spec.what} with its tumour mask, one case per visit",
        "nacsim": {
            "family": family,
            "input": spec.what,
            "cases": [{"case": c.case_id, "patient": c.patient_id, "timepoint": c.timepoint,
                       "synthetic": bool(c.image.provenance.get("synthetic"))} for c in cases],
            **extra,
        },
    }


def export_dataset(cases: Sequence[Case], family: str, raw_root: str | os.PathLike, *,
                   dataset_id: int | None = None, name: str | None = None,
                   overwrite: bool = False, **provenance: Any) -> Path:
    """Write ``cases`` as the nnU-Net raw dataset ``raw_root/DatasetXXX_Name``; returns its
    folder. Written under a temporary name and renamed, so it is complete or absent."""
    chosen = family_of(family)
    family = chosen.name
    if not cases:
        raise InputError("dataset", "no cases to export")
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        raise InputError("dataset", "case identifiers are not unique")
    spec = chosen.segmenter_input
    for case in cases:
        if case.image.ndim != spec.ndim:
            raise InputError(f"case {case.case_id}", f"is {case.image.ndim}D; the {family} "
                                                     f"segmenter takes {spec.what}")
    if chosen.segmentation is None:
        raise InputError(f"{family} family", "has no nnU-Net segmentation settings")
    dataset_id = chosen.segmentation.dataset_id if dataset_id is None else int(dataset_id)
    name = name or chosen.segmentation.dataset_name
    folder = Path(raw_root) / dataset_folder_name(dataset_id, name)
    others = [p for p in Path(raw_root).glob(f"Dataset{dataset_id:03d}_*") if p != folder] \
        if Path(raw_root).is_dir() else []
    if others:
        raise InputError(others[0], f"another dataset already uses id {dataset_id}")
    if folder.exists() and not overwrite:
        raise InputError(folder, "already exists (choose another dataset id or allow overwrite)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(folder) as staging:
        (staging / "imagesTr").mkdir()
        (staging / "labelsTr").mkdir()
        for case in cases:
            write_nnunet_file(case.image,
                              staging / "imagesTr" / f"{case.case_id}_0000{FILE_ENDING}")
            write_nnunet_file(case.label, staging / "labelsTr" / f"{case.case_id}{FILE_ENDING}",
                              label=True)
        (staging / "dataset.json").write_text(
            json.dumps(dataset_json(family, cases, **provenance), indent=2) + "\n")
    return folder


def verify_dataset(folder: str | os.PathLike, num_processes: int = 1) -> None:
    """nnU-Net's own integrity check (``--verify_dataset_integrity``); raises `InputError`
    with nnU-Net's message if the dataset does not pass."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    try:
        verify_dataset_integrity(str(folder), num_processes)
    except (AssertionError, RuntimeError, FileNotFoundError) as err:
        raise InputError(folder, f"nnU-Net dataset integrity check failed: {err}") from None


def tumour_fraction(cases: Iterable[Case]) -> dict[str, float]:
    """Share of cases with any tumour voxel, and the median tumour size in voxels."""
    sizes = [int(np.count_nonzero(c.label.array)) for c in cases]
    return {"cases": len(sizes), "with_tumour": float(np.mean([s > 0 for s in sizes])) if sizes
            else 0.0, "median_tumour_voxels": float(np.median(sizes)) if sizes else 0.0}
