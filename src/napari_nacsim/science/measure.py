"""Tumour size from a mask: area on 2D images (MIPs), volume on 3D crops.

The NAC paper measures tumour size on maximum-intensity projections, so the size of a 3D
breast tumour mask is the area of its axial projection (`projected_area_mm2`).
"""

from __future__ import annotations

import numpy as np

from ..core.scan import Scan


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
