"""nacsim's DICOM objects as napari layers: a SEG as a labels layer, an SR's measurements
on the segments they measure (docs/dicom.md).

- A **DICOM SEG** (`core.dicom.read_segmentation`) becomes a labels layer on its own
  geometry, which is its image series' (the same scale as that series read by the reader),
  named after its file and segment label; its features table names each segment, so that
  napari's status bar says what is under the cursor.
- A **DICOM SR** (TID 1500, `core.dicom.read_measurements`) is shown as a notification (one
  line per measurement group) and its measurements join the features and metadata of the
  SEG layers whose segments they reference, where those SEGs are in the same folder (nacsim
  writes them side by side).
- An image series whose Series Description says SYNTHETIC (every generated series nacsim
  writes, and a phantom's input) is marked synthetic, so that its layer name says so.

Errors are `InputError`s naming the file (the reader turns them into one notification).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from ..core.dicom import describe_measurements, dicom_object_kind, read_measurements, \
    read_segmentation
from ..core.scan import Scan
from ..core.scan_io import is_dicom_file
from .layers import METADATA_KEY, scan_to_layer_data

SEG, SR = "SEG", "SR"
SYNTHETIC_MARK = "SYNTHETIC"   # what nacsim's DICOM writers put in every synthetic series


def object_kind(path: Path) -> Optional[str]:
    """"SEG" or "SR" for a DICOM Segmentation or Structured Report file, else None (an
    image, a folder, not DICOM)."""
    try:
        if not path.is_file() or not is_dicom_file(path):
            return None
    except OSError:
        return None
    return dicom_object_kind(path)


def objects_in(entries: Iterable[Path]) -> dict[Path, str]:
    """The SEG and SR files among ``entries`` (a folder's files), by path."""
    found = {}
    for entry in entries:
        if entry.name.startswith("."):
            continue
        kind = object_kind(entry)
        if kind is not None:
            found[entry] = kind
    return found


def marked_synthetic(scan: Scan) -> Scan:
    """``scan`` with ``synthetic`` in its provenance when it was read from a DICOM series
    whose description says SYNTHETIC (DICOM carries no nacsim sidecar: the series
    description is where the export says it)."""
    prov = scan.provenance
    if prov.get("synthetic") or prov.get("format") not in ("dicom", "dicom-seg"):
        return scan
    if SYNTHETIC_MARK not in str(prov.get("series_description", "")).upper():
        return scan
    return dataclasses.replace(scan, provenance={**prov, "synthetic": True})


def measurements_by_segmentation(reports: Sequence[Mapping[str, Any]]
                                 ) -> dict[str, list[dict[str, Any]]]:
    """SEG SOP Instance UID -> the measurement groups (of ``reports``) that reference it."""
    found: dict[str, list[dict[str, Any]]] = {}
    for report in reports:
        for group in report["groups"]:
            ref = group.get("segmentation")
            if ref:
                found.setdefault(ref["sop_instance_uid"], []).append(group)
    return found


def segmentation_layer(path: Path, measurements: Optional[Mapping[str, list]] = None
                       ) -> tuple:
    """A SEG file as labels layer data; ``measurements`` (`measurements_by_segmentation`)
    adds the groups that reference it to its features and metadata."""
    scan = marked_synthetic(read_segmentation(path))
    segments: dict[int, str] = scan.provenance["segments"]
    groups = list((measurements or {}).get(scan.provenance["sop_instance_uid"], ()))
    data, kwargs, kind = scan_to_layer_data(scan, features=_features(segments, groups))
    # the file's name (its key: T2_pCR_tumour_SEG), what the segments are, and whether they
    # outline a synthetic image
    labels = ", ".join(segments[n] for n in sorted(segments))
    name = path.name.split(".")[0] + (f": {labels}" if labels else "")
    kwargs["name"] = f"{name} (synthetic)" if scan.provenance.get("synthetic") else name
    meta = kwargs["metadata"][METADATA_KEY]
    meta["segment_labels"] = {str(n): label for n, label in sorted(segments.items())}
    if groups:
        meta["measurements"] = groups
    return data, kwargs, kind


def _features(segments: Mapping[int, str], groups: Sequence[Mapping[str, Any]]
              ) -> dict[str, list]:
    """One row per segment (``index``: its label value): its label and, where an SR measured
    it, the tracking identifier, each measurement ("Area (mm2)") and evaluation."""
    numbers = sorted(segments)
    table: dict[str, list] = {"index": numbers, "segment": [segments[n] for n in numbers]}
    for group in groups:
        number = group["segmentation"].get("segment_number")
        if number is None and len(numbers) == 1:
            number = numbers[0]   # a planar group references a frame of a one-segment SEG
        if number not in numbers:
            continue
        row = numbers.index(number)
        values = {"measured": group["tracking"]}
        values.update({f"{m['name']} ({m['unit']})": round(m["value"], 4)
                       for m in group["measurements"]})
        values.update({e["name"]: e["value"] for e in group["evaluations"]})
        for column, value in values.items():
            table.setdefault(column, [None] * len(numbers))[row] = value
    return table


def report_of(path: Path) -> dict[str, Any]:
    """An SR's measurement report (`read_measurements`), its file recorded."""
    return {**read_measurements(path), "file": str(path)}


def describe_report(report: Mapping[str, Any]) -> str:
    """What the notification says: the file and one line per measurement group."""
    return f"nacsim: {Path(report['file']).name}: {describe_measurements(report)}"


def header_uid(path: Path, keyword: str) -> str:
    """One UID of a DICOM file's header ("" when it has none or cannot be read): which
    series an image file belongs to, which instance a SEG is."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[keyword])
    except Exception:  # noqa: BLE001 - the series reader then says what is wrong
        return ""
    return str(ds.get(keyword, ""))


def measured_segmentations(report: Mapping[str, Any], folder: Path) -> list[Path]:
    """The SEG files in ``folder`` that ``report``'s groups reference (nacsim writes an SR
    beside the SEGs it measures)."""
    wanted = set(measurements_by_segmentation([report]))
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [path for path, kind in objects_in(entries).items()
            if kind == SEG and header_uid(path, "SOPInstanceUID") in wanted]
