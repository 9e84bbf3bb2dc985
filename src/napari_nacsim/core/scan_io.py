"""Reading and writing scans: NIfTI files, DICOM series folders and 2D images.

Every failure to read becomes a one-line `InputError` naming the file. Writing produces a
NIfTI file plus a JSON provenance sidecar (``scan.nii.gz`` -> ``scan.json``), each written
atomically, and refuses to write over the file a scan was read from.

What a file declares (shape, voxel type, number of DICOM slices) is checked before any voxel
is read, so that a small compressed file that would inflate to gigabytes (a "decompression
bomb"), a 4D series or complex data is refused at once, without the memory it would cost.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .. import __version__
from .atomic import atomic_path, write_json_atomic
from .errors import InputError
from .scan import IMAGE, LABELS, Scan, affine_from_spacing

NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_2D_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
# DICOM files often have no suffix at all; a folder is read as a DICOM series.
DICOM_SUFFIXES = (".dcm", ".ima", "")

# The largest scan nacsim reads: 2**28 voxels, e.g. a 512 x 512 x 1024 CT (1 GiB as float32).
# Breast DCE-MRI volumes and chest CTs are a few 10**7 voxels; a file declaring more is not a
# scan of this kind (or is a decompression bomb) and is refused before its voxels are read.
MAX_VOXELS = 2 ** 28
# A colour 2D image whose channels differ by at most this fraction of full scale everywhere
# is a grey image saved as colour (screenshots, JPEG exports) and is read as grey.
GREY_TOLERANCE = 0.02

# Which DICOM series to read from a folder holding several: a SeriesInstanceUID or a series
# number. Set by the CLI's --dicom-series for the duration of one command (`dicom_series`).
_DICOM_SERIES: contextvars.ContextVar[str | None] = contextvars.ContextVar("dicom_series",
                                                                           default=None)


@contextlib.contextmanager
def dicom_series(choice: str | None) -> Iterator[None]:
    """Within this block, DICOM folders are read as their series ``choice`` (UID or number)."""
    token = _DICOM_SERIES.set(str(choice) if choice is not None else None)
    try:
        yield
    finally:
        _DICOM_SERIES.reset(token)


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
    return full_suffix(path) in NIFTI_SUFFIXES + IMAGE_2D_SUFFIXES or is_dicom_file(path)


def is_dicom_file(path: str | os.PathLike) -> bool:
    """A ``.dcm``/``.ima`` file, or a file of any name with the DICOM preamble ("DICM" at
    byte 128). Such a file stands for its whole series (the way to pick one series out of a
    folder holding several)."""
    path = Path(path)
    if not path.is_file():
        return False
    if full_suffix(path) in (".dcm", ".ima"):
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


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
        elif is_dicom_file(path):
            scan = _read_dicom_series(path.parent, one_file=path)
        else:
            raise InputError(path, f"unsupported file type {suffix or '(no suffix)'!r}; nacsim "
                                   "reads NIfTI (.nii, .nii.gz), DICOM folders and 2D images "
                                   f"({', '.join(IMAGE_2D_SUFFIXES)})")
    # nacsim's sidecars sit beside the NIfTI/image files it writes; DICOM has none.
    sidecar = read_sidecar(path) if path.is_file() and not is_dicom_file(path) else {}
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


def _check_declared(path: Path, shape: tuple[int, ...], dtype: np.dtype,
                    what: str = "image") -> tuple[int, ...]:
    """Refuse, from a header alone, what cannot be a scan nacsim reads; returns the shape
    with trailing single-size axes dropped (a 2D image stored as x, y, 1)."""
    shape = tuple(int(n) for n in shape)
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    if dtype.fields is not None or dtype.kind == "c":
        kind = "complex" if dtype.kind == "c" else f"multi-component ({dtype})"
        raise InputError(path, f"voxels are {kind}; nacsim needs one real grey level per voxel "
                               "(save the magnitude or one component as a real-valued image)")
    if len(shape) not in (2, 3):
        raise InputError(path, f"{len(shape)}D {what} with shape {shape}; nacsim needs a 2D "
                               "image or a 3D volume (split 4D series into one file per phase)")
    voxels = int(np.prod(shape, dtype=np.int64))
    if voxels > MAX_VOXELS:
        gib = voxels * max(dtype.itemsize, 4) / 2 ** 30  # read as float32 at least
        raise InputError(path, f"declares {shape} = {voxels:,} voxels ({gib:.1f} GiB in "
                               f"memory), more than nacsim's limit of {MAX_VOXELS:,} voxels "
                               "for one scan; not a scan of this kind, or a damaged header")
    return shape


def _read_nifti(path: Path) -> Scan:
    import nibabel as nib

    try:
        img = nib.load(str(path))  # reads the header only
    except Exception as err:  # nibabel/gzip/zlib raise many types for damaged files
        raise InputError(path, f"cannot read NIfTI ({_first_line(err)}); the file is corrupt "
                               "or truncated") from None
    shape = _check_declared(path, img.header.get_data_shape(), img.header.get_data_dtype())
    try:
        data = np.asanyarray(img.dataobj)  # reads the voxels: truncation shows up here
        affine = img.affine
    except Exception as err:  # noqa: BLE001 - as above
        raise InputError(path, f"cannot read NIfTI ({_first_line(err)}); the file is corrupt "
                               "or truncated") from None
    data = data.reshape(shape)  # a single slice (x, y, 1) is a 2D image (e.g. a MIP)
    # NIfTI stores (x, y[, z]); nacsim arrays are (z, y, x) / (y, x).
    array = np.ascontiguousarray(data.T)
    if not np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32, copy=False)
    return Scan(array=array, affine=affine, source=path,
                provenance={"format": "nifti"})


@contextlib.contextmanager
def _itk_quiet() -> Iterator[None]:
    """ITK prints its warnings (e.g. "Non uniform sampling or missing slices") straight to
    stderr; nacsim checks those conditions itself and reports them as one-line errors."""
    import SimpleITK as sitk

    previous = sitk.ProcessObject_GetGlobalWarningDisplay()
    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject_SetGlobalWarningDisplay(previous)


def _dicom_header(path: str | os.PathLike):
    """A SimpleITK reader holding one DICOM file's header (no pixel data read)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except Exception as err:  # noqa: BLE001 - GDCM errors are RuntimeError subclasses
        raise InputError(path, f"cannot read DICOM header ({_first_line(err)})") from None
    return reader


def _tag(header, key: str) -> str:
    return header.GetMetaData(key).strip() if header.HasMetaDataKey(key) else ""


def _dicom_series_in(folder: Path) -> list[dict[str, Any]]:
    """The series in ``folder``: UID, number, description, modality and (sorted) files."""
    import SimpleITK as sitk

    try:
        with _itk_quiet():
            uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
            files = {uid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
                     for uid in uids}
    except Exception as err:  # noqa: BLE001
        raise InputError(folder, f"cannot scan folder for DICOM ({_first_line(err)})") from None
    series = []
    for uid in uids:
        first = _dicom_header(files[uid][0])
        series.append({"uid": uid, "number": _tag(first, "0020|0011"),
                       "description": _tag(first, "0008|103e"),
                       "modality": _tag(first, "0008|0060"), "files": list(files[uid])})

    def order(s):  # by series number, as a scanner console lists them
        return (int(s["number"]) if s["number"].lstrip("-").isdigit() else 10 ** 9, s["uid"])

    return sorted(series, key=order)


def _describe_series(series: list[dict[str, Any]]) -> str:
    parts = []
    for s in series:
        label = f"number {s['number']}" if s["number"] else "no number"
        what = ", ".join(x for x in (s["modality"], f"{len(s['files'])} files") if x)
        desc = f" '{s['description']}'" if s["description"] else ""
        parts.append(f"{label}{desc} ({what}, UID {s['uid']})")
    return "; ".join(parts)


def _choose_series(folder: Path, series: list[dict[str, Any]],
                   one_file: Path | None) -> dict[str, Any]:
    """The documented rule: a file given stands for its series; else the series chosen with
    `dicom_series` (UID or number); else the folder's only series; else refuse with the list."""
    if one_file is not None:
        target = one_file.resolve()
        for s in series:
            if target in {Path(f).resolve() for f in s["files"]}:
                return s
        raise InputError(one_file, "is not part of a readable DICOM series in its folder")
    choice = _DICOM_SERIES.get()
    if choice is not None:
        matches = [s for s in series if choice in (s["uid"], s["number"])]
        if len(matches) == 1:
            return matches[0]
        problem = f"several DICOM series have number {choice}; choose one by UID" if matches \
            else f"has no DICOM series {choice!r}"
        raise InputError(folder, f"{problem}; it holds: {_describe_series(series)}")
    if len(series) == 1:
        return series[0]
    raise InputError(folder, f"holds {len(series)} DICOM series: {_describe_series(series)}. "
                             "Choose one (CLI: --dicom-series NUMBER or UID) or open one of "
                             "its files instead of the folder")


def _floats(header, key: str) -> np.ndarray | None:
    try:
        values = np.array([float(v) for v in _tag(header, key).split("\\")])
    except ValueError:
        return None
    return values if values.size else None


def _check_slice_geometry(folder: Path, files: list[str], headers: list) -> None:
    """Refuse a series whose slices do not lie on one regular grid: ITK would stack them at
    their mean spacing and every voxel of the volume would be misplaced (a missing slice
    makes the volume shorter than the patient, with only a warning)."""
    sizes = {tuple(h.GetSize()[:2]) for h in headers}
    if len(sizes) > 1:
        raise InputError(folder, f"slices of one series have different sizes {sorted(sizes)}")
    positions = [_floats(h, "0020|0032") for h in headers]
    orientations = [_floats(h, "0020|0037") for h in headers]
    if any(p is None or p.size != 3 for p in positions) or \
            any(o is None or o.size != 6 for o in orientations):
        return  # no slice geometry to check (ITK falls back to the files' own order)
    if np.ptp(np.array(orientations), axis=0).max() > 1e-3:
        raise InputError(folder, "slices of one series have different orientations (two "
                                 "acquisitions in one series?)")
    normal = np.cross(orientations[0][:3], orientations[0][3:])
    along = np.array([p @ normal for p in positions])
    order = np.argsort(along)
    gaps = np.diff(along[order])
    names = [Path(files[i]).name for i in order]
    if gaps.min() < 1e-3:
        k = int(np.argmin(gaps))
        raise InputError(folder, f"slices {names[k]} and {names[k + 1]} lie at the same "
                                 f"position ({along[order][k]:.2f} mm): duplicated files or "
                                 "two acquisitions in one series")
    step = float(np.median(gaps))
    off = np.flatnonzero(np.abs(gaps - step) > max(0.02, 0.01 * step))
    if off.size:
        k = int(off[0])
        raise InputError(folder, f"slice spacing is not uniform: {step:.3g} mm between most "
                                 f"slices but {gaps[k]:.3g} mm between {names[k]} and "
                                 f"{names[k + 1]} ({off.size} irregular gap(s) in "
                                 f"{len(files)} slices; a missing slice?). nacsim does not "
                                 "stretch such a series onto a regular grid")


def _read_dicom_series(folder: Path, one_file: Path | None = None) -> Scan:
    import SimpleITK as sitk

    all_series = _dicom_series_in(folder)
    if not all_series:
        if one_file is not None:   # the file the user gave is the one to name
            raise InputError(one_file, "is not a readable DICOM image (no DICOM series "
                                       "found in its folder)")
        raise InputError(folder, "no DICOM series found in this folder")
    chosen = _choose_series(folder, all_series, one_file)
    files = chosen["files"]
    headers = [_dicom_header(f) for f in files]
    # What the headers declare, before any pixel is read (see `MAX_VOXELS`).
    if any(h.GetNumberOfComponents() != 1 for h in headers):
        raise InputError(folder, "DICOM series has colour/vector voxels; nacsim needs grey levels")
    width, height = headers[0].GetSize()[:2]
    depth = sum(max(1, h.GetSize()[2] if len(h.GetSize()) > 2 else 1) for h in headers)
    _check_declared(folder, (width, height, depth), np.dtype(np.float32), "DICOM series")
    if len(files) > 1:
        _check_slice_geometry(folder, files, headers)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        with _itk_quiet():
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
    return Scan(array=np.ascontiguousarray(array), affine=affine, source=one_file or folder,
                provenance={"format": "dicom", "series_uid": chosen["uid"],
                            "series_number": chosen["number"],
                            "series_description": chosen["description"],
                            "n_series_in_folder": len(all_series), "n_files": len(files)})


def _read_image_2d(path: Path) -> Scan:
    import imageio.v3 as iio

    try:
        declared = iio.improps(path)  # the header: shape and type, no pixels decoded
    except Exception as err:  # imageio raises per-plugin error types
        raise InputError(path, f"cannot read image ({_first_line(err)}); the file is corrupt "
                               "or truncated") from None
    shape = tuple(declared.shape)
    colour = len(shape) == 3 and shape[-1] in (2, 3, 4)  # grey+alpha, RGB, RGBA
    _check_declared(path, shape[:-1] if colour else shape, np.dtype(declared.dtype))
    try:
        data = np.asarray(iio.imread(path))
    except Exception as err:  # noqa: BLE001 - as above
        raise InputError(path, f"cannot read image ({_first_line(err)}); the file is corrupt "
                               "or truncated") from None
    if data.ndim == 3 and data.shape[-1] in (2, 3, 4):
        data = _grey_from_colour(data, path)
    if data.ndim != 2:
        raise InputError(path, f"expected a 2D greyscale image, got shape {data.shape}")
    # Plain image files carry no voxel size: nacsim assumes 1 mm and records that it did.
    return Scan(array=data.astype(np.float32), affine=affine_from_spacing((1.0, 1.0)),
                source=path, provenance={"format": "image2d", "spacing_known": False})


def _grey_from_colour(data: np.ndarray, path: Path) -> np.ndarray:
    """A grey image saved with colour channels (grey+alpha, RGB, RGBA), as grey levels.

    Screenshots and exports often store grey images as RGB(A): if the colour channels agree
    within `GREY_TOLERANCE` of full scale and any alpha is opaque, their mean is the image.
    A truly colour image (an overlay, a colour map, burned-in annotations) is refused: its
    grey levels are not the scan's intensities.
    """
    full = float(np.iinfo(data.dtype).max) if data.dtype.kind in "ui" else 1.0
    channels = data.shape[-1]
    if channels in (2, 4):
        alpha = data[..., -1]
        if np.any(alpha < full):
            share = 100.0 * np.count_nonzero(alpha < full) / alpha.size
            raise InputError(path, f"has transparent pixels ({share:.1f} % of the image not "
                                   "opaque); save it without an alpha channel")
        data = data[..., :-1]
    if data.shape[-1] == 1:
        return data[..., 0]
    rgb = data.astype(np.float32)
    spread = rgb.max(axis=-1) - rgb.min(axis=-1)
    if float(spread.max()) > GREY_TOLERANCE * full:
        share = 100.0 * np.count_nonzero(spread > GREY_TOLERANCE * full) / spread.size
        raise InputError(path, f"is a colour image (red, green and blue differ by up to "
                               f"{spread.max():g} of {full:g} in {share:.1f} % of pixels); "
                               "nacsim needs a greyscale scan: export it in grey levels, "
                               "without colour maps or annotations")
    return rgb.mean(axis=-1)


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
