"""Tumour sizes, deltas and the NAC paper's size/match numbers on masks of known size."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_nacsim.cli.main import main
from napari_nacsim.core.scan import LABELS, Scan, affine_from_spacing
from napari_nacsim.core.scan_io import write_scan
from napari_nacsim.science.measure import (
    dice, match_percent, measure_tumour, reduction_percent, size_change)


def mask_scan(array, spacing) -> Scan:
    return Scan(array=np.asarray(array, dtype=np.uint8), affine=affine_from_spacing(spacing),
                kind=LABELS)


def test_area_of_2d_components_in_mm2():
    array = np.zeros((40, 50), np.uint8)
    array[2:12, 3:8] = 1      # 50 px
    array[20:23, 30:34] = 1   # 12 px
    array[30, 40] = 1         # 1 px
    size = measure_tumour(mask_scan(array, (0.5, 2.0)))  # 1 mm² per pixel
    assert size.unit == "mm²"
    assert size.total == pytest.approx(63.0)
    assert size.components == pytest.approx((50.0, 12.0, 1.0))
    assert size.found and size.n_components == 3 and size.voxels == 63
    assert "63 mm² in 3 separate parts (50, 12, 1.00 mm²)" in size.describe()


def test_diagonal_neighbours_are_one_component():
    array = np.eye(5, dtype=np.uint8)
    size = measure_tumour(mask_scan(array, (1.0, 1.0)))
    assert size.n_components == 1 and size.total == pytest.approx(5.0)


def test_volume_of_3d_mask_in_ml_from_spacing():
    array = np.zeros((10, 20, 20), np.uint8)
    array[2:7, 5:15, 5:15] = 1           # 500 voxels of 4*3*3 = 36 mm³ = 18 mL
    array[8, 0, 0] = 2                   # another label value: one more voxel, own component
    scan = mask_scan(array, (4.0, 3.0, 3.0))
    size = measure_tumour(scan)
    assert size.unit == "mL"
    assert size.total == pytest.approx(501 * 36 / 1000)
    assert size.components == pytest.approx((18.0, 0.036))
    assert measure_tumour(scan, label=1).total == pytest.approx(18.0)
    assert measure_tumour(scan, label=2).n_components == 1


def test_no_tumour_found_is_a_result_with_size_zero():
    size = measure_tumour(mask_scan(np.zeros((8, 8)), (1.0, 1.0)))
    assert not size.found and size.total == 0.0 and size.components == ()
    assert size.describe() == "no tumour found (size 0 mm²)"
    assert size.to_json()["found"] is False


def test_change_vs_baseline_absolute_percent_and_nac_size():
    baseline = measure_tumour(mask_scan(np.ones((10, 10)), (1.0, 2.0)))   # 200 mm²
    followup = measure_tumour(mask_scan(np.ones((5, 10)), (1.0, 2.0)))    # 100 mm²
    change = size_change(baseline, followup)
    assert change.absolute == pytest.approx(-100.0)
    assert change.percent == pytest.approx(-50.0)
    assert change.reduction_percent == pytest.approx(50.0)      # NAC paper's "size"
    assert "200 -> 100 mm² (-100 mm², -50.0 %)" == change.describe()
    growth = size_change(10.0, 15.0, "mL")
    assert growth.percent == pytest.approx(50.0)
    assert growth.reduction_percent == pytest.approx(-50.0)
    vanished = size_change(baseline, measure_tumour(mask_scan(np.zeros((4, 4)), (1.0, 1.0))))
    assert vanished.percent == pytest.approx(-100.0) and vanished.reduction_percent == 100.0


def test_change_without_baseline_tumour_has_no_percentage():
    change = size_change(0.0, 12.0, "mm²")
    assert change.absolute == 12.0 and math.isnan(change.percent)
    assert math.isnan(change.reduction_percent) and math.isnan(reduction_percent(0.0, 3.0))
    assert "no tumour at baseline" in change.describe()
    assert change.to_json()["percent"] is None


def test_change_refuses_mixed_units_and_bad_numbers():
    with pytest.raises(ValueError, match="mm² with one in mL"):
        size_change(measure_tumour(mask_scan(np.ones((2, 2)), (1, 1))),
                    measure_tumour(mask_scan(np.ones((2, 2, 2)), (1, 1, 1))))
    with pytest.raises(ValueError, match="not a finite"):
        size_change(float("nan"), 1.0)


@pytest.mark.parametrize("generated, real, expected", [
    (100.0, 100.0, 100.0),
    (50.0, 100.0, 50.0),     # under-estimate by 2x
    (200.0, 100.0, 50.0),    # over-estimate by 2x scores the same
    (95.0, 100.0, 95.0),
    (0.0, 0.0, 100.0),       # no tumour in either: a match
    (0.0, 40.0, 0.0),
    (40.0, 0.0, 0.0),
])
def test_match_is_symmetric_and_100_when_perfect(generated, real, expected):
    assert match_percent(generated, real) == pytest.approx(expected)


def test_match_rejects_negative_sizes():
    with pytest.raises(ValueError):
        match_percent(-1.0, 3.0)


def test_dice_of_known_overlap():
    a = np.zeros((10, 10)); a[0:4, 0:5] = 1    # 20
    b = np.zeros((10, 10)); b[2:6, 0:5] = 1    # 20, overlap 10
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0 and dice(a, np.zeros_like(a)) == 0.0
    assert math.isnan(dice(np.zeros(3), np.zeros(3)))


def test_cli_measure_prints_size_change_and_match(tmp_path, capsys):
    spacing = (1.0, 1.0)
    base = np.zeros((20, 20)); base[0:10, 0:10] = 1      # 100 mm²
    gen = np.zeros((20, 20)); gen[0:5, 0:10] = 1         # 50 mm²
    real = np.zeros((20, 20)); real[0:8, 0:5] = 1        # 40 mm²
    paths = {}
    for name, array in (("base", base), ("gen", gen), ("real", real), ("empty", base * 0)):
        paths[name] = write_scan(mask_scan(array, spacing), tmp_path / f"{name}.nii.gz")
    assert main(["measure", str(paths["gen"]), "--baseline-mask", str(paths["base"]),
                 "--real-mask", str(paths["real"])]) == 0
    out = capsys.readouterr().out
    assert "tumour: 50 mm²" in out
    assert "change vs baseline: 100 -> 50 mm² (-50 mm², -50.0 %)" in out
    assert "(NAC 'size'): 50.0 %" in out
    assert "match with the real follow-up: 80.0 %" in out
    assert main(["measure", str(paths["empty"])]) == 0
    assert "no tumour found (size 0 mm²)" in capsys.readouterr().out


def test_longest_diameter_in_mm_2d_and_3d():
    """RECIST-style longest diameter: scikit-image's maximum Feret diameter with the
    spacing, on 2D masks (the same number) and on volumes in the axial plane (the box's
    in-plane diagonal, not its 3D one; more in test_longest_diameter.py)."""
    from skimage.measure import regionprops

    array = np.zeros((50, 60), np.uint8)
    array[10:20, 5:45] = 1                     # 10 x 40 pixels of 2 x 0.5 mm
    size = measure_tumour(mask_scan(array, (2.0, 0.5)))
    expected = regionprops(array, spacing=(2.0, 0.5))[0].feret_diameter_max
    assert size.diameter == pytest.approx(expected)
    assert 27.0 < size.diameter < math.hypot(20.0, 20.0) + 1e-6
    assert "longest diameter 27.9 mm" in size.describe()
    assert size.to_json()["diameter_mm"] == pytest.approx(expected)

    two = np.zeros((40, 40), np.uint8)
    two[1:3, 1:3] = 1
    two[10:30, 10:20] = 1                      # the longer part wins
    assert measure_tumour(mask_scan(two, (1.0, 1.0))).diameter == pytest.approx(
        regionprops((two[5:] > 0).astype(np.uint8))[0].feret_diameter_max)

    box = np.zeros((10, 40, 40), np.uint8)
    box[2:8, 5:25, 10:20] = 1                  # 6 x 20 x 10 voxels of 2 x 0.5 x 0.5 mm
    volume = measure_tumour(mask_scan(box, (2.0, 0.5, 0.5)))
    assert volume.diameter == pytest.approx(
        regionprops(box[4], spacing=(0.5, 0.5))[0].feret_diameter_max)
    assert volume.diameter == pytest.approx(math.hypot(10, 5), rel=0.05)
    flat = np.zeros((5, 20, 20), np.uint8)
    flat[2, 5:15, 5:10] = 1                    # one slice thick: still measured
    assert measure_tumour(mask_scan(flat, (2.0, 1.0, 1.0))).diameter == pytest.approx(
        math.hypot(10, 5) - 0.4, abs=0.5)
    assert measure_tumour(mask_scan(np.zeros((8, 8)), (1.0, 1.0))).diameter == 0.0
