"""The longest diameter (RECIST 1.1) on masks whose answer is known: in the axial plane on a
volume, not across slices (issue 24, item 13: the 3D Feret diameter read up to 17 mm longer
than the lung phantom's axial one)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_nacsim.core.scan import LABELS, Scan, affine_from_spacing
from napari_nacsim.science.measure import longest_diameter_mm, measure_tumour


def mask_scan(array, spacing) -> Scan:
    return Scan(array=np.asarray(array, dtype=np.uint8), affine=affine_from_spacing(spacing),
                kind=LABELS)


def ellipse(shape, spacing, centre_mm, semi_axes_mm) -> np.ndarray:
    """A digitised ellipse (voxel centres inside), axes along y and x, in mm."""
    y, x = (np.indices(shape) + 0.5) * np.asarray(spacing, float)[:, None, None]
    (cy, cx), (ry, rx) = centre_mm, semi_axes_mm
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def test_a_column_along_z_measures_its_width_not_its_height():
    """RECIST measures on one axial slice: a tumour 40 mm tall and 9 mm wide is 9 mm long,
    where the 3D Feret diameter reads over 40."""
    volume = np.zeros((14, 12, 12), np.uint8)
    volume[2:12, 4:7, 4:7] = 1                  # 10 slices of 4 mm, 3 x 3 voxels of 3 mm
    size = measure_tumour(mask_scan(volume, (4.0, 3.0, 3.0)))
    assert 9.0 <= size.diameter <= math.hypot(9.0, 9.0)


def test_the_widest_slice_gives_the_diameter_with_the_in_plane_spacing():
    """A stack of ellipses growing to 40 x 20 mm on the middle slice and shifted 15 mm in x
    from slice to slice, on pixels of 0.25 mm (x) by 0.5 mm (y): the longest axis is along
    x. Swapping the spacings would read 80 mm, measuring across slices 79 mm."""
    shape, spacing = (160, 400), (0.5, 0.25)
    volume = np.zeros((5, *shape), np.uint8)
    for z, scale in enumerate((0.4, 0.7, 1.0, 0.7, 0.4)):
        volume[z] = ellipse(shape, spacing, (40.0, 50.0 + 15.0 * (z - 2)),
                            (10.0 * scale, 20.0 * scale))
    labelled = volume.astype(np.int32)
    assert longest_diameter_mm(labelled, (5.0, *spacing)) == pytest.approx(40.0, abs=0.5)
    # the slices themselves are 2D masks: the same definition, their own sizes
    assert measure_tumour(mask_scan(volume[0], spacing)).diameter == pytest.approx(16.0, abs=0.5)


def test_the_longest_part_wins_and_empty_is_zero():
    volume = np.zeros((6, 40, 40), np.uint8)
    volume[1:3, 2:5, 2:5] = 1                   # 3 x 3 voxels of 1 mm
    volume[2:5, 10:30, 10:14] = 1               # 20 x 4: longer, in another slice range
    labelled = np.zeros_like(volume, np.int32)
    labelled[volume > 0] = 1
    labelled[:, 10:, 10:][volume[:, 10:, 10:] > 0] = 2
    assert longest_diameter_mm(labelled, (2.0, 1.0, 1.0)) == pytest.approx(
        math.hypot(20, 4), abs=1.0)
    assert longest_diameter_mm(np.zeros((3, 8, 8), np.int32), (1.0, 1.0, 1.0)) == 0.0
    assert measure_tumour(mask_scan(np.zeros((3, 8, 8)), (1.0, 1.0, 1.0))).diameter == 0.0


def test_a_single_voxel_is_one_voxel_across():
    volume = np.zeros((3, 5, 5), np.uint8)
    volume[1, 2, 2] = 1
    assert measure_tumour(mask_scan(volume, (4.0, 3.0, 3.0))).diameter == pytest.approx(3.0)


def test_agrees_with_the_lung_phantom_truth_on_its_grid():
    """The lung phantom states its tumour's longest axial diameter on its own 4 x 2.5 x
    2.5 mm mask; the product's definition reads the same mask within a voxel, also for a
    tumour tilted across slices (where the 3D Feret diameter is much longer)."""
    from napari_nacsim.science.phantoms.lung import longest_axial_diameter_mm

    spacing = np.array([4.0, 2.5, 2.5])
    centre = (np.array([12, 20, 20]) + 0.3) * spacing
    points = (np.indices((24, 40, 40)).reshape(3, -1).T + 0.5) * spacing - centre
    tilt = np.radians(50.0)                      # the long axis leans 50 degrees out of plane
    axes = np.array([[np.cos(tilt), 0.0, np.sin(tilt)], [0.0, 1.0, 0.0],
                     [-np.sin(tilt), 0.0, np.cos(tilt)]])
    local = points @ axes.T
    mask = ((local / np.array([24.0, 9.0, 7.0])) ** 2).sum(1).reshape(24, 40, 40) <= 1.0
    ours = measure_tumour(mask_scan(mask, tuple(spacing))).diameter
    assert ours == pytest.approx(longest_axial_diameter_mm(mask, spacing), abs=2.5)
    assert ours < 25.0  # its widest axial section is about 21 mm; the 3D long axis 48 mm
