"""Reading nacsim's DICOM objects back: a SEG as a labels scan, an SR's measurements.

Image series are read by `scan_io` (SimpleITK/GDCM), like any DICOM series. A SEG is read
with highdicom into the labels volume on its own geometry (the plane positions and
orientation it shares with its source images), so it lies on the image series it was made
from. An SR's TID 1500 measurement groups become plain dictionaries: tracking identifier,
time point, each measurement with its unit, qualitative evaluations, and the SEG and segment
each group references.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import InputError
from ..scan import LABELS, Scan
from ..size_format import format_change_percent, format_diameter, format_size

SEG_CLASSES = {"1.2.840.10008.5.1.4.1.1.66.4": "SEG", "1.2.840.10008.5.1.4.1.1.66.7": "SEG"}
SR_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.22": "SR", "1.2.840.10008.5.1.4.1.1.88.33": "SR",
              "1.2.840.10008.5.1.4.1.1.88.34": "SR"}


def dicom_object_kind(path: str | os.PathLike) -> Optional[str]:
    """``"SEG"``, ``"SR"`` or ``None`` (an image, or not a DICOM file), from the header."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # noqa: BLE001 - not DICOM: the image readers decide
        return None
    uid = str(ds.get("SOPClassUID", ""))
    return SEG_CLASSES.get(uid) or SR_CLASSES.get(uid)


def read_segmentation(path: str | os.PathLike) -> Scan:
    """A DICOM SEG as a labels `Scan` (segment numbers as labels) on its own geometry."""
    import highdicom as hd

    path = Path(path)
    check_complete(path)
    try:
        seg = hd.seg.segread(path)
        volume = seg.get_volume(combine_segments=True)
    except Exception as err:  # noqa: BLE001 - highdicom/pydicom raise many types
        raise InputError(path, f"cannot read DICOM SEG ({type(err).__name__}: "
                               f"{_first_line(err)})") from None
    array = np.asarray(volume.array)              # (slices, rows, columns)
    lps = np.array(volume.affine, float)          # index (slice, row, column) -> LPS
    # slices run along the planes' normal (row direction x column direction), as nacsim
    # reads an image series (`scan_io`, GDCM's position sorter): the SEG then lies on its
    # image series read back; highdicom may stack them the other way round
    normal = np.cross(lps[:3, 2], lps[:3, 1])
    if array.shape[0] > 1 and float(np.dot(normal, lps[:3, 0])) < 0:
        array = array[::-1]
        lps[:3, 3] = lps[:3, 3] + (array.shape[0] - 1) * lps[:3, 0]
        lps[:3, 0] = -lps[:3, 0]
    # nacsim indexes (x, y, z) = (column, row, slice) and stores RAS
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = lps[:3, 2], lps[:3, 1], lps[:3, 0]
    affine[:3, 3] = lps[:3, 3]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    if array.shape[0] == 1:
        array = array[0]
    labels = array.astype(np.uint8 if array.max(initial=0) < 256 else np.uint16)
    segments = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    return Scan(array=np.ascontiguousarray(labels), affine=affine, kind=LABELS, source=path,
                provenance={"format": "dicom-seg", "series_uid": str(seg.SeriesInstanceUID),
                            "sop_instance_uid": str(seg.SOPInstanceUID),
                            "series_description": str(seg.get("SeriesDescription", "")),
                            "segments": segments,
                            "source_series_uids": [str(s.SeriesInstanceUID) for s in
                                                   seg.ReferencedSeriesSequence]})


def read_measurements(path: str | os.PathLike) -> dict[str, Any]:
    """The measurement groups of a TID 1500 SR: a dict with the document's description and
    a list of groups, each ``{"tracking", "time_point", "measurements": [{"name",
    "value", "unit"}], "evaluations": [{"name", "value"}] (e.g. the RECIST response),
    "finding": {name: value} (its type and category), "method", "segmentation":
    {"sop_instance_uid", and "segment_number" or "frame_number"}}``."""
    import highdicom as hd

    path = Path(path)
    check_complete(path)
    try:
        sr = hd.sr.srread(path)
        report = sr.content
        groups = [*report.get_planar_roi_measurement_groups(),
                  *report.get_volumetric_roi_measurement_groups()]
    except Exception as err:  # noqa: BLE001
        raise InputError(path, f"cannot read the DICOM SR as a TID 1500 measurement report "
                               f"({type(err).__name__}: {_first_line(err)})") from None
    out = []
    for group in groups:
        time_point = None
        for item in group[0].ContentSequence:
            if item.name == hd.sr.CodedConcept("C2348792", "UMLS", "Time Point"):
                time_point = str(item.value)
        method = group.method
        evaluations = group.get_qualitative_evaluations()
        out.append({
            "tracking": group.tracking_identifier, "tracking_uid": str(group.tracking_uid),
            "time_point": time_point,
            "measurements": [{"name": m.name.meaning, "value": float(m.value),
                              "unit": m.unit.value} for m in group.get_measurements()],
            "evaluations": [{"name": e.name.meaning, "value": e.value.meaning}
                            for e in evaluations if not _descriptive(e.name)],
            "finding": {e.name.meaning: e.value.meaning
                        for e in evaluations if _descriptive(e.name)},
            "method": method.meaning if method is not None else None,
            "segmentation": _segment_reference(group)})
    return {"description": str(sr.get("SeriesDescription", "")),
            "completion": str(sr.get("CompletionFlag", "")),
            "verification": str(sr.get("VerificationFlag", "")), "groups": out}


UNDEFINED_LENGTH = 0xFFFFFFFF


def check_complete(path: str | os.PathLike) -> None:
    """Refuse (`InputError`) a DICOM file cut short: one whose last element ends past the
    end of the file, or that ends inside an element's header. pydicom reads such a file
    without complaint where the cut falls inside the last element (an SR then loses its
    last measurements, silently). Files without the DICOM preamble and file meta group
    length, or with a deflated transfer syntax, are left to the reader."""
    import warnings

    import pydicom
    from pydicom.filereader import data_element_generator
    from pydicom.uid import UID

    path = Path(path)
    try:
        size = path.stat().st_size
        meta = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[
            "FileMetaInformationGroupLength"]).file_meta
        group_length = int(meta.get("FileMetaInformationGroupLength", 0))
        syntax = UID(str(meta.get("TransferSyntaxUID", "")))
        end = 132 + 12 + group_length          # the preamble, "DICM", the meta group
        if group_length and end > size:
            raise InputError(path, "DICOM file is cut short (inside its file meta "
                                   "information)")
        if not group_length or not syntax or syntax.is_deflated:
            return
        with open(path, "rb") as fp:
            if fp.read(132)[128:] != b"DICM":
                return
            fp.seek(end)
            with warnings.catch_warnings():
                # pydicom warns (and reads on) where a sequence's delimiter is missing
                warnings.simplefilter("error")
                # large values are skipped, not read: only their lengths are summed
                for raw in data_element_generator(fp, syntax.is_implicit_VR,
                                                  syntax.is_little_endian, defer_size=1024):
                    end = fp.tell() if raw.length == UNDEFINED_LENGTH else \
                        raw.value_tell + raw.length
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for damaged files
        raise InputError(path, f"damaged DICOM file ({type(err).__name__}: "
                               f"{_first_line(err)})") from None
    if end > size:
        raise InputError(path, f"DICOM file is cut short ({size} bytes, its elements need "
                               f"{end})")
    if end < size:
        raise InputError(path, f"DICOM file is cut short (it ends inside an element's "
                               f"header after byte {end})")


def describe_measurements(report: dict[str, Any]) -> str:
    """Lines a person reads: one per group, its measurements and evaluations. The numbers
    are written as the workspace's size table writes them (`measurement_text`); the report
    itself keeps them in full."""
    lines = [f"{report['description']} ({report['completion'].lower()}, "
             f"{report['verification'].lower()})"]
    for group in report["groups"]:
        parts = [f"{m['name']} {measurement_text(m['value'], m['unit'])}"
                 for m in group["measurements"]]
        parts += [f"{e['name']}: {e['value']}" for e in group["evaluations"]]
        lines.append(f"  {group['tracking']}: " + "; ".join(parts))
    return "\n".join(lines)


# UCUM codes of the SR's sizes -> the unit as every face writes it
_SIZE_UNITS = {"mm2": "mm²", "mL": "mL"}


def measurement_text(value: float, unit: str) -> str:
    """One SR measurement for a person, as the size table shows it: an area or volume by
    the one rule for sizes (`format_size`: "412 mm²", "3.27 mL"), the long axis by
    `format_diameter` ("31.2 mm"), a change from baseline by `format_change_percent`
    ("-42.6 %"); any other unit (an SR from elsewhere)
    to 4 significant digits."""
    if unit in _SIZE_UNITS:
        return format_size(value, _SIZE_UNITS[unit])
    if not math.isfinite(value):
        return "n/a"               # as `format_size` writes it
    if unit == "mm":
        return format_diameter(value)
    if unit == "%":
        return format_change_percent(value)
    return f"{value:.4g} {unit}"


def _descriptive(name) -> bool:
    """Whether a coded item of a measurement group describes the finding (its type or
    category, TID 1501) rather than evaluates it; highdicom lists both as evaluations."""
    return (str(name.value), str(name.scheme_designator)) in _FINDING_CODES


_FINDING_CODES = {("121071", "DCM"),      # Finding (the finding type: Neoplasm)
                  ("276214006", "SCT")}   # Finding category


def _segment_reference(group) -> Optional[dict[str, Any]]:
    """The SEG a measurement group references: ``{"sop_instance_uid", "segment_number"}``
    (a volumetric group: the whole segment) or ``{"sop_instance_uid", "frame_number"}``
    (a planar group: one frame of the SEG), from the group's IMAGE content items."""
    for item in group[0].get("ContentSequence", []):
        if item.get("ValueType") != "IMAGE":
            continue
        for sop in item.get("ReferencedSOPSequence", []):
            if str(sop.ReferencedSOPClassUID) not in SEG_CLASSES:
                continue
            found: dict[str, Any] = {"sop_instance_uid": str(sop.ReferencedSOPInstanceUID)}
            if "ReferencedSegmentNumber" in sop:
                found["segment_number"] = int(sop.ReferencedSegmentNumber)
            if "ReferencedFrameNumber" in sop:
                found["frame_number"] = int(sop.ReferencedFrameNumber)
            return found
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else ""
