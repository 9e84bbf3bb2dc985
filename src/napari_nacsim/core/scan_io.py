"""Reading and writing scans: NIfTI files, DICOM series folders and 2D images.

Every failure to read becomes a one-line `InputError` naming the file. Writing produces a
NIfTI file plus a JSON provenance sidecar (``scan.nii.gz`` -> ``scan.json``), each written
atomically, and refuses to write over the file a scan was read from.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .atomic import atomic_path, write_json_atomic
from .errors import InputError
from .scan import IMAGE, LABELS, Scan, affine_from_spacing

NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_2D_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
# DICOM files often have no suffix at all; a folder is read as a DICOM series.
DICOM_SUFFIXES = (".dcm", ".ima", "")


def full_suffix(path: str | os.PathLike) -> str:
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def sidecar_path(path: str | os.PathLike) -> Path:
    """``dir/scan.nii.gz`` -> ``dir/scan.json``."""
    path = Path(path)
    suffix = full_suffix(path)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    return path.with_name(stem + ".json")


def is_readable_path(path: str | os.PathLike) -> bool:
    """Cheap check (no reading) of whether nacsim has a reader for ``path``."""
    path = Path(path)
    if path.is_dir():
        return any(p.is_file() and full_suffix(p) in DICOM_SUFFIXES for p in path.iterdir())
    return full_suffix(path) in NIFTI_SUFFIXES + IMAGE_2D_SUFFIXES


# --- reading -------------------------------------------------------------------------------

def read_scan(path: str | os.PathLike, kind: str | None = None) -> Scan:
    """Read a NIfTI file, a DICOM series folder, or a 2D image into a `Scan`.

    ``kind`` forces ``"image"`` or ``"labels"``; by default it comes from the sidecar written
    by nacsim, else ``"image"``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file or folder does not exist")
    if path.is_dir():
        scan = _read_dicom_series(path)
    else:
        suffix = full_suffix(path)
        if suffix in NIFTI_SUFFIXES:
            scan = _read_nifti(path)
        elif suffix in IMAGE_2D_SUFFIXES:
            scan = _read_image_2d(path)
        else:
            raise InputError(path, f"unsupported file type {suffix or '(no suffix)'!r}; nacsim "
                                   "reads NIfTI (.nii, .nii.gz), DICOM folders and 2D images "
                                   f"({', '.join(IMAGE_2D_SUFFIXES)})")
    sidecar = read_sidecar(path) if path.is_file() else {}
    kind = kind or sidecar.get("kind", IMAGE)
    provenance = {**sidecar.get("provenance", {}), **scan.provenance}
    if sidecar.get("synthetic"):
        provenance["synthetic"] = True
    array = scan.array
    if kind == LABELS:
        array = _as_labels(array, path)
    return Scan(array=array, affine=scan.affine, kind=kind, source=path, provenance=provenance)


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    try:
        payload = json.loads(side.read_text())
    except (OSError, ValueError) as err:
        raise InputError(side, f"provenance sidecar is not valid JSON ({err})") from None
    if not isinstance(payload, dict):
        raise InputError(side, "provenance sidecar is not a JSON object")
    return payload


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _read_nifti(path: Path) -> Scan:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)  # reads the voxels: truncation shows up here
        affine = img.affine
    except Exception as err:  # nibabel/gzip/zlib raise many types for damaged files
        raise InputError(path, f"cannot read NIfTI ({_first_line(err)}); the file is corrupt "
                               "or truncated") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[..., 0]  # a single slice is a 2D image (e.g. a MIP)
    if data.ndim not in (2, 3):
        raise InputError(path, f"{data.ndim}D image with shape {data.shape}; nacsim needs a 2D "
                               "image or a 3D volume (split 4D series into one file per phase)")
    # NIfTI stores (x, y[, z]); nacsim arrays are (z, y, x) / (y, x).
    array = np.ascontiguousarray(data.T)
    if not np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32, copy=False)
    return Scan(array=array, affine=affine, source=path,
                provenance={"format": "nifti"})


def _read_dicom_series(folder: Path) -> Scan:
    import SimpleITK as sitk

    try:
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except Exception as err:  # noqa: BLE001 - GDCM errors are RuntimeError subclasses
        raise InputError(folder, f"cannot scan folder for DICOM ({_first_line(err)})") from None
    if not series:
        raise InputError(folder, "no DICOM series found in this folder")
    # Several series in one folder: take the one with most slices, and say so in provenance.
    files_by_series = {sid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid)
                       for sid in series}
    series_id = max(files_by_series, key=lambda sid: len(files_by_series[sid]))
    files = files_by_series[series_id]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except Exception as err:  # noqa: BLE001
        raise InputError(folder, f"cannot read DICOM series ({_first_line(err)})") from None
    array = sitk.GetArrayFromImage(image)  # already (z, y, x)
    if array.ndim == 4:
        raise InputError(folder, "DICOM series has colour/vector voxels; nacsim needs grey levels")
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # ITK/DICOM are LPS, NIfTI is RAS
    if array.shape[0] == 1:
        array = array[0]
    if not np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32, copy=False)
    return Scan(array=np.ascontiguousarray(array), affine=affine, source=folder,
                provenance={"format": "dicom", "series_uid": series_id,
                            "n_series_in_folder": len(series), "n_files": len(files)})


def _read_image_2d(path: Path) -> Scan:
    import imageio.v3 as iio

    try:
        data = np.asarray(iio.imread(path))
    except Exception as err:  # imageio raises per-plugin error types
        raise InputError(path, f"cannot read image ({_first_line(err)}); the file is corrupt "
                               "or truncated") from None
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        rgb = data[..., :3].astype(np.float32)
        data = rgb[..., 0] if np.allclose(rgb[..., 0], rgb[..., 1:]) else rgb @ [0.299, 0.587,
                                                                                 0.114]
    if data.ndim != 2:
        raise InputError(path, f"expected a 2D greyscale image, got shape {data.shape}")
    # Plain image files carry no voxel size: nacsim assumes 1 mm and records that it did.
    return Scan(array=data.astype(np.float32), affine=affine_from_spacing((1.0, 1.0)),
                source=path, provenance={"format": "image2d", "spacing_known": False})


def _as_labels(array: np.ndarray, path: Path) -> np.ndarray:
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise InputError(path, "label image contains NaN/Inf")
        if not np.allclose(array, np.round(array)):
            raise InputError(path, "label image has non-integer values")
    if array.size and (array.min() < 0 or array.max() > 65535):
        raise InputError(path, "label values must lie in 0..65535")
    return array.astype(np.uint8 if array.size == 0 or array.max() < 256 else np.uint16)


# --- writing -------------------------------------------------------------------------------

def write_scan(scan: Scan, path: str | os.PathLike, *, overwrite: bool = False,
               extra: dict[str, Any] | None = None) -> Path:
    """Write ``scan`` as NIfTI plus its JSON sidecar, atomically; returns the NIfTI path.

    Refuses (with `InputError`) to write over the scan's own source or anything it was
    derived from, and over existing files unless ``overwrite``.
    """
    import nibabel as nib

    path = Path(path)
    if full_suffix(path) not in NIFTI_SUFFIXES:
        raise InputError(path, "output must end in .nii or .nii.gz")
    protected = {Path(p).resolve() for p in _inputs_of(scan)}
    for target in (path, sidecar_path(path)):
        if target.resolve() in protected:
            raise InputError(target, "refusing to write over an input file")
        if target.exists() and not overwrite:
            raise InputError(target, "already exists (choose another output or allow overwrite)")

    array = scan.array
    if scan.kind == LABELS:
        array = _as_labels(array, path)
    elif array.dtype != np.float32 and not np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32)
    data = array.T if scan.ndim == 3 else array.T[:, :, None]  # back to NIfTI (x, y, z)
    img = nib.Nifti1Image(np.ascontiguousarray(data), scan.affine)
    img.set_qform(scan.affine, code=1)
    img.set_sform(scan.affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    synthetic = bool(scan.provenance.get("synthetic"))
    img.header["descrip"] = (b"nacsim SYNTHETIC" if synthetic else b"nacsim")

    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    write_json_atomic(sidecar_path(path), sidecar_for(scan, extra))
    return path


def sidecar_for(scan: Scan, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "written_by": f"nacsim {__version__}",
        "written_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "kind": scan.kind,
        "synthetic": bool(scan.provenance.get("synthetic")),
        "shape": list(scan.shape),
        "spacing_mm": list(scan.spacing),
        "axes": "zyx" if scan.ndim == 3 else "yx",
        "orientation": scan.orientation,
        "provenance": scan.provenance,
        **(extra or {}),
    }


def _inputs_of(scan: Scan) -> list[str]:
    paths = [str(scan.source)] if scan.source else []
    for key in ("derived_from", "inputs"):
        value = scan.provenance.get(key)
        if isinstance(value, str):
            paths.append(value)
        elif isinstance(value, (list, tuple)):
            paths.extend(str(v) for v in value)
    return paths
