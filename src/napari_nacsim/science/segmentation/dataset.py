"""nacsim cases as nnU-Net v2 raw datasets: model inputs with their tumour masks.

A `Case` is one model input and its tumour mask on the same grid; the cases of a family's
phantoms or of a cohort manifest are made above this floor, by the family's own
preprocessing (`napari_nacsim.datasets.segmentation_cases`). Exporting them needs only what
the family's segmenter takes (a `ModelInput`) and its nnU-Net settings (a
`SegmentationSpec`), handed in as arguments.

Files follow nnU-Net's raw format (``DatasetXXX_Name/imagesTr/<case>_0000.nii.gz``,
``labelsTr/<case>.nii.gz``, ``dataset.json``) and are read by nnU-Net's ``SimpleITKIO``,
whose array order is nacsim's ``(z, y, x)``. A 2D MIP is stored as a NIfTI volume of one
slice whose slice spacing is 999 mm, nnU-Net's own convention for 2D data: the large value
makes the planner treat the slice axis as the odd one out and plan a 2D U-Net, whatever the
in-plane spacing. `nnunet_input` gives the same arrays and spacing for in-memory inference,
so training and prediction cannot disagree on axes or spacing. Lung crops use the channel
name ``CT``: nnU-Net then normalises with the dataset's foreground intensity statistics
(clipping to its 0.5-99.5 percentiles), the scheme meant for CT.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from ...core.atomic import atomic_directory, atomic_path
from ...core.errors import InputError
from ...core.model_input import ModelInput, SegmentationSpec
from ...core.scan import Scan

SLICE_SPACING_2D = 999.0  # nnU-Net's spacing for the non-axis of 2D images
FILE_ENDING = ".nii.gz"
TUMOUR_LABEL = 1


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


# --- export --------------------------------------------------------------------------------

def dataset_folder_name(dataset_id: int, name: str) -> str:
    if not 1 <= int(dataset_id) <= 999:
        raise InputError("--dataset-id", f"{dataset_id} is not in 1..999 (nnU-Net uses three "
                                          "digits)")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", name):
        raise InputError("--dataset-name", f"{name!r}: use letters, digits and '-' only")
    return f"Dataset{int(dataset_id):03d}_{name}"


def dataset_json(family: str, input_spec: ModelInput, cases: Sequence[Case],
                 **extra: Any) -> dict[str, Any]:
    """nnU-Net's ``dataset.json`` for these cases of ``family``'s segmenter, which takes
    ``input_spec`` images (with nacsim's provenance added)."""
    return {
        "channel_names": {"0": input_spec.channel},
        "labels": {"background": 0, "tumour": TUMOUR_LABEL},
        "numTraining": len(cases),
        "file_ending": FILE_ENDING,
        "overwrite_image_reader_writer": "SimpleITKIO",
        "name": f"nacsim {family} tumour segmentation",
        "description": f"{input_spec.what} with its tumour mask, one case per visit",
        "nacsim": {
            "family": family,
            "input": input_spec.what,
            "cases": [{"case": c.case_id, "patient": c.patient_id, "timepoint": c.timepoint,
                       "synthetic": bool(c.image.provenance.get("synthetic"))} for c in cases],
            **extra,
        },
    }


def export_dataset(cases: Sequence[Case], raw_root: str | os.PathLike, *, family: str,
                   input_spec: ModelInput, segmentation: Optional[SegmentationSpec],
                   dataset_id: int | None = None, name: str | None = None,
                   overwrite: bool = False, **provenance: Any) -> Path:
    """Write ``cases`` as the nnU-Net raw dataset ``raw_root/DatasetXXX_Name``; returns its
    folder. ``family`` names the family (``dataset.json``), ``input_spec`` is what its
    segmenter takes and ``segmentation`` its nnU-Net settings (the default dataset id and
    name). Written under a temporary name and renamed, so it is complete or absent."""
    if not cases:
        raise InputError("dataset", "no cases to export")
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        raise InputError("dataset", "case identifiers are not unique")
    for case in cases:
        if case.image.ndim != input_spec.ndim:
            raise InputError(f"case {case.case_id}", f"is {case.image.ndim}D; the {family} "
                                                     f"segmenter takes {input_spec.what}")
    if segmentation is None:
        raise InputError(f"{family} family", "has no nnU-Net segmentation settings")
    dataset_id = segmentation.dataset_id if dataset_id is None else int(dataset_id)
    name = name or segmentation.dataset_name
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
            json.dumps(dataset_json(family, input_spec, cases, **provenance), indent=2) + "\n")
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
