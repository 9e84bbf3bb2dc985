"""The published pipelines' model inputs: breast subtraction MIP and lung tumour crop.

Geometry is checked in world millimetres: volumes stored in other orientations (LPS, permuted
axes) describe the same anatomy through their affines and must give the same result.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_nacsim.core.errors import InputError
from napari_nacsim.core.scan import LABELS, Scan, affine_from_spacing
from napari_nacsim.science.phantoms.shapes import Blob, Grid, smooth_noise
from napari_nacsim.science.preprocess.breast import (
    axial_mip,
    breast_model_input,
    normalise,
    resize_square,
    subtraction,
    subtraction_mip,
)
from napari_nacsim.science.preprocess.lung import (
    AIR_HU,
    CROP_SHAPE,
    CROP_SPACING,
    HU_WINDOWS,
    CropBox,
    crop_around_tumour,
    crop_to_box,
    hu_window,
    tumour_box,
)


def world(affine: np.ndarray, index_xyz) -> np.ndarray:
    """World (RAS mm) of index (x, y, z) points: shape (3,) or (3, n)."""
    index = np.asarray(index_xyz, float)
    return affine[:3, :3] @ index + (affine[:3, 3] if index.ndim == 1 else affine[:3, 3:4])


def reoriented(scan: Scan, codes: tuple[str, str, str]) -> Scan:
    """The same anatomy stored with index axes (x, y, z) pointing along ``codes``."""
    xyz = scan.array.transpose(2, 1, 0)
    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(scan.affine),
                                                nib.orientations.axcodes2ornt(codes))
    moved = nib.orientations.apply_orientation(xyz, transform)
    affine = scan.affine @ nib.orientations.inv_ornt_aff(transform, xyz.shape)
    out = Scan(np.ascontiguousarray(moved.transpose(2, 1, 0)), affine, kind=scan.kind)
    assert out.orientation == "".join(codes)
    return out


# === breast ===================================================================================

SPACING = (2.5, 0.8, 0.7)  # (z, y, x) mm, anisotropic so axis mix-ups show
ORIGIN = (90.0, 40.0, -30.0)


def lps_affine(spacing=SPACING, origin=ORIGIN) -> np.ndarray:
    """Voxel-to-world affine of an LPS-stored volume (DICOM order, as nacsim's phantoms): index
    x runs to the patient's left, y to posterior, z to superior."""
    sz, sy, sx = spacing
    affine = np.diag([-sx, -sy, sz, 1.0])
    affine[:3, 3] = origin
    return affine


def breast_volume(seed: int = 0) -> Scan:
    rng = np.random.default_rng(seed)
    array = (50 + 10 * smooth_noise(rng, (12, 30, 40), 1.5)).astype(np.float32)
    return Scan(array, lps_affine())


def test_bright_voxel_projects_to_its_pixel():
    volume = breast_volume()
    array = volume.array.copy()
    array[7, 11, 29] = 500.0
    mip = axial_mip(Scan(array, volume.affine))
    assert mip.ndim == 2 and mip.shape == (30, 40)
    assert np.unravel_index(np.argmax(mip.array), mip.shape) == (11, 29)
    assert mip.array[11, 29] == 500.0
    np.testing.assert_array_equal(mip.array, array.max(axis=0))  # LPS: the plain axis-0 MIP
    assert mip.spacing == pytest.approx(SPACING[1:])
    # Same R and A position as the voxel; S is the middle of the projected slab.
    pixel_world = world(mip.affine, (29, 11, 0))
    np.testing.assert_allclose(pixel_world[:2], world(volume.affine, (29, 11, 7))[:2])
    assert pixel_world[2] == pytest.approx(ORIGIN[2] + SPACING[0] * (12 - 1) / 2)
    assert [h["step"] for h in mip.provenance["history"]] == ["axial_mip"]


@pytest.mark.parametrize("codes", [("R", "A", "S"), ("S", "L", "P"), ("A", "I", "R")])
def test_mip_is_along_superior_inferior_whatever_the_storage(codes):
    lps = breast_volume()
    array = lps.array.copy()
    array[3, 20, 5] = 400.0
    lps = Scan(array, lps.affine)
    stored = reoriented(lps, codes)
    voxel = np.argwhere(stored.array == 400.0)[0]  # (z, y, x) in the stored array
    voxel_world = world(stored.affine, voxel[::-1])

    mip = axial_mip(stored)
    assert mip.shape == (30, 40)
    assert mip.spacing == pytest.approx(SPACING[1:])  # in-plane voxel size, not the 2.5 mm
    row, col = np.unravel_index(np.argmax(mip.array), mip.shape)
    np.testing.assert_allclose(world(mip.affine, (col, row, 0))[:2], voxel_world[:2])
    # Stored any way, the projection has the LPS layout: the model always sees the same image.
    np.testing.assert_array_equal(mip.array, lps.array.max(axis=0))
    np.testing.assert_allclose(mip.affine, axial_mip(lps).affine, atol=1e-9)
    si_axis = "xyz".index(next(a for a, c in zip("xyz", codes) if c in "SI"))
    assert mip.provenance["history"][-1]["projected_array_axis"] == 2 - si_axis


def test_mip_of_labels_is_the_footprint():
    mask = np.zeros((12, 30, 40), np.uint8)
    mask[2:5, 10:14, 20:25] = 1
    mip = axial_mip(Scan(mask, lps_affine(), kind=LABELS))
    assert mip.kind == LABELS and mip.array.dtype == np.uint8
    assert np.count_nonzero(mip.array) == 4 * 5
    empty = axial_mip(Scan(np.zeros_like(mask), lps_affine(), kind=LABELS))
    assert not empty.array.any()  # no tumour (pCR) is a valid mask


def test_subtraction_clips_negative_enhancement():
    pre = breast_volume(1)
    post_array = pre.array + 30.0
    post_array[:, :5] = pre.array[:, :5] - 20.0  # wash-out
    post = Scan(post_array, pre.affine)
    sub = subtraction(pre, post)
    assert sub.array.dtype == np.float32
    np.testing.assert_allclose(sub.array[:, 5:], 30.0, atol=1e-4)
    assert np.all(sub.array[:, :5] == 0.0)
    assert sub.provenance["history"][-1]["step"] == "subtraction"


def test_subtraction_needs_one_grid():
    pre = breast_volume(1)
    with pytest.raises(InputError, match="shape"):
        subtraction(pre, Scan(pre.array[:, :-1], pre.affine))
    with pytest.raises(InputError, match="spacing"):
        subtraction(pre, Scan(pre.array, lps_affine(spacing=(2.5, 0.8, 0.9))))
    moved = pre.affine.copy()
    moved[:3, 3] += 5.0
    with pytest.raises(InputError, match="register"):
        subtraction(pre, Scan(pre.array, moved))
    with pytest.raises(InputError, match="label map"):
        subtraction(pre, Scan(pre.array.astype(np.uint8), pre.affine, kind=LABELS))
    nan = pre.array.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        subtraction(pre, Scan(nan, pre.affine))


def test_normalise_range_and_reference_scale():
    rng = np.random.default_rng(2)
    baseline = Scan(rng.gamma(2.0, 10.0, (40, 50)).astype(np.float32), np.eye(4))
    out = normalise(baseline)
    assert out.array.dtype == np.float32
    assert out.array.min() == 0.0 and out.array.max() == 1.0
    low, high = np.percentile(baseline.array, [0.5, 99.5])
    np.testing.assert_allclose(out.array, np.clip((baseline.array - low) / (high - low), 0, 1),
                               atol=1e-6)
    step = out.provenance["history"][-1]
    assert step["low_value"] == pytest.approx(low) and step["high_value"] == pytest.approx(high)
    assert step["low_percentile"] == 0.5 and step["reference"] is None

    # A follow-up at half the enhancement: with the baseline's scale it stays half as bright;
    # normalised on its own it would be stretched back to full range.
    followup = Scan(baseline.array * 0.5, np.eye(4))
    shared = normalise(followup, reference=baseline)
    alone = normalise(followup)
    np.testing.assert_allclose(shared.array, np.clip((followup.array - low) / (high - low), 0, 1),
                               atol=1e-6)
    assert shared.array.max() < 0.8
    assert alone.array.max() == 1.0
    assert shared.provenance["history"][-1]["high_value"] == pytest.approx(high)

    with pytest.raises(InputError, match="percentiles"):
        normalise(baseline, low_percentile=60, high_percentile=40)
    with pytest.raises(InputError, match="constant"):
        normalise(Scan(np.ones((5, 5), np.float32), np.eye(4)))


def test_resize_square_updates_spacing_and_keeps_position():
    image = np.zeros((40, 60), np.float32)
    image[10:14, 40:44] = 1.0
    affine = lps_affine(spacing=(3.0, 0.8, 0.7))
    scan = Scan(image, affine)
    centre_before = world(affine, (41.5, 11.5, 0))

    padded = resize_square(scan, 30)  # pad to 60 x 60, then halve
    assert padded.shape == (30, 30) and padded.array.dtype == np.float32
    assert padded.spacing == pytest.approx((1.6, 1.4))
    assert 0.0 <= padded.array.min() and padded.array.max() <= 1.0
    rows, cols = np.nonzero(padded.array > 0.5)
    centre_after = world(padded.affine, (cols.mean(), rows.mean(), 0))
    np.testing.assert_allclose(centre_after, centre_before, atol=0.8)

    stretched = resize_square(scan, 32, fit="stretch")
    assert stretched.spacing == pytest.approx((0.8 * 40 / 32, 0.7 * 60 / 32))

    labels = np.zeros((40, 60), np.uint8)
    labels[5:20, 5:30] = 2
    labels[25:35, 30:55] = 5
    small = resize_square(Scan(labels, affine, kind=LABELS), 16)
    assert small.array.dtype == np.uint8
    assert set(np.unique(small.array)) == {0, 2, 5}

    with pytest.raises(InputError, match="2D"):
        resize_square(breast_volume(), 64)
    with pytest.raises(InputError, match="model size"):
        resize_square(scan, 0)


def test_breast_model_input_composes_the_steps():
    pre = breast_volume(3)
    post_array = pre.array.copy()
    post_array[5:8, 10:20, 15:30] += 200.0  # an enhancing tumour
    post = Scan(post_array, pre.affine)
    model_input = breast_model_input(pre, post, size=64)
    assert model_input.shape == (64, 64) and model_input.array.dtype == np.float32
    assert 0.0 <= model_input.array.min() and model_input.array.max() <= 1.0
    steps = [h["step"] for h in model_input.provenance["history"]]
    assert steps == ["subtraction", "axial_mip", "normalise", "resize_square"]

    # A follow-up with half the enhancement, on the baseline's scale, is dimmer.
    half = Scan(pre.array + (post_array - pre.array) * 0.5, pre.affine)
    reference = subtraction_mip(pre, post)
    followup = breast_model_input(pre, half, reference=reference, size=64)
    assert followup.array.max() < 0.75 * model_input.array.max()


# === lung =====================================================================================

CT_GRID = Grid(shape=(40, 128, 128), spacing=(2.5, 1.5, 1.5))
CT_ORIGIN = (-100.0, -120.0, -300.0)


def ct_case(tumour_centre_mm=(5.0, 10.0, -20.0), seed: int = 0):
    """A lung-like CT (around -800 HU, no air so padding is recognisable) with a soft-tissue
    tumour, and its tumour mask."""
    rng = np.random.default_rng(seed)
    tumour = Blob.random(rng, center_mm=tumour_centre_mm, mean_radius_mm=10.0).mask(CT_GRID)
    hu = -800.0 + 40.0 * smooth_noise(rng, CT_GRID.shape, 1.0) + 840.0 * tumour
    affine = affine_from_spacing(CT_GRID.spacing, CT_ORIGIN)
    return (Scan(hu.astype(np.float32), affine),
            Scan(tumour.astype(np.uint8), affine, kind=LABELS))


def test_crop_shape_spacing_and_tumour_centred():
    ct, mask = ct_case()
    ct_crop, mask_crop = crop_around_tumour(ct, mask)
    assert ct_crop.shape == CROP_SHAPE == mask_crop.shape
    assert ct_crop.spacing == pytest.approx(CROP_SPACING)
    assert mask_crop.spacing == pytest.approx(CROP_SPACING)
    np.testing.assert_allclose(ct_crop.affine, mask_crop.affine)
    assert ct_crop.orientation == "LPS"  # DICOM order, whatever the CT's

    # The crop's centre is the tumour's centre of mass (in world mm), within half a voxel.
    tumour_world = world(mask.affine, np.argwhere(mask.array)[:, ::-1].T).mean(axis=1)
    centre = world(ct_crop.affine, (np.array(CROP_SHAPE[::-1]) - 1) / 2)
    np.testing.assert_allclose(centre, tumour_world, atol=1e-6)
    crop_tumour = world(mask_crop.affine, np.argwhere(mask_crop.array)[:, ::-1].T).mean(axis=1)
    assert np.all(np.abs(crop_tumour - tumour_world) < np.array(CROP_SPACING[::-1]) / 2)

    # The tumour stays whole and inside; its HU survive the resampling.
    assert set(np.unique(mask_crop.array)) == {0, 1}
    for axis in range(3):
        assert not np.take(mask_crop.array, 0, axis).any()
        assert not np.take(mask_crop.array, -1, axis).any()
    volume = np.count_nonzero(mask.array) * np.prod(CT_GRID.spacing)
    crop_volume = np.count_nonzero(mask_crop.array) * np.prod(CROP_SPACING)
    assert abs(crop_volume / volume - 1) < 0.3
    assert ct_crop.array[mask_crop.array > 0].mean() > -300
    assert ct_crop.provenance["history"][-1]["tumour_touches_border"] is False


def test_crop_pads_outside_the_ct():
    # Tumour near the CT's right/anterior corner: the 288 mm box runs far past the 192 mm CT.
    ct, mask = ct_case(tumour_centre_mm=(-20.0, 70.0, 75.0))
    ct_crop, mask_crop = crop_around_tumour(ct, mask)
    # Where each crop voxel falls in the CT, in CT voxel indices (x, y, z).
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in CROP_SHAPE[::-1]], indexing="ij"), -1)
    to_ct = np.linalg.inv(ct.affine) @ ct_crop.affine
    index = grid @ to_ct[:3, :3].T + to_ct[:3, 3]  # (x, y, z, 3), x first
    index = index.transpose(2, 1, 0, 3)  # to array order of the crop
    n = np.array(ct.shape[::-1])
    outside = np.any((index < -1) | (index > n), axis=-1)
    inside = np.all((index > 1) & (index < n - 2), axis=-1)
    assert outside.any() and inside.any()
    assert np.all(ct_crop.array[outside] == AIR_HU)
    assert np.all(ct_crop.array[inside] > -950)  # lung-like HU, not padding
    assert np.all(mask_crop.array[outside] == 0)
    assert mask_crop.array.any()


def test_other_masks_share_the_crop_geometry():
    ct, mask = ct_case()
    ct_crop, mask_crop = crop_around_tumour(ct, mask, shape=(8, 40, 48), spacing=(5.0, 2.0, 2.5))
    assert ct_crop.shape == (8, 40, 48)
    assert ct_crop.spacing == pytest.approx((5.0, 2.0, 2.5))
    # A "vessel" mask identical to the tumour mask must crop to exactly the tumour crop.
    vessels = crop_to_box(Scan(mask.array.copy(), mask.affine, kind=LABELS), ct_crop)
    np.testing.assert_array_equal(vessels.array, mask_crop.array)
    np.testing.assert_allclose(vessels.affine, ct_crop.affine)
    # Lobes: label values survive, and the tumour's lobe (right half, label 2) contains it.
    lobes = np.where(np.arange(CT_GRID.shape[2]) < CT_GRID.shape[2] // 2, 1, 2)
    lobes = np.broadcast_to(lobes, CT_GRID.shape).astype(np.uint8)
    lobe_crop = crop_to_box(Scan(lobes, ct.affine, kind=LABELS), CropBox.of(ct_crop))
    assert set(np.unique(lobe_crop.array)) <= {0, 1, 2}
    assert np.all(lobe_crop.array[mask_crop.array > 0] == 1)  # tumour at x = -20 mm: left


@pytest.mark.parametrize("codes", [("L", "P", "S"), ("P", "S", "R")])
def test_crop_is_the_same_for_any_ct_storage_orientation(codes):
    ct, mask = ct_case()  # stored RAS
    ras_ct, ras_mask = crop_around_tumour(ct, mask, shape=(8, 32, 32))
    other_ct, other_mask = crop_around_tumour(reoriented(ct, codes), reoriented(mask, codes),
                                              shape=(8, 32, 32))
    np.testing.assert_allclose(other_ct.affine, ras_ct.affine, atol=1e-6)
    np.testing.assert_allclose(other_ct.array, ras_ct.array, atol=1e-3)
    np.testing.assert_array_equal(other_mask.array, ras_mask.array)


def test_crop_bad_inputs():
    ct, mask = ct_case()
    with pytest.raises(InputError, match="tumour mask is empty"):
        crop_around_tumour(ct, Scan(np.zeros_like(mask.array), mask.affine, kind=LABELS))
    far = mask.affine.copy()
    far[:3, 3] += 1000.0
    with pytest.raises(InputError, match="origin .* does not match .*CT's grid"):
        crop_around_tumour(ct, Scan(mask.array, far, kind=LABELS))
    with pytest.raises(InputError, match="crop spacing"):
        tumour_box(mask, spacing=(0.0, 3.0, 3.0))
    with pytest.raises(InputError, match="3D"):
        crop_around_tumour(Scan(ct.array[10], ct.affine), mask)


def test_hu_window_range_and_presets():
    hu = np.array([[-2000, -1350, -600, 150, 3000]], np.float32)
    ct = Scan(hu, np.eye(4))
    lung = hu_window(ct)
    np.testing.assert_allclose(lung.array, [[0.0, 0.0, 0.5, 1.0, 1.0]], atol=1e-6)
    assert lung.array.dtype == np.float32
    assert lung.provenance["history"][-1] == {"step": "hu_window", "level": -600.0,
                                              "width": 1500.0}
    soft = hu_window(Scan(np.array([[-160, 40, 240, 0]], np.float32), np.eye(4)),
                     *HU_WINDOWS["mediastinal"])
    np.testing.assert_allclose(soft.array, [[0.0, 0.5, 1.0, 0.4]], atol=1e-6)
    crop, _ = crop_around_tumour(*ct_case(), shape=(4, 16, 16))
    windowed = hu_window(crop)
    assert 0.0 <= windowed.array.min() and windowed.array.max() <= 1.0
    with pytest.raises(InputError, match="width"):
        hu_window(ct, level=0, width=0)
