"""Write a set of scans, their tumour masks and sizes as one DICOM export folder.

The folder holds, for every item, an image series (``<key>/IM0001.dcm`` ...), its tumour
mask as a SEG (``<key>_tumour_SEG.dcm``) and, for all measured items together, one
TID 1500 measurement report (``measurements_SR.dcm``); ``dicom_index.json`` lists what is
where with its UIDs. Everything is written into a staging folder that replaces ``out`` only
when complete, and the input study is checked before anything is written: a DICOM input
without the attributes needed to derive from it is refused with a one-line `InputError`
naming the attribute, and nothing is left behind.

The writer is plain I/O: what differs between model families arrives as arguments — the
modality of the values (``"CT"`` writes CT images, anything else secondary capture), the
display window, the segmentation algorithm, and each item's measurement (an area or a
volume, and a response category only where the family has one).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Optional, Sequence

from ..atomic import atomic_directory, write_json_atomic
from ..errors import InputError
from ..scan import Scan
from .images import SeriesText, image_series
from .seg import tumour_segmentation
from .sr import LesionMeasurement, measurement_report
from .study import Study, study_of

FIRST_SERIES_NUMBER = 9001   # after a scanner's own numbers: the export sorts last
SR_FILE = "measurements_SR.dcm"
INDEX_FILE = "dicom_index.json"


@dataclasses.dataclass(frozen=True)
class ExportItem:
    """One image to export, with its tumour mask and measurement when it has them."""

    key: str                                  # file-name safe: "T2_pCR"
    image: Scan
    text: SeriesText
    mask: Optional[Scan] = None
    measurement: Optional[LesionMeasurement] = None


def write_dicom_export(out: str | os.PathLike, items: Sequence[ExportItem], *,
                       reference: Scan, modality: str, display_range: tuple[float, float],
                       algorithm: str = "nnU-Net", algorithm_version: str = "",
                       overwrite: bool = False) -> dict[str, Any]:
    """Write ``items`` into the folder ``out``; returns the index (also ``dicom_index.json``).

    ``reference``: the input scan the export derives from (its DICOM study, or made-up
    identifiers for a non-DICOM input: `study_of`)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise InputError(out, "exists and is not an empty folder (choose another folder or "
                              "allow overwriting)")
    keys = [item.key for item in items]
    if len(set(keys)) != len(keys):
        raise ValueError(f"export keys must be unique: {keys}")
    for item in items:
        if item.mask is not None and tuple(item.mask.shape) != tuple(item.image.shape):
            raise InputError(item.mask.name, f"the tumour mask of {item.key} has the grid "
                                             f"{item.mask.shape}, its image {item.image.shape}: "
                                             "a SEG must lie on the image it was made from")
        if item.measurement is not None and item.mask is None:
            raise ValueError(f"{item.key}: a measurement needs the mask it was made from")
    study = study_of(reference)          # raises before anything is written
    with atomic_directory(out) as staging:
        index = _write(staging, items, study, modality=modality,
                       display_range=display_range, algorithm=algorithm,
                       algorithm_version=algorithm_version)
        write_json_atomic(staging / INDEX_FILE, index)
    return index


def _write(folder: Path, items: Sequence[ExportItem], study: Study, *, modality: str,
           display_range, algorithm: str, algorithm_version: str) -> dict[str, Any]:
    from pydicom.uid import generate_uid

    number = FIRST_SERIES_NUMBER
    index: dict[str, Any] = {
        "study_instance_uid": study.study_uid, "patient_id": study.patient_id,
        "frame_of_reference_uid": study.frame_of_reference_uid,
        "synthetic_identifiers": study.synthetic_ids,
        "source": str(study.source) if study.source else None, "series": []}
    measured, evidence = [], []
    for item in items:
        n = item.image.shape[0] if item.image.ndim == 3 else 1
        series_uid = generate_uid()
        datasets = image_series(item.image, study, item.text, modality=modality,
                                display_range=display_range, series_uid=series_uid,
                                series_number=number, sop_uids=[generate_uid()
                                                                for _ in range(n)])
        (folder / item.key).mkdir()
        files = []
        for k, ds in enumerate(datasets):
            name = f"{item.key}/IM{k + 1:04d}.dcm"
            ds.save_as(folder / name, enforce_file_format=True)
            files.append(name)
        entry = {"key": item.key, "kind": "image", "series_number": number,
                 "series_instance_uid": series_uid, "sop_class_uid": str(datasets[0].SOPClassUID),
                 "description": datasets[0].SeriesDescription, "files": files,
                 "synthetic": item.text.synthetic}
        index["series"].append(entry)
        number += 1
        if item.mask is None:
            continue
        seg = tumour_segmentation(
            item.mask, datasets, series_uid=generate_uid(), series_number=number,
            sop_uid=generate_uid(), algorithm=algorithm, algorithm_version=algorithm_version,
            description=f"tumour mask of {item.text.description}")
        name = f"{item.key}_tumour_SEG.dcm"
        seg.save_as(folder / name, enforce_file_format=True)
        index["series"].append({"key": item.key, "kind": "seg", "series_number": number,
                                "series_instance_uid": str(seg.SeriesInstanceUID),
                                "sop_instance_uid": str(seg.SOPInstanceUID),
                                "description": str(seg.SeriesDescription), "files": [name],
                                "source_series_instance_uid": series_uid})
        number += 1
        evidence.extend([*datasets, seg])
        if item.measurement is not None:
            measured.append((item.measurement, seg, item.image.ndim == 2))
    if measured:
        synthetic = any(item.text.synthetic for item in items)
        sr = measurement_report(
            measured, evidence, series_uid=generate_uid(), series_number=number,
            sop_uid=generate_uid(), algorithm=algorithm, algorithm_version=algorithm_version,
            description=("nacsim tumour sizes of SYNTHETIC follow-ups" if synthetic
                         else "nacsim tumour sizes"))
        sr.save_as(folder / SR_FILE, enforce_file_format=True)
        index["series"].append({"key": "measurements", "kind": "sr", "series_number": number,
                                "series_instance_uid": str(sr.SeriesInstanceUID),
                                "sop_instance_uid": str(sr.SOPInstanceUID),
                                "description": str(sr.SeriesDescription), "files": [SR_FILE]})
    return index
