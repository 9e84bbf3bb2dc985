"""`Scan`: a voxel array with its geometry and where it came from.

Conventions (used everywhere in nacsim):
- ``array`` is in numpy/napari axis order: ``(z, y, x)`` for volumes, ``(y, x)`` for 2D
  images such as maximum-intensity projections.
- ``affine`` is the NIfTI voxel-to-world matrix (RAS+, millimetres) for the index order
  ``(x, y, z)``, i.e. ``world = affine @ [x, y, z, 1]``. A 2D scan keeps a 4x4 affine whose
  third index axis is the one it was projected along (or a unit slice).
- ``spacing`` is reported in ``array`` axis order, so it can be used directly as a napari
  layer ``scale``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

IMAGE = "image"
LABELS = "labels"


@dataclasses.dataclass(frozen=True)
class Scan:
    array: np.ndarray
    affine: np.ndarray
    kind: str = IMAGE
    source: Path | None = None
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)
    # For a scan made in memory: the file (or layer) it was made from and the steps since,
    # so that a message about it names what the user gave (see `name`).
    lineage: tuple[str, ...] = ()

    def __post_init__(self):
        if self.array.ndim not in (2, 3):
            raise InputError(self.name, f"expected a 2D or 3D image, got {self.array.ndim}D")
        affine = np.asarray(self.affine, dtype=float)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise InputError(self.name, "voxel-to-world affine is not a finite 4x4 matrix")
        if np.any(np.linalg.norm(affine[:3, :3], axis=0) <= 0):
            raise InputError(self.name, "voxel spacing is zero")
        object.__setattr__(self, "affine", affine)
        if self.kind not in (IMAGE, LABELS):
            raise ValueError(f"unknown scan kind {self.kind!r}")

    # --- geometry -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        if self.source:
            return str(self.source)
        if self.lineage:  # e.g. "post.nii.gz after subtraction, axial_mip"
            origin, steps = self.lineage[0], self.lineage[1:]
            return f"{origin} after {', '.join(steps)}" if steps else origin
        layer = self.provenance.get("layer_name")  # a napari layer (plugin.layers)
        return f"layer '{layer}'" if layer else "<in-memory scan>"

    @property
    def ndim(self) -> int:
        return self.array.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def spacing_xyz(self) -> tuple[float, float, float]:
        """Voxel size in mm along the index axes x, y, z (NIfTI order)."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm in ``array`` axis order (napari ``scale``)."""
        sx, sy, sz = self.spacing_xyz
        return (sz, sy, sx) if self.ndim == 3 else (sy, sx)

    @property
    def orientation(self) -> str:
        """Anatomical direction each index axis (x, y, z) points to, e.g. ``"RAS"``."""
        import nibabel as nib

        return "".join(nib.orientations.aff2axcodes(self.affine))

    @property
    def voxel_volume_mm3(self) -> float:
        sx, sy, sz = self.spacing_xyz
        return sx * sy * (sz if self.ndim == 3 else 1.0)

    def same_grid(self, other: Scan, atol: float = 1e-3) -> bool:
        return self.shape == other.shape and np.allclose(self.affine, other.affine, atol=atol)

    # --- derivation ------------------------------------------------------------------------
    def derive(self, array: np.ndarray, *, step: str | None = None, affine=None,
               kind: str | None = None, **details: Any) -> Scan:
        """A new scan made from this one; records the processing step in its provenance.

        The result has no ``source`` (it is not a file yet), and inherits this scan's history.
        """
        history = list(self.provenance.get("history", []))
        if step:
            history.append({"step": step, **details})
        provenance = {**self.provenance, "history": history}
        if self.source and "derived_from" not in provenance:
            provenance["derived_from"] = str(self.source)
        lineage = self.lineage if self.lineage and not self.source else (self.name,)
        if lineage == ("<in-memory scan>",):
            lineage = ()
        elif step:
            lineage = (*lineage, step)
        return Scan(array=array, affine=self.affine if affine is None else affine,
                    kind=self.kind if kind is None else kind, provenance=provenance,
                    lineage=lineage)


def require_finite(scan: Scan, what: str | None = None) -> None:
    """Raise `InputError` if ``scan`` has NaN/Inf voxels (a constant image is fine here: an
    empty mask, an all-air crop)."""
    arr = scan.array
    if np.issubdtype(arr.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise InputError(what or scan.name, f"contains {bad} NaN/Inf voxels")


def check_image_values(scan: Scan, what: str | None = None) -> None:
    """Raise `InputError` unless ``scan`` holds a non-empty, finite, non-constant image."""
    subject = what or scan.name
    arr = scan.array
    if arr.size == 0 or 0 in arr.shape:
        raise InputError(subject, f"image is empty (shape {arr.shape})")
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
        raise InputError(subject, f"unsupported voxel type {arr.dtype}")
    require_finite(scan, subject)
    if scan.kind == IMAGE and arr.min() == arr.max():
        raise InputError(subject, f"image is constant (every voxel is {arr.flat[0]})")


def require_ndim(scan: Scan, ndim: int, what: str | None = None) -> None:
    if scan.ndim != ndim:
        raise InputError(what or scan.name, f"expected a {ndim}D image, got {scan.ndim}D "
                                            f"with shape {scan.shape}")


def require_same_grid(a: Scan, b: Scan, what: str = "images") -> None:
    """Mismatched shapes or spacing between images that must share a grid."""
    if a.shape != b.shape:
        raise InputError(b.name, f"shape {b.shape} does not match {a.name} {a.shape} ({what})")
    if not np.allclose(a.spacing, b.spacing, rtol=1e-3, atol=1e-4):
        raise InputError(b.name, f"spacing {tuple(round(s, 4) for s in b.spacing)} mm does not "
                                 f"match {a.name} {tuple(round(s, 4) for s in a.spacing)} mm "
                                 f"({what})")


def require_same_geometry(reference: Scan, other: Scan, what: str) -> None:
    """``other`` must lie on ``reference``'s voxel grid: same shape, spacing, origin and axis
    directions (a mask drawn on an image). Position tolerance: 1 % of the smallest voxel."""
    require_same_grid(reference, other, what)
    tolerance = 0.01 * min(reference.spacing)
    origin_a, origin_b = reference.affine[:3, 3], other.affine[:3, 3]
    if not np.allclose(origin_a, origin_b, atol=tolerance):
        raise InputError(other.name, f"origin {np.round(origin_b, 2).tolist()} mm does not match "
                                     f"{reference.name} {np.round(origin_a, 2).tolist()} mm "
                                     f"({what})")
    axes_a = reference.affine[:3, :3] / np.linalg.norm(reference.affine[:3, :3], axis=0)
    axes_b = other.affine[:3, :3] / np.linalg.norm(other.affine[:3, :3], axis=0)
    cosines = np.clip(np.sum(axes_a * axes_b, axis=0), -1.0, 1.0)
    angle = float(np.degrees(np.arccos(cosines.min())))
    if angle > 0.05:
        raise InputError(other.name, f"voxel axes ({other.orientation}) point up to "
                                     f"{angle:.1f} degrees away from those of {reference.name} "
                                     f"({reference.orientation}) ({what})")


def affine_from_spacing(spacing_zyx, origin_xyz=(0.0, 0.0, 0.0)) -> np.ndarray:
    """RAS affine for an axis-aligned grid; ``spacing_zyx`` in array order (2 or 3 values)."""
    spacing = tuple(float(s) for s in spacing_zyx)
    if len(spacing) == 2:
        spacing = (1.0, *spacing)
    sz, sy, sx = spacing
    affine = np.diag([sx, sy, sz, 1.0])
    affine[:3, 3] = origin_xyz
    return affine
