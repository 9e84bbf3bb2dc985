"""Tumour sizes, deltas and the NAC paper's size/match numbers on masks of known size."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_nacsim.cli.main import main
from napari_nacsim.core.scan import LABELS, Scan, affine_from_spacing
from napari_nacsim.core.scan_io import write_scan
from napari_nacsim.science.measure import (
    TumourSize, dice, match_percent, measure_tumour, reduction_percent, size_change)


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


# --- exact answers at the edges (each kills a mutant the tests above let through) ----------

def test_area_projection_and_volume_from_the_spacing():
    from napari_nacsim.science.measure import (
        area_mm2, projected_area_mm2, tumour_size, volume_ml)

    flat = np.zeros((6, 8), np.uint8)
    flat[1:2, 1:8] = 1                                    # 7 px of 0.5 x 3 mm
    assert area_mm2(flat, (0.5, 3.0)) == pytest.approx(10.5)
    for bad in (np.zeros(4), np.zeros((2, 2, 2))):
        with pytest.raises(ValueError, match=f"area needs a 2D mask, got {bad.ndim}D"):
            area_mm2(bad, (1.0, 1.0))
    box = np.zeros((3, 4, 5), np.uint8)
    box[0, 0, 0:3] = 1
    box[1, 0, 0:3] = 1                                    # the same 3 (y, x) columns again
    box[2, 3, 4] = 1                                      # 4 columns, 7 voxels
    assert projected_area_mm2(box, (2.0, 0.5, 3.0)) == pytest.approx(4 * 1.5)
    assert volume_ml(box, (2.0, 0.5, 3.0)) == pytest.approx(7 * 3.0 / 1000)
    assert tumour_size(mask_scan(flat, (0.5, 3.0))) == (pytest.approx(10.5), "mm²")
    assert tumour_size(mask_scan(box, (2.0, 0.5, 3.0))) == (pytest.approx(0.021), "mL")


def test_one_voxel_is_a_tumour_found():
    one = np.zeros((5, 5), np.uint8)
    one[2, 2] = 1
    size = measure_tumour(mask_scan(one, (1.0, 1.0)))
    assert size.found and size.voxels == 1 and size.total == 1.0


def test_negative_label_values_are_tumour_too():
    """The default is every non-zero voxel, not every positive one."""
    array = np.zeros((3, 3), np.int16)
    array[0, 1], array[2, 2] = -1, 1
    scan = Scan(array=array, affine=affine_from_spacing((1.0, 1.0)), kind=LABELS)
    assert measure_tumour(scan).voxels == 2
    assert measure_tumour(scan, label=-1).voxels == 1


def test_sizes_are_values_that_cannot_change():
    import dataclasses

    size = measure_tumour(mask_scan(np.ones((2, 2)), (1.0, 1.0)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        size.total = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        size_change(1.0, 2.0).baseline = 3.0


def parts(n: int) -> np.ndarray:
    """A mask of ``n`` separate bars of 1, 2, ..., n pixels."""
    array = np.zeros((3, 6 * n + 2), np.uint8)
    for i in range(n):
        array[1, 2 + 6 * i: 3 + 7 * i] = 1
    return array


@pytest.mark.parametrize("n, text", [
    (1, "1.00 mm²"),
    (2, "3.00 mm² in 2 separate parts (2.00, 1.00 mm²)"),
    (5, "15 mm² in 5 separate parts (5.00, 4.00, 3.00, 2.00, 1.00 mm²)"),
    (6, "21 mm² in 6 separate parts (6.00, 5.00, 4.00, 3.00, 2.00, ... mm²)"),
])
def test_described_parts_list_at_most_five(n, text):
    assert measure_tumour(mask_scan(parts(n), (1.0, 1.0))).describe(diameter=False) == text


def test_description_of_one_part_with_and_without_its_diameter():
    array = np.zeros((50, 60), np.uint8)
    array[10:20, 5:45] = 1
    size = measure_tumour(mask_scan(array, (2.0, 0.5)))
    assert size.describe() == "400 mm²; longest diameter 27.9 mm"
    assert size.describe(diameter=False) == "400 mm²"
    unknown = TumourSize(5.0, "mm²", (5.0,), voxels=5)      # no diameter known: none written
    assert unknown.describe() == "5.00 mm²"


def test_a_baseline_under_one_unit_still_has_a_percentage():
    """mL of a small tumour are below 1: a baseline in (0, 1] is a tumour."""
    change = size_change(0.5, 0.25, "mL")
    assert change.percent == pytest.approx(-50.0)
    assert change.reduction_percent == pytest.approx(50.0)
    assert reduction_percent(0.5, 0.25) == pytest.approx(50.0)
    assert change.describe() == "0.50 -> 0.25 mL (-0.25 mL, -50.0 %)"


def test_growth_is_written_with_its_sign_and_the_spread():
    growth = size_change(10.0, 15.0, "mL")
    assert growth.describe() == "10 -> 15 mL (+5 mL, +50.0 %)"
    assert size_change(200.0, 100.0, "mm²").absolute_text(sd=3.0) == "-100 ± 3 mm²"
    assert size_change(0.5, 0.75, "mL").absolute_text(sd=0.05) == "+0.25 ± 0.05 mL"


def test_change_units_from_either_side_and_refused_in_either_order():
    import json

    area = measure_tumour(mask_scan(np.ones((2, 2)), (1.0, 1.0)))           # 4 mm²
    volume = measure_tumour(mask_scan(np.ones((2, 2, 2)), (10.0, 10.0, 10.0)))  # 8 mL
    assert size_change(area, 2.0).unit == "mm²" and size_change(2.0, area).unit == "mm²"
    assert size_change(1.0, 2.0).unit == ""
    for first, second in ((area, volume), (volume, area)):
        with pytest.raises(ValueError, match="cannot compare a size in"):
            size_change(first, second)
    read_back = TumourSize(6.0, json.loads('"mm²"'), (6.0,), 6)  # an equal, other string
    assert size_change(area, read_back).absolute == pytest.approx(2.0)
    for bad in ((-0.5, 1.0), (1.0, -0.5), (1.0, float("inf"))):
        with pytest.raises(ValueError, match="not a finite non-negative number"):
            size_change(*bad)


@pytest.mark.parametrize("change, category", [
    (-100.0, "CR"), (-99.5, "PR"), (-50.0, "PR"), (-30.5, "PR"), (-30.0, "PR"),
    (-29.5, "SD"), (0.0, "SD"), (19.5, "SD"), (20.0, "PD"), (20.5, "PD"), (50.0, "PD"),
])
def test_recist_category_at_its_thresholds(change, category):
    from napari_nacsim.science.measure import recist_category

    assert recist_category(change) == category


def test_dice_refuses_masks_of_other_shapes_either_way_and_counts_one_pixel():
    for a, b in ((np.zeros(3), np.zeros(4)), (np.zeros(4), np.zeros(3))):
        with pytest.raises(ValueError, match="mask shapes differ"):
            dice(a, b)
    assert dice([1, 0], [0, 0]) == 0.0                          # one pixel in all
    assert dice([-1, 0, 2], [1, 0, 2]) == 1.0                   # non-zero is foreground


def test_image_agreement_clips_to_the_range_and_uses_its_width():
    from skimage.metrics import structural_similarity

    from napari_nacsim.science.measure import image_agreement

    reference = np.zeros((16, 16))
    image = np.full((16, 16), 0.1)
    image[0, 0] = 3.0                                           # counts as 1.0
    mse = (255 * 0.1 ** 2 + 1.0) / 256
    scores = image_agreement(image, reference)
    assert scores["psnr"] == pytest.approx(10 * math.log10(1.0 / mse))

    rng = np.random.default_rng(0)
    ct = rng.uniform(-1200.0, 600.0, (16, 16))                  # HU, beyond the window too
    noisy = ct + rng.normal(0.0, 50.0, (16, 16))
    window = (-1000.0, 400.0)
    a, b = np.clip(ct, *window), np.clip(noisy, *window)
    scores = image_agreement(noisy, ct, window)
    assert scores["psnr"] == pytest.approx(10 * math.log10(1400.0 ** 2 / np.mean((a - b) ** 2)))
    assert scores["ssim"] == pytest.approx(structural_similarity(a, b, data_range=1400.0))
