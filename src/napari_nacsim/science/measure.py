"""Tumour size from a mask: area on 2D images (MIPs), volume on 3D crops, and the longest
diameter in mm (RECIST-style) on both.

The NAC paper measures tumour size on maximum-intensity projections, so the size of a 3D
breast tumour mask is the area of its axial projection (`projected_area_mm2`).

On top of the sizes (`measure_tumour`: total and per connected component) this module holds
the comparisons clinicians read:

- `size_change`: follow-up vs baseline, in absolute units and percent, plus the NAC paper's
  "size" number, the reduction relative to T0 (`reduction_percent`: 100 = vanished).
- `match_percent`: how well a generated follow-up's tumour size matches the real
  follow-up's, ``100 * min(generated, real) / max(generated, real)``. The paper reports
  "generated size as a percentage of the real one", which rewards over-estimates above
  100 %; the symmetric form makes 100 % perfect and lowers the score for over- and
  under-estimates alike (a 2x over-estimate and a 2x under-estimate both score 50 %).
- `format_size`, `format_diameter`, `format_change_percent`: the one way a size, a
  longest diameter and a change in percent are written for a person (one rounding rule
  each; they live in `core.size_format`, where the DICOM SR's reader uses them too, and are
  re-exported here).
- `dice`: overlap of two masks (segmentation quality).
- `image_agreement`: SSIM and PSNR of a generated image against a real one (the cohort
  review and the NAC evaluation report these).
- `recist_category`: the RECIST 1.1 response category of a change of the longest diameter.

The longest diameter (`longest_diameter_mm`) is what a radiologist measures with a ruler
(RECIST 1.1: the longest diameter of a target lesion, in the axial plane): the maximum
Feret diameter of the lesion in mm, in the image plane of a MIP and on the widest axial
slice of a volume. A tumour in several parts reports the longest of its parts.

"No tumour found" is a result, not an error: a `TumourSize` of 0 with ``found == False``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..core.scan import Scan
from ..core.size_format import (  # noqa: F401 - format_size re-exported beside the sizes
    format_change_percent, format_diameter, format_size)


def area_mm2(mask: np.ndarray, spacing_yx) -> float:
    """Area of the non-zero pixels of a 2D mask."""
    if mask.ndim != 2:
        raise ValueError(f"area needs a 2D mask, got {mask.ndim}D")
    return float(np.count_nonzero(mask) * spacing_yx[0] * spacing_yx[1])


def projected_area_mm2(mask: np.ndarray, spacing_zyx) -> float:
    """Area of the axial (along z) projection of a 3D mask: its size on a MIP."""
    return area_mm2(np.any(mask, axis=0), spacing_zyx[1:])


def volume_ml(mask: np.ndarray, spacing_zyx) -> float:
    return float(np.count_nonzero(mask) * np.prod(spacing_zyx) / 1000.0)


def tumour_size(mask: Scan) -> tuple[float, str]:
    """Size of a tumour mask scan: (value, unit). mm² on 2D images, mL on volumes."""
    if mask.ndim == 2:
        return area_mm2(mask.array, mask.spacing), "mm²"
    return volume_ml(mask.array, mask.spacing), "mL"


def reduction_percent(baseline: float, followup: float) -> float:
    """Size reduction vs baseline in percent (100 = vanished, negative = growth).
    NaN when the baseline has no tumour."""
    if baseline <= 0:
        return float("nan")
    return 100.0 * (1.0 - followup / baseline)


# --- sizes per component, changes, match ------------------------------------------------------

def size_unit(ndim: int) -> str:
    return "mm²" if ndim == 2 else "mL"


@dataclasses.dataclass(frozen=True)
class TumourSize:
    """Size of a tumour mask: total and per connected component (largest first)."""

    total: float
    unit: str                          # "mm²" (2D) or "mL" (3D)
    components: tuple[float, ...] = ()
    voxels: int = 0
    diameter: float = 0.0              # longest diameter in mm (RECIST-style), 0 if none

    @property
    def found(self) -> bool:
        return self.voxels > 0

    @property
    def n_components(self) -> int:
        return len(self.components)

    def describe(self, diameter: bool = True) -> str:
        """"412 mm²; longest diameter 31.2 mm" (``diameter``: with the diameter)."""
        if not self.found:
            return f"no tumour found (size 0 {self.unit})"
        text = format_size(self.total, self.unit)
        if self.n_components > 1:
            parts = ", ".join(format_size(c) for c in self.components[:5])
            more = ", ..." if self.n_components > 5 else ""
            text += f" in {self.n_components} separate parts ({parts}{more} {self.unit})"
        if diameter and self.diameter > 0:
            text += f"; longest diameter {format_diameter(self.diameter)}"
        return text

    def to_json(self) -> dict:
        return {"total": self.total, "unit": self.unit, "found": self.found,
                "components": list(self.components), "voxels": self.voxels,
                "diameter_mm": self.diameter}


def measure_tumour(mask: Scan, label: int | None = None) -> TumourSize:
    """Tumour size of a mask scan: area in mm² on 2D images (MIPs), volume in mL on volumes
    (from the voxel spacing). ``label`` picks one label value (default: every non-zero
    voxel). Components are connected through faces, edges and corners (8/26 neighbours)."""
    from scipy import ndimage

    array = np.asarray(mask.array)
    binary = array == label if label is not None else array != 0
    unit = size_unit(mask.ndim)
    # voxel_volume_mm3 is the pixel area on 2D scans; mm³ -> mL on volumes
    scale = mask.voxel_volume_mm3 / (1000.0 if mask.ndim == 3 else 1.0)
    n_voxels = int(np.count_nonzero(binary))
    if n_voxels == 0:
        return TumourSize(0.0, unit, (), 0)
    labelled, n = ndimage.label(binary, structure=np.ones((3,) * mask.ndim, dtype=bool))
    counts = np.bincount(labelled.ravel(), minlength=n + 1)[1:]
    components = tuple(float(c * scale) for c in sorted(counts, reverse=True))
    diameter = longest_diameter_mm(labelled, mask.spacing)
    return TumourSize(float(n_voxels * scale), unit, components, n_voxels, diameter)


@dataclasses.dataclass(frozen=True)
class SizeChange:
    """A follow-up's tumour size against the baseline's."""

    baseline: float
    followup: float
    unit: str

    @property
    def absolute(self) -> float:
        """Follow-up minus baseline (negative = shrinkage)."""
        return self.followup - self.baseline

    @property
    def percent(self) -> float:
        """Change relative to the baseline in percent (-100 = vanished); NaN without a
        baseline tumour."""
        return 100.0 * self.absolute / self.baseline if self.baseline > 0 else float("nan")

    @property
    def reduction_percent(self) -> float:
        """The NAC paper's "size": reduction relative to T0 (100 = vanished)."""
        return reduction_percent(self.baseline, self.followup)

    def describe(self) -> str:
        text = f"{format_size(self.baseline)} -> {format_size(self.followup, self.unit)} " \
               f"({self.absolute_text()}"
        if self.baseline > 0:
            text += f", {format_change_percent(self.percent)})"
        else:
            text += "; no tumour at baseline, so no percentage)"
        return text

    def absolute_text(self, sd: float | None = None) -> str:
        """"-32 mm²", "+0.41 ± 0.05 mL": the change (± ``sd`` over samples), its digits
        set by the larger of it and the baseline."""
        scale = max(abs(self.absolute), self.baseline)
        text = format_size(self.absolute, sign=True, scale=scale)
        if sd is not None:
            text += f" ± {format_size(sd, scale=scale)}"
        return f"{text} {self.unit}"

    def to_json(self) -> dict:
        return {"baseline": self.baseline, "followup": self.followup, "unit": self.unit,
                "absolute": self.absolute, "percent": _json_number(self.percent),
                "reduction_percent": _json_number(self.reduction_percent)}


def _json_number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _size_and_unit(size, unit: str | None) -> tuple[float, str | None]:
    if isinstance(size, TumourSize):
        return size.total, size.unit
    return float(size), unit


def size_change(baseline: TumourSize | float, followup: TumourSize | float,
                unit: str | None = None) -> SizeChange:
    """Follow-up vs baseline. Accepts `TumourSize` (units must agree) or plain numbers."""
    b, unit_b = _size_and_unit(baseline, unit)
    f, unit_f = _size_and_unit(followup, unit)
    if unit_b and unit_f and unit_b != unit_f:
        raise ValueError(f"cannot compare a size in {unit_b} with one in {unit_f}")
    for value in (b, f):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"tumour size {value!r} is not a finite non-negative number")
    return SizeChange(b, f, unit_b or unit_f or "")


def match_percent(generated: float, real: float) -> float:
    """How well a generated tumour size matches the real one: ``100 * min / max``.

    100 % is a perfect match; over- and under-estimates both lower it. Both sizes 0 (no
    tumour in either) is a perfect match; a tumour in only one of them scores 0 %."""
    generated, real = float(generated), float(real)
    for value in (generated, real):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"tumour size {value!r} is not a finite non-negative number")
    if generated == 0 and real == 0:
        return 100.0
    return 100.0 * min(generated, real) / max(generated, real)


def recist_category(change_percent: float) -> str:
    """RECIST 1.1 for one target lesion from the change of its longest diameter (%):
    CR (gone, -100 %), PR (at least 30 % smaller), PD (at least 20 % larger), else SD.
    (RECIST's 5 mm absolute minimum for PD is left out: one lesion, no nadir history.)"""
    if change_percent <= -100.0:
        return "CR"
    if change_percent <= -30.0:
        return "PR"
    if change_percent >= 20.0:
        return "PD"
    return "SD"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two masks (non-zero = foreground); NaN when both are empty."""
    a, b = np.asarray(a) != 0, np.asarray(b) != 0
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def image_agreement(image: np.ndarray, reference: np.ndarray,
                    value_range: tuple[float, float] = (0.0, 1.0)) -> dict[str, float]:
    """``{"psnr", "ssim"}`` of ``image`` against ``reference`` (scikit-image's, data range
    ``hi - lo``), both clipped to ``value_range`` first: the model's value range (breast
    MIPs [0, 1]) or, where it has none, the display window (CT in HU), beyond which a
    difference is not seen. Computed in the inputs' precision (scikit-image's rule: float32
    stays float32, anything else is float64), so a caller chooses it by the arrays it
    passes."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    lo, hi = value_range
    a, b = np.clip(reference, lo, hi), np.clip(image, lo, hi)
    return {"psnr": float(peak_signal_noise_ratio(a, b, data_range=hi - lo)),
            "ssim": float(structural_similarity(a, b, data_range=hi - lo))}


# --- the longest diameter ---------------------------------------------------------------

# What `longest_diameter_mm` measures, recorded by models fitted on it (the lung heads take
# ln(D / 30 mm)) so that a model fitted on another definition is refused, not fed numbers
# it never saw. Change it whenever the definition changes.
LONGEST_DIAMETER_DEFINITION = "RECIST 1.1 axial: largest in-plane maximum Feret diameter"


def longest_diameter_mm(labelled: np.ndarray, spacing) -> float:
    """RECIST 1.1's longest diameter in mm of a labelled mask: on a volume, measured in the
    axial plane (a ruler on one slice: the largest in-plane maximum Feret diameter over the
    slices, never across them); on a 2D mask (a MIP), in its plane. The longest of the
    labelled parts; 0 without any.

    scikit-image's ``regionprops(..., spacing).feret_diameter_max`` per slice: the largest
    distance between two points of the outline of the part's convex hull at the half-pixel
    level, in mm. On the lung phantom's own masks it reads its stated diameter (voxel
    centres plus one voxel) to +0.04 mm on average; across slices (the 3D Feret diameter)
    it read 2-3 mm longer on average and up to 17 mm (docs/segmentation.md)."""
    from skimage.measure import regionprops

    labelled = np.asarray(labelled)
    if labelled.ndim not in (2, 3):
        raise ValueError(f"a 2D or 3D mask, got {labelled.ndim} dimensions")
    in_plane = tuple(float(s) for s in spacing)[-2:]
    sections = labelled.reshape(-1, *labelled.shape[-2:])
    longest = 0.0
    for z in np.flatnonzero(sections.any(axis=(1, 2))):
        for region in regionprops(sections[z].astype(np.int32, copy=False), spacing=in_plane):
            longest = max(longest, float(region.feret_diameter_max))
    return longest
