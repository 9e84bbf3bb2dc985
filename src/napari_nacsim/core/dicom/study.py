"""Whose images these are: the patient, study and frame of reference of an export.

An export made from a DICOM input belongs to the input's patient and study and shares its
frame of reference, so a PACS files it beside the real images and a viewer lines them up;
only the series and instances are new. The input's own DICOM header is the source of these
attributes: a scan read from a DICOM series records the series UID and its folder in its
provenance (`scan_io`), and every scan derived from it (the model-grid MIP or crop, the
generated follow-ups) inherits that record.

An input that was not DICOM (a phantom, a NIfTI file) gets identifiers that are made up and
say so: patient name ``SYNTHETIC^PHANTOM`` (or ``SYNTHETIC^UNIDENTIFIED`` for a NIfTI file of
an unknown patient), patient ID ``SYNTHETIC-...``, no birth date, no study date. They are
derived from the input image's hash, so every export of one input lands in one synthetic
patient and study with one frame of reference.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import InputError
from ..scan import Scan

# What a DICOM input must carry for derived objects to be filed with it and line up with it:
# the study and patient keys a PACS files by, and the geometry nacsim reads the voxel grid
# from (without it the grid SimpleITK reports is a default, not the patient's).
REQUIRED_SOURCE_ATTRIBUTES = ("StudyInstanceUID", "PatientID", "FrameOfReferenceUID",
                              "ImagePositionPatient", "ImageOrientationPatient",
                              "PixelSpacing")
PHANTOM_NAME = "SYNTHETIC^PHANTOM"
UNIDENTIFIED_NAME = "SYNTHETIC^UNIDENTIFIED"


@dataclasses.dataclass(frozen=True)
class Study:
    """The patient/study attributes every exported instance copies, and its frame of
    reference. ``header`` holds the Patient and General Study attributes (a DICOM input's
    own header, or the made-up ones); ``source`` is the DICOM file they were read from."""

    header: "object"                 # pydicom Dataset
    frame_of_reference_uid: str
    synthetic_ids: bool
    source: Optional[Path] = None

    @property
    def patient_id(self) -> str:
        return str(self.header.PatientID)

    @property
    def study_uid(self) -> str:
        return str(self.header.StudyInstanceUID)


def study_of(scan: Scan) -> Study:
    """The study an export of ``scan`` (an input or anything derived from it) belongs to.

    Raises `InputError` naming the attribute when a DICOM input lacks one of
    `REQUIRED_SOURCE_ATTRIBUTES`, or naming the folder when the DICOM series it was made
    from cannot be found any more (nacsim does not file a real patient's images under made-up
    identifiers)."""
    source = dicom_source_file(scan)
    if source is None:
        return _synthetic_study(scan)
    header = _read_header(source)
    for keyword in REQUIRED_SOURCE_ATTRIBUTES:
        value = header.get(keyword)
        if value is None or value == "" or (hasattr(value, "__len__") and len(value) == 0):
            raise InputError(source, f"DICOM attribute {keyword} is missing or empty; nacsim "
                                     "needs it to file derived images with the input study "
                                     "and line them up with it")
    return Study(header=header, frame_of_reference_uid=str(header.FrameOfReferenceUID),
                 synthetic_ids=False, source=source)


def dicom_source_file(scan: Scan) -> Optional[Path]:
    """One file of the DICOM series ``scan`` was read or derived from, or None when it does
    not come from DICOM. The series is the one the provenance names (``series_uid``), found
    in the folder recorded as the scan's source or origin."""
    prov = scan.provenance
    uid = prov.get("series_uid")
    if not uid:
        return None
    place = prov.get("derived_from") or (str(scan.source) if scan.source else None)
    if not place:
        raise InputError(scan.name, f"comes from DICOM series {uid}, but its folder is not "
                                    "recorded; export it from the DICOM folder itself")
    folder = Path(place)
    folder = folder if folder.is_dir() else folder.parent
    found = _series_file(folder, str(uid))
    if found is None:
        raise InputError(folder, f"the DICOM series {uid} the input was made from is not "
                                 "there any more; nacsim needs its header to file the export "
                                 "with the patient's study")
    return found


def _series_file(folder: Path, uid: str) -> Optional[Path]:
    import pydicom

    if not folder.is_dir():
        return None
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True,
                                 specific_tags=["SeriesInstanceUID"])
        except Exception:  # noqa: BLE001 - not a DICOM file: keep looking
            continue
        if str(ds.get("SeriesInstanceUID", "")) == uid:
            return path
    return None


def _read_header(path: Path):
    import pydicom

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for damaged files
        raise InputError(path, f"cannot read DICOM header ({type(err).__name__}: "
                               f"{str(err).splitlines()[0] if str(err) else ''})") from None


def _synthetic_study(scan: Scan) -> Study:
    """Made-up identifiers, derived from the image (the same input gives the same synthetic
    patient, study and frame of reference) and unmistakable as made up."""
    from pydicom import Dataset
    from pydicom.uid import generate_uid

    prov = scan.provenance
    phantom = prov.get("patient") if prov.get("synthetic") else None
    digest = hashlib.sha256(np.ascontiguousarray(scan.array).tobytes())
    digest.update(np.asarray(scan.affine, float).tobytes())
    key = digest.hexdigest()
    header = Dataset()
    header.PatientName = PHANTOM_NAME if phantom else UNIDENTIFIED_NAME
    header.PatientID = f"SYNTHETIC-{phantom}" if phantom else f"SYNTHETIC-{key[:10]}"
    header.PatientBirthDate = ""
    header.PatientSex = ""
    header.PatientIdentityRemoved = "YES"  # no real identity is in these files
    header.DeidentificationMethod = "nacsim: made-up identifiers (not from a patient record)"
    header.StudyInstanceUID = generate_uid(entropy_srcs=["nacsim study", key])
    header.StudyID = "SYNTHETIC"
    header.StudyDate = ""
    header.StudyTime = ""
    header.AccessionNumber = ""
    header.ReferringPhysicianName = ""
    header.StudyDescription = "nacsim SYNTHETIC study (phantom or non-DICOM input)"
    # highdicom copies the Patient and Study modules by the IOD of the dataset they come
    # from: the made-up header poses as a secondary capture (it is never written itself)
    header.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    header.SOPInstanceUID = generate_uid(entropy_srcs=["nacsim header", key])
    return Study(header=header, synthetic_ids=True,
                 frame_of_reference_uid=generate_uid(entropy_srcs=["nacsim frame", key]))
