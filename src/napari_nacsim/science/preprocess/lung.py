"""The ImmunoDiff model input: a fixed-size CT box around the tumour, HU-windowed.

ImmunoDiff crops the CT to 96 x 96 x 16 voxels "with [3.0, 3.0, 0.5] spacing". Read as
(x, y, z) that is a 288 x 288 mm field but only 8 mm (16 slices of 0.5 mm) in z, thinner
than most lung tumours and than most clinical CT slices (1-5 mm), so it is probably not what
was meant and cannot be reproduced from the text. nacsim's default is (z, y, x) =
(16, 96, 96) voxels at (4.0, 3.0, 3.0) mm: 64 x 288 x 288 mm, which holds a whole tumour and
its lobe at the in-plane spacing the paper gives. Both are parameters.

The box is centred on the tumour mask's centre of mass and axis-aligned in LPS, whatever the
CT's own orientation, so that every crop the model sees has the same layout: array (z, y, x)
runs inferior->superior, anterior->posterior, patient's right->left. That is the storage
order of DICOM and of nacsim's phantoms, which napari shows the radiological way. The CT is
resampled into the box (with anti-aliasing, since the box voxels are usually coarser than
the CT's); outside the CT's field of view the box holds air (-1000 HU) and, in masks,
background (0). Lobe and vessel masks are cut with the same `CropBox` through `crop_to_box`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ...core.errors import InputError
from ...core.scan import (IMAGE, LABELS, Scan, check_image_values, require_finite, require_ndim,
                          require_same_geometry)
from .resample import resample

CROP_SHAPE = (16, 96, 96)          # (z, y, x) voxels, as in the paper (96 x 96 x 16)
CROP_SPACING = (4.0, 3.0, 3.0)     # (z, y, x) mm; see the module docstring
PAPER_SPACING_AS_WRITTEN = (3.0, 3.0, 0.5)
AIR_HU = -1000.0

# (level, width) in HU.
HU_WINDOWS = {"lung": (-600.0, 1500.0), "mediastinal": (40.0, 400.0)}


@dataclasses.dataclass(frozen=True, eq=False)  # holds an array: compare fields explicitly
class CropBox:
    """A target grid: ``shape`` (z, y, x) voxels placed in the world by ``affine`` (the
    voxel-to-RAS-world matrix, as `Scan.affine`)."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        sx, sy, sz = np.linalg.norm(self.affine[:3, :3], axis=0)
        return float(sz), float(sy), float(sx)

    @property
    def centre_ras(self) -> np.ndarray:
        middle = (np.array(self.shape[::-1], float) - 1) / 2
        return self.affine[:3, :3] @ middle + self.affine[:3, 3]

    @classmethod
    def around(cls, centre_ras, shape=CROP_SHAPE, spacing=CROP_SPACING) -> CropBox:
        """An LPS-aligned box of ``shape`` voxels of ``spacing`` mm (both (z, y, x)) whose
        centre is at the world point ``centre_ras`` (mm, RAS like every affine)."""
        shape = tuple(int(n) for n in shape)
        spacing = tuple(float(s) for s in spacing)
        if len(shape) != 3 or min(shape) < 1:
            raise InputError("crop shape", f"expected three positive sizes (z, y, x), got {shape}")
        if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise InputError("crop spacing", f"expected three positive sizes in mm (z, y, x), "
                                             f"got {spacing}")
        affine = np.diag([-spacing[2], -spacing[1], spacing[0], 1.0])  # index x -> L, y -> P
        middle = (np.array(shape[::-1], float) - 1) / 2
        affine[:3, 3] = np.asarray(centre_ras, float) - affine[:3, :3] @ middle
        return cls(shape, affine)

    @classmethod
    def of(cls, scan: Scan) -> CropBox:
        """The box a crop was made with (a crop's grid is its box)."""
        return cls(scan.shape, scan.affine.copy())


def tumour_box(tumour_mask: Scan, *, shape=CROP_SHAPE, spacing=CROP_SPACING) -> CropBox:
    """The crop box centred on the centre of mass of the mask's non-zero voxels."""
    require_ndim(tumour_mask, 3)
    require_finite(tumour_mask, f"{tumour_mask.name} (tumour mask)")
    index_zyx = np.argwhere(tumour_mask.array != 0)
    if len(index_zyx) == 0:
        raise InputError(tumour_mask.name, "tumour mask is empty")
    centre_xyz = index_zyx.mean(axis=0)[::-1]
    centre_ras = tumour_mask.affine[:3, :3] @ centre_xyz + tumour_mask.affine[:3, 3]
    return CropBox.around(centre_ras, shape, spacing)


def crop_to_box(scan: Scan, box: CropBox | Scan, *, labels: bool | None = None,
                fill: float | None = None) -> Scan:
    """Resample ``scan`` into ``box`` (a `CropBox`, or an earlier crop whose grid to reuse).

    ``labels`` defaults to ``scan.kind`` (a mask read from a plain NIfTI file is an "image":
    pass ``labels=True``); label maps keep their exact values. ``fill`` is used outside the
    scan: -1000 HU (air) for images, 0 for label maps, by default.
    """
    return _crop(scan, box, labels=labels, fill=fill)


def _crop(scan: Scan, box: CropBox | Scan, *, labels: bool | None, fill: float | None,
          **details) -> Scan:
    box = CropBox.of(box) if isinstance(box, Scan) else box
    require_ndim(scan, 3)
    labels = scan.kind == LABELS if labels is None else labels
    if fill is None:
        fill = 0 if labels else AIR_HU
    array = resample(scan, box.shape, box.affine, labels=labels, fill=fill)
    return scan.derive(array, step="crop", affine=box.affine,
                       box_shape=list(box.shape), box_spacing_mm=list(box.spacing),
                       box_centre_ras_mm=[round(float(v), 4) for v in box.centre_ras],
                       fill=float(fill), interpolation="labelwise-linear" if labels else "linear",
                       **details)


def crop_around_tumour(ct: Scan, tumour_mask: Scan, *, shape=CROP_SHAPE,
                       spacing=CROP_SPACING) -> tuple[Scan, Scan]:
    """CT and tumour mask cut to a fixed ``shape`` (z, y, x) at ``spacing`` (z, y, x, mm)
    around the tumour's centre of mass. Cut other masks of the same patient with
    ``crop_to_box(mask, ct_crop)``.

    The crop records in its provenance whether the tumour touches the box's border (a tumour
    larger than the box is cut off).
    """
    require_ndim(ct, 3)
    if ct.kind != IMAGE:
        raise InputError(ct.name, "the CT must be an image, got a label map")
    check_image_values(ct, f"{ct.name} (CT)")
    # A mask on another grid is another scan's mask (or was resampled): its crop would be
    # wrong or empty, so it is refused rather than cut at whatever world position it has.
    require_same_geometry(ct, tumour_mask, "the tumour mask must be on the CT's grid; is it "
                                           "the mask of this scan?")
    box = tumour_box(tumour_mask, shape=shape, spacing=spacing)
    mask_crop = _crop(tumour_mask, box, labels=True, fill=0)
    if not np.any(mask_crop.array):
        raise InputError(tumour_mask.name, f"tumour is smaller than one crop voxel "
                                           f"({box.spacing} mm); use a finer crop spacing")
    touches = any(np.any(np.take(mask_crop.array, i, axis=a)) for a in range(3) for i in (0, -1))
    ct_crop = _crop(ct, box, labels=False, fill=AIR_HU, tumour_touches_border=bool(touches))
    return ct_crop, mask_crop


def hu_window(ct: Scan, level: float = HU_WINDOWS["lung"][0],
              width: float = HU_WINDOWS["lung"][1]) -> Scan:
    """Map Hounsfield units to [0, 1] (float32): ``level - width/2`` -> 0, ``level + width/2``
    -> 1, clipped. Default: the lung window (-600, 1500); ``hu_window(ct,
    *HU_WINDOWS["mediastinal"])`` for soft tissue (40, 400)."""
    if ct.kind != IMAGE:
        raise InputError(ct.name, "HU windowing needs a CT image, got a label map")
    if not (np.isfinite(level) and np.isfinite(width) and width > 0):
        raise InputError("HU window", f"need a finite level and a positive width, got level "
                                      f"{level}, width {width}")
    require_finite(ct, f"{ct.name} (CT)")  # a constant crop (all air) is fine to window
    low = float(level) - float(width) / 2
    out = (ct.array.astype(np.float32) - np.float32(low)) / np.float32(width)
    np.clip(out, 0.0, 1.0, out=out)
    return ct.derive(out, step="hu_window", level=float(level), width=float(width))

