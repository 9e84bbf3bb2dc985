"""napari reader: NIfTI files, DICOM series folders and 2D images (with nacsim sidecars),
and nacsim's DICOM exports: a SEG as labels, an SR's measurements (`dicom_layers`)."""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import InputError
from ..core.scan import LABELS, Scan
from ..core.scan_io import full_suffix, is_dicom_file, is_readable_path, read_scan
from .dicom_layers import (SEG, SR, describe_report, header_uid, marked_synthetic,
                           measured_segmentations, measurements_by_segmentation, object_kind,
                           objects_in, report_of, segmentation_layer)
from .layers import guess_kind, scan_to_layer_data

NULL_LAYER = [(None,)]  # napari's sentinel for "read, but nothing to show"


MAX_FOLDER_ENTRIES = 200  # a folder with more entries than this is not a patient's scans


def get_reader(path):
    """Return a reader for ``path`` or ``None`` to decline (napari then asks another plugin).

    Every folder is taken: a DICOM series is read as one volume; any other folder (a patient
    folder of NIfTI scans, an empty folder, one with a broken or looping link) opens what it
    can as layers and says why the rest cannot (napari's own answer was only "no reader")."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        if Path(path).is_dir():
            return read_layers
        readable = is_readable_path(path)
    except OSError:
        return None
    return read_layers if readable else None


def read_layers(path: str | os.PathLike | list) -> list:
    """Read one scan (or a DICOM SEG or SR, or a folder) into layer data; a bad file gives
    a notification, not a traceback."""
    from napari.utils.notifications import show_error

    if isinstance(path, (list, tuple)):
        path = path[0]
    folder = Path(path)
    try:
        if folder.is_dir():
            # not one DICOM series: a folder of scans, or an export with SEG/SR files
            if not is_readable_path(folder) or objects_in(sorted(folder.iterdir())):
                return read_folder(folder)
            dicom_object = None
        else:
            dicom_object = object_kind(folder)
    except OSError as err:
        show_error(f"nacsim could not open {folder}: {err.strerror or err}")
        return NULL_LAYER
    try:
        if dicom_object is not None:
            return read_dicom_object(folder, dicom_object)
        scan = _read(Path(path))
    except InputError as err:  # the same one-line reason the CLI gives
        show_error(f"nacsim could not open {err}")
        return NULL_LAYER
    except MemoryError:  # headers are checked first (scan_io.MAX_VOXELS); this is the rest
        show_error(f"nacsim could not open {path}: not enough memory to load it")
        return NULL_LAYER
    return [scan_to_layer_data(scan)]


def _read(path: Path) -> Scan:
    """One scan as its layer shows it: labels where the file is a mask, synthetic where a
    DICOM series says so."""
    scan = read_scan(path)
    kind = guess_kind(scan)
    if kind != scan.kind:
        scan = read_scan(path, kind=kind)
    _check_displayable(scan)
    return marked_synthetic(scan)


def read_dicom_object(path: Path, kind: str) -> list:
    """A SEG file as a labels layer; an SR file as a notification of its measurements and
    the SEGs beside it that it measures (with the measurements in their features)."""
    from napari.utils.notifications import show_info

    if kind == SEG:
        return [segmentation_layer(path)]
    report = report_of(path)
    segs = measured_segmentations(report, path.parent)
    show_info(describe_report(report) + ("" if segs else
                                         "\n(the segmentations it measures are not in its "
                                         "folder)"))
    measured = measurements_by_segmentation([report])
    return [segmentation_layer(seg, measured) for seg in segs] or NULL_LAYER


def read_folder(folder: Path) -> list:
    """A folder that is not one DICOM series: each scan in it (NIfTI files, 2D images, DICOM
    series sub-folders) as a layer, sidecars and manifests skipped; one notification says
    what could not be opened and why (or that the folder holds no scans)."""
    from napari.utils.notifications import show_error, show_info, show_warning

    try:
        entries = sorted(folder.iterdir())
    except OSError as err:
        show_error(f"nacsim could not open {folder}: {err.strerror or err}")
        return NULL_LAYER
    # hidden files, provenance sidecars, cohort manifests and dicom_index.json are skipped
    looked = [e for e in entries[:MAX_FOLDER_ENTRIES]
              if not e.name.startswith(".") and not e.name.lower().endswith(".json")]
    objects = objects_in(looked)
    problems, reports = [], []
    for entry in (e for e, kind in objects.items() if kind == SR):
        try:
            reports.append(report_of(entry))
        except InputError as err:
            problems.append(f"{entry.name}: {err.problem}")
    measured = measurements_by_segmentation(reports)
    images, labels, series = [], [], set()
    for entry in looked:
        if objects.get(entry) == SR:
            continue
        try:
            if objects.get(entry) == SEG:
                labels.append(segmentation_layer(entry, measured))
                continue
            why = _unreadable(entry)
            if why:
                problems.append(f"{entry.name}: {why}")
                continue
            if entry.is_file() and is_dicom_file(entry):
                # a DICOM image file stands for its whole series: open each series once
                uid = header_uid(entry, "SeriesInstanceUID")
                if uid and uid in series:
                    continue
                series.add(uid)
            scan = _read(entry)
        except InputError as err:
            problems.append(f"{entry.name}: {err.problem}")
            continue
        except (OSError, MemoryError) as err:
            problems.append(f"{entry.name}: {getattr(err, 'strerror', None) or err}")
            continue
        (labels if scan.kind == LABELS else images).append(scan_to_layer_data(scan))
    layers = images + labels   # masks are drawn over the images they outline
    for report in reports:
        show_info(describe_report(report))
    if len(entries) > MAX_FOLDER_ENTRIES:
        problems.append(f"only the first {MAX_FOLDER_ENTRIES} of {len(entries)} entries "
                        "were looked at")
    if not layers and not reports:
        what = f"; {'; '.join(problems[:4])}{'; …' if len(problems) > 4 else ''}" \
            if problems else ""
        show_error(f"nacsim: {folder} holds no scan nacsim can open (NIfTI files, DICOM "
                   f"series, DICOM SEG/SR, 2D images){what}")
        return NULL_LAYER
    if problems:
        show_warning(f"nacsim opened {len(layers)} scan(s) of {folder.name}; not opened: "
                     f"{'; '.join(problems[:4])}{'; …' if len(problems) > 4 else ''}")
    return layers or NULL_LAYER


def _unreadable(entry: Path) -> str:
    """Why an entry of a folder is no scan nacsim reads ("" if it may be one)."""
    try:
        if entry.is_symlink() and not entry.exists():
            return "a broken link or a link loop"
        if entry.is_dir():
            try:
                if entry.resolve() == entry.parent.resolve() or \
                        entry.resolve() in entry.parent.resolve().parents:
                    return "a link back into its own folder (a loop)"
            except (OSError, RuntimeError):
                return "a link loop"
            return "" if is_readable_path(entry) else "a folder that is not a DICOM series"
        if not is_readable_path(entry):
            return f"not a scan ({full_suffix(entry) or 'no extension'})"
    except OSError as err:
        return err.strerror or str(err)
    return ""


def _check_displayable(scan: Scan) -> None:
    if scan.array.size == 0 or 0 in scan.shape:
        raise InputError(scan.name, f"image is empty (shape {scan.shape})")
    if scan.array.dtype.kind == "f":
        import numpy as np

        bad = int((~np.isfinite(scan.array)).sum())
        if bad:
            raise InputError(scan.name, f"contains {bad} NaN/Inf voxels")
