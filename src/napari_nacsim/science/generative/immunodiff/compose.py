"""The generated follow-up kept around the baseline tumour, the pre-treatment crop elsewhere.

Immunotherapy changes the tumour and its neighbourhood; elsewhere the follow-up is the
pre-treatment crop (in the phantom, up to the scan's own noise). The generator draws its
change everywhere in the crop, so its small errors all over the crop cost image agreement
and slice-to-slice smoothness where nothing happens. The final crop is therefore

    final = (1 - w) * pre + w * generated

with w = 1 within ``margin_mm`` of the baseline tumour mask, falling linearly to 0 over the
next ``feather_mm`` (no seam: between neighbouring voxels w changes by at most one voxel's
size / ``feather_mm``), and w = 0 beyond, where the crop is the pre-treatment crop exactly.
Distances are Euclidean on the voxel spacing (`scipy.ndimage.distance_transform_edt`).

The margin must hold any growth the model can show. The phantom the model learnt from
grows a tumour by at most ``growth`` (+50 % of the longest diameter,
`phantoms.lung_outcomes.diameter_change_percent`), scaling it about its centre, so a surface
point at distance r from the centre moves outwards by ``growth`` x r. Hence

    margin_mm = growth x reach + allowance_mm

with ``reach`` the largest distance (mm) from the mask's centroid to its voxels, and the
allowance measured on the phantom's tumours (the partial-volume rim, the voxel grid, the
centroid not being the centre: docs/lung-model.md). A tumour that shrinks stays inside its
baseline mask. An empty mask (no tumour found) leaves nothing to compose around: the whole
crop is then the generated one, and the record says so.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ....core.errors import InputError


@dataclasses.dataclass(frozen=True)
class Composition:
    """How the final crop is composed (a model config's ``composition``)."""

    growth: float          # largest relative growth of the tumour the model can show
    allowance_mm: float    # added to growth x reach (measured, see the module docstring)
    feather_mm: float      # width of the blend beyond the margin

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Optional["Composition"]:
        """The config's composition, or None when it is off."""
        c = config.get("composition") or {}
        if not isinstance(c, Mapping):
            raise InputError("config composition", f"{c!r} is not a mapping of settings")
        if not c.get("around_tumour", False):
            return None
        values = {}
        for key in ("growth", "allowance_mm", "feather_mm"):
            try:
                values[key] = float(c[key])
            except KeyError:
                raise InputError(f"config composition.{key}", "is missing") from None
            except (TypeError, ValueError):
                raise InputError(f"config composition.{key}",
                                 f"{c[key]!r} is not a number") from None
        if values["growth"] < 0 or values["allowance_mm"] < 0 or values["feather_mm"] <= 0:
            raise InputError("config composition", f"growth {values['growth']:g} and "
                             f"allowance_mm {values['allowance_mm']:g} must be >= 0 and "
                             f"feather_mm {values['feather_mm']:g} > 0")
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class TumourRegion:
    """Where the generated crop is kept: ``weight`` (1 = generated, 0 = pre-treatment)."""

    weight: np.ndarray                 # float32, the crop's shape
    composition: Composition
    reach_mm: Optional[float]          # None: empty mask, nothing composed
    mask_source: str

    @property
    def composed(self) -> bool:
        return self.reach_mm is not None

    @property
    def margin_mm(self) -> Optional[float]:
        if not self.composed:
            return None
        return self.composition.growth * self.reach_mm + self.composition.allowance_mm

    def describe(self) -> str:
        """One line for a provenance record."""
        if not self.composed:
            return ("not composed: the baseline tumour mask is empty, the whole crop is "
                    "generated")
        outer = self.margin_mm + self.composition.feather_mm
        return (f"composed outside {self.margin_mm:.1f} mm of the baseline tumour: generated "
                f"within {self.margin_mm:.1f} mm, the pre-treatment crop beyond {outer:.1f} "
                f"mm, blended in between")

    def record(self) -> dict[str, Any]:
        """What a generated crop's provenance records about its composition."""
        c = self.composition
        out = {"text": self.describe(), "around": "baseline tumour",
               "mask": self.mask_source, "composed": self.composed,
               "growth": c.growth, "allowance_mm": c.allowance_mm, "feather_mm": c.feather_mm,
               "generated_share": round(float(np.mean(self.weight > 0)), 4)}
        if self.composed:
            out.update(reach_mm=round(self.reach_mm, 2), margin_mm=round(self.margin_mm, 2))
        return out


def tumour_region(mask: Optional[np.ndarray], spacing: Sequence[float],
                  composition: Composition, *, grid: Sequence[int],
                  mask_source: str = "baseline tumour mask") -> TumourRegion:
    """The region of ``composition`` around the tumour of ``mask`` (nonzero = tumour), a
    label map on the crop grid ``grid`` with voxel ``spacing`` (mm, array axis order).
    `InputError` (one line) when the mask is missing or not on the grid."""
    from scipy import ndimage

    if mask is None:
        raise InputError("baseline tumour mask", "is missing: the follow-up is generated "
                                                 "around the baseline tumour and the "
                                                 "pre-treatment crop kept elsewhere")
    mask = np.asarray(mask)
    if tuple(mask.shape) != tuple(grid):
        raise InputError("baseline tumour mask", f"has shape {tuple(mask.shape)}, the "
                                                 f"model's crop is {tuple(grid)}")
    spacing = np.asarray(spacing, float)
    if spacing.shape != (mask.ndim,) or not np.all(np.isfinite(spacing)) or \
            np.any(spacing <= 0):
        raise InputError("baseline tumour mask", f"voxel spacing {spacing.tolist()} is not "
                                                 f"{mask.ndim} positive sizes")
    tumour = mask > 0
    if not tumour.any():
        weight, reach = np.ones(mask.shape, np.float32), None
    else:
        points = np.argwhere(tumour) * spacing
        reach = float(np.linalg.norm(points - points.mean(axis=0), axis=1).max())
        margin = composition.growth * reach + composition.allowance_mm
        distance = ndimage.distance_transform_edt(~tumour, sampling=spacing)
        weight = np.clip(1.0 - (distance - margin) / composition.feather_mm, 0.0,
                         1.0).astype(np.float32)
    weight.flags.writeable = False   # a region is a value: a comparison's samples share it
    return TumourRegion(weight, composition, reach, mask_source)


def compose(pre: np.ndarray, generated: np.ndarray, region: TumourRegion) -> np.ndarray:
    """``(1 - w) pre + w generated`` (generated: one crop or a batch of crops): exactly the
    pre-treatment crop where w = 0, exactly the generated one where w = 1."""
    w = region.weight
    pre = np.asarray(pre, np.float32)
    generated = np.asarray(generated, np.float32)
    if generated.shape[-w.ndim:] != w.shape or pre.shape != w.shape:
        raise InputError("composition", f"crops {pre.shape} and {generated.shape} are not on "
                                        f"the region's grid {w.shape}")
    return ((1.0 - w) * pre + w * generated).astype(np.float32)
