"""A scan as a new DICOM image series: CT images for CT values, secondary capture otherwise.

Which storage class, and why:

- A **CT crop** (values in Hounsfield units) is written as classic single-frame **CT Image
  Storage**, one instance per slice, built with pydicom on highdicom's `SOPClass` (Patient,
  Study, Series, Equipment, SOP Common) plus the CT modules: Frame of Reference, Image Plane
  (spacing, position, orientation), Image Pixel, CT Image (rescale to HU) and VOI LUT (the
  family's window). Viewers (3D Slicer, OHIF, PACS workstations) stack such a series into a
  volume, apply CT windows to it and overlay a SEG on it; a derived CT is what scanners
  write for their own reformats. highdicom has no CT writer.
- Anything else (the breast **MIP**, normalised intensities) is written with highdicom's
  `SCImage` (**Secondary Capture**, the IOD for images no modality acquired; Conversion
  Type ``SYN`` = synthetic image), plus the modules the SC IOD allows for geometry: Frame
  of Reference and Image Plane. An MR Image instance would have to claim MR acquisition
  parameters (scanning sequence, sequence variant: type 1) that a projection of normalised
  values never had.

Every instance says what it is (``ImageType`` DERIVED\\SECONDARY, series description, image
comments, derivation description) and one whose pixels are synthetic also carries
``BurnedInAnnotation YES`` and a visible "SYNTHETIC" label burned into a corner of every
frame (`burn_in_label`).
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Sequence

import numpy as np

from ... import __version__
from ..scan import Scan
from .study import Study

MANUFACTURER = "nacsim"
LABEL_TEXT = "SYNTHETIC"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
HU_RANGE = (-32768, 32767)           # int16 stored values, slope 1: HU as they are
SC_LEVELS = 65535                    # uint16 stored values over the image's value range


@dataclasses.dataclass(frozen=True)
class SeriesText:
    """What a PACS shows about a series: its description (64 characters at most), the image
    comments and the derivation description (model hash, seed, scenario)."""

    description: str
    comments: str
    derivation: str
    synthetic: bool


def image_series(scan: Scan, study: Study, text: SeriesText, *, modality: str,
                 display_range: tuple[float, float], series_uid: str, series_number: int,
                 sop_uids: Sequence[str]) -> list:
    """``scan`` as a list of DICOM datasets (one per slice of a volume, one for a 2D
    image), in slice order. ``modality`` "CT" writes CT images (values in HU); any other
    writes secondary capture images. ``sop_uids`` gives one new UID per instance."""
    volume = scan.array if scan.ndim == 3 else scan.array[None]
    if text.synthetic:
        volume = np.stack([burn_in_label(plane, display_range) for plane in volume])
    geometry = plane_geometry(scan)
    write = _ct_instance if modality == "CT" else _sc_instance
    return [write(plane, study, text, geometry[k], display_range, series_uid,
                  series_number, sop_uids[k], k + 1, scan.ndim)
            for k, plane in enumerate(volume)]


def ascii_text(text: str) -> str:
    """``text`` in plain ASCII (DICOM's default character repertoire, which every viewer
    shows): nacsim's symbols spelled out ("T2 · HER2−" -> "T2 - HER2-"), accents dropped."""
    import unicodedata

    for symbol, plain in _PLAIN.items():
        text = text.replace(symbol, plain)
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


_PLAIN = {"·": "-", "−": "-", "–": "-", "—": "-", "±": "+/-", "≥": ">=", "≤": "<=",
          "²": "2", "³": "3", "×": "x", "µ": "u", "Δ": "change "}


# --- geometry ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PlaneGeometry:
    position: tuple[float, float, float]        # ImagePositionPatient (LPS, mm)
    orientation: tuple[float, ...]              # ImageOrientationPatient: row, column cosines
    spacing: tuple[float, float]                # PixelSpacing: between rows, between columns
    # SliceThickness: the voxel size along the third axis; for a 2D projection the one its
    # affine records (nacsim keeps the projected axis' spacing there, see core.scan)
    thickness: float


def plane_geometry(scan: Scan) -> list[PlaneGeometry]:
    """The DICOM plane of every slice of ``scan`` (one for a 2D image).

    nacsim's affine maps voxel indices (x, y, z) to RAS millimetres; DICOM's patient
    coordinates are LPS, so x and y change sign. Rows of a DICOM frame run along the array's
    x axis (columns index x), columns along y; slice k sits at index z = k."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(scan.affine, float)
    sx, sy, sz = scan.spacing_xyz
    row = lps[:3, 0] / sx
    col = lps[:3, 1] / sy
    orientation = tuple(float(round(v, 8)) for v in (*row, *col))
    n = scan.shape[0] if scan.ndim == 3 else 1
    planes = []
    for k in range(n):
        position = lps @ np.array([0.0, 0.0, float(k), 1.0])
        planes.append(PlaneGeometry(position=tuple(float(round(v, 6)) for v in position[:3]),
                                    orientation=orientation,
                                    spacing=(float(round(sy, 8)), float(round(sx, 8))),
                                    thickness=float(round(sz, 6))))
    return planes


# --- the burned-in label ------------------------------------------------------------------

def burn_in_label(plane: np.ndarray, display_range: tuple[float, float],
                  text: str = LABEL_TEXT) -> np.ndarray:
    """``plane`` with ``text`` burned into the corner that holds the least structure.

    The glyphs take the brightest value of the image or its display window (white in the
    default window), outlined one pixel wide in the darkest (readable on any background).
    The font is Pillow's built-in bitmap font: the same pixels on every machine. The corner
    with the smallest standard deviation under the label is chosen, so that the label
    covers background rather than anatomy where the image has such a corner."""
    from PIL import Image, ImageDraw, ImageFont
    from scipy import ndimage

    font = ImageFont.load_default_imagefont()
    left, top, right, bottom = font.getbbox(text)
    canvas = Image.new("L", (right + 2, bottom + 2))
    ImageDraw.Draw(canvas).text((1, 1), text, font=font, fill=255)
    glyphs = np.asarray(canvas) > 0
    rows = np.flatnonzero(glyphs.any(axis=1))
    cols = np.flatnonzero(glyphs.any(axis=0))
    glyphs = np.pad(glyphs[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], 1)
    outline = ndimage.binary_dilation(glyphs, iterations=1) & ~glyphs
    h, w = glyphs.shape
    out = np.array(plane, copy=True)
    H, W = out.shape
    if h + 2 <= H and w + 2 <= W:
        corners = [(1, 1), (1, W - w - 1), (H - h - 1, 1), (H - h - 1, W - w - 1)]
    else:  # an image smaller than the label: as much of it as fits, top left
        h, w = min(h, H), min(w, W)
        glyphs, outline = glyphs[:h, :w], outline[:h, :w]
        corners = [(0, 0)]
    y, x = min(corners, key=lambda c: float(np.std(out[c[0]:c[0] + h, c[1]:c[1] + w])))
    bright = max(float(np.max(plane)), float(display_range[1]))
    dark = min(float(np.min(plane)), float(display_range[0]))
    box = out[y:y + h, x:x + w]
    box[outline] = dark
    box[glyphs] = bright
    return out


# --- instances ----------------------------------------------------------------------------

def _common(ds, study: Study, text: SeriesText, geometry: PlaneGeometry,
            display_range: tuple[float, float], instance_number: int) -> None:
    """What CT and SC instances share: patient and study, geometry, labelling, window."""
    from pydicom.valuerep import DS

    ds.copy_patient_and_study_information(study.header)
    head = study.header
    if "SpecificCharacterSet" in head:  # the copied names are in the input's character set
        ds.SpecificCharacterSet = head.SpecificCharacterSet
    # General Series, type 2C (required for a paired body part, which dciodvfy assumes
    # without a Body Part Examined): the input's value where it has one, else empty
    ds.Laterality = head.get("Laterality", "")
    now = datetime.datetime.now()
    ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.SeriesDescription = ascii_text(text.description)[:64]
    ds.ImageComments = ascii_text(text.comments)[:10240]
    ds.DerivationDescription = ascii_text(text.derivation)[:1024]
    ds.BurnedInAnnotation = "YES" if text.synthetic else "NO"
    ds.RecognizableVisualFeatures = "NO"
    ds.LossyImageCompression = "00"
    ds.ManufacturerModelName = "nacsim"
    ds.SoftwareVersions = __version__
    ds.InstanceNumber = instance_number
    # Frame of Reference and Image Plane
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = [DS(v, auto_format=True) for v in geometry.position]
    ds.ImageOrientationPatient = [DS(v, auto_format=True) for v in geometry.orientation]
    ds.PixelSpacing = [DS(v, auto_format=True) for v in geometry.spacing]
    ds.SliceThickness = DS(geometry.thickness, auto_format=True)
    lo, hi = (float(v) for v in display_range)
    ds.WindowCenter = DS((lo + hi) / 2, auto_format=True)
    ds.WindowWidth = DS(max(hi - lo, 1e-6), auto_format=True)


def _ct_instance(plane, study, text, geometry, display_range, series_uid, series_number,
                 sop_uid, instance_number, ndim):
    from highdicom import SOPClass

    ds = SOPClass(study_instance_uid=study.study_uid, series_instance_uid=series_uid,
                  series_number=series_number, sop_instance_uid=sop_uid,
                  sop_class_uid=CT_STORAGE, instance_number=instance_number,
                  modality="CT", manufacturer=MANUFACTURER,
                  transfer_syntax_uid="1.2.840.10008.1.2.1")
    _common(ds, study, text, geometry, display_range, instance_number)
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.PatientPosition = study.header.get("PatientPosition", "")  # type 2C for CT
    ds.AcquisitionNumber = ""            # type 2: nothing was acquired
    ds.KVP = ""                          # type 2: no tube voltage
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(n) for n in plane.shape)
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    stored = np.clip(np.rint(plane), *HU_RANGE).astype(np.int16)
    ds.PixelData = stored.tobytes()
    return ds


def _sc_instance(plane, study, text, geometry, display_range, series_uid, series_number,
                 sop_uid, instance_number, ndim):
    from highdicom.sc import SCImage

    lo, hi = float(np.min(plane)), float(np.max(plane))
    slope = (hi - lo) / SC_LEVELS if hi > lo else 1.0
    stored = np.rint((plane - lo) / slope).clip(0, SC_LEVELS).astype(np.uint16)
    head = study.header
    ds = SCImage(pixel_array=stored, photometric_interpretation="MONOCHROME2",
                 bits_allocated=16, coordinate_system="PATIENT",
                 study_instance_uid=study.study_uid, series_instance_uid=series_uid,
                 series_number=series_number, sop_instance_uid=sop_uid,
                 instance_number=instance_number, manufacturer=MANUFACTURER,
                 patient_id=str(head.PatientID), patient_name=head.get("PatientName"),
                 patient_orientation=_patient_orientation(geometry.orientation),
                 pixel_spacing=geometry.spacing,
                 transfer_syntax_uid="1.2.840.10008.1.2.1")
    _common(ds, study, text, geometry, display_range, instance_number)
    ds.ConversionType = "SYN"            # SC Equipment: "synthetic image"
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    # Modality LUT: the stored levels back to the scan's values
    ds.RescaleIntercept = _ds(lo)
    ds.RescaleSlope = _ds(slope)
    ds.RescaleType = "US"                # unspecified units (normalised intensities)
    return ds


def _ds(value: float):
    from pydicom.valuerep import DS

    return DS(float(value), auto_format=True)


def _patient_orientation(cosines: Sequence[float]) -> tuple[str, str]:
    """Patient Orientation (0020,0020) of the row and column directions: the dominant LPS
    axis each points to (``L``/``R``, ``P``/``A``, ``H``/``F``)."""
    names = (("L", "R"), ("P", "A"), ("H", "F"))

    def letter(vec):
        k = int(np.argmax(np.abs(vec)))
        return names[k][0] if vec[k] > 0 else names[k][1]

    return letter(np.array(cosines[:3])), letter(np.array(cosines[3:]))
