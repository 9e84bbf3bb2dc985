"""Affine registration (ANTs) of a follow-up to its baseline, and resampling onto its grid.

The synthetic pair is a textured "body" with a lobulated tumour, moved by a known affine
(rotation, shift, anisotropic scale) with `shapes.warp`. Everything is checked in world
millimetres, on grids with a non-zero origin and, in one case, LPS-flipped axes, so a wrong
RAS<->LPS conversion, axis order or sign fails the recovery test.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

from napari_nacsim.core.errors import InputError
from napari_nacsim.core.scan import LABELS, Scan, affine_from_spacing
from napari_nacsim.science.phantoms.shapes import Blob, Grid, rotation_matrix, smooth_noise, warp
from napari_nacsim.science.preprocess import registration as reg
from napari_nacsim.science.preprocess.registration import (
    RegistrationSettings,
    apply,
    register_affine,
    to_ants,
)
from napari_nacsim.science.preprocess.resample import resample

GRID = Grid(shape=(32, 64, 64), spacing=(3.0, 2.0, 2.0))
# The defaults: ANTs stops each level once the metric settles, about a second here.
SETTINGS = RegistrationSettings()


def ras_affine() -> np.ndarray:
    return affine_from_spacing(GRID.spacing, origin_xyz=(-60.0, 25.0, 110.0))


def lps_affine() -> np.ndarray:
    """Same voxel sizes, but x and y indices run towards patient left and posterior."""
    affine = np.diag([-GRID.spacing[2], -GRID.spacing[1], GRID.spacing[0], 1.0])
    affine[:3, 3] = (80.0, -15.0, -200.0)
    return affine


def centred_mm_to_world(affine: np.ndarray) -> np.ndarray:
    """4x4: a `Grid` point (z, y, x mm about the grid centre) -> world (RAS) of a scan on that
    grid with ``affine``."""
    spacing = np.asarray(GRID.spacing)
    to_index_zyx = np.eye(4)
    to_index_zyx[:3, :3] = np.diag(1 / spacing)
    to_index_zyx[:3, 3] = GRID.extent_mm / (2 * spacing) - 0.5
    zyx_to_xyz = np.eye(4)[[2, 1, 0, 3]]
    return affine @ zyx_to_xyz @ to_index_zyx


def known_motion() -> np.ndarray:
    """The follow-up's motion in `Grid` mm (z, y, x): 5 deg about the S-I axis, a few mm of
    shift and up to 3 % scale."""
    motion = np.eye(4)
    motion[:3, :3] = rotation_matrix(np.deg2rad([5.0, 0.0, 0.0])) @ np.diag([0.98, 1.03, 1.0])
    motion[:3, 3] = (2.0, -3.0, 4.0)
    return motion


def phantom(seed: int = 3):
    """(image, tumour mask) arrays on GRID: a textured ellipsoidal body and a bright tumour."""
    rng = np.random.default_rng(seed)
    coords = GRID.coords()
    body = np.linalg.norm(coords / np.array([38.0, 52.0, 55.0]), axis=-1) < 1.0
    texture = smooth_noise(rng, GRID.shape, sigma_vox=(1.0, 1.5, 1.5))
    tumour = Blob.random(rng, center_mm=(5.0, -12.0, 15.0), mean_radius_mm=11.0).mask(GRID)
    image = body * (100.0 + 25.0 * texture) + 120.0 * tumour
    return image.astype(np.float32), tumour


def pair(affine: np.ndarray):
    """Baseline and follow-up scans (and their tumour masks), follow-up moved by
    `known_motion`."""
    image, tumour = phantom()
    motion = known_motion()
    moved = warp(image, GRID, motion, order=1)
    moved_mask = warp(tumour.astype(np.uint8), GRID, motion, order=0)
    fixed = Scan(image, affine)
    moving = Scan(moved, affine)
    return (fixed, moving, Scan(tumour.astype(np.uint8), affine, kind=LABELS),
            Scan(moved_mask, affine, kind=LABELS))


def true_fixed_to_moving(affine: np.ndarray) -> np.ndarray:
    # moving(p) = fixed(M p) in grid mm, so the fixed point p sits at M^-1 p in the moving scan.
    g = centred_mm_to_world(affine)
    return g @ np.linalg.inv(known_motion()) @ np.linalg.inv(g)


def corner_points(affine: np.ndarray) -> np.ndarray:
    n = np.array(GRID.shape[::-1]) - 1
    idx = np.array(np.meshgrid(*[[0, k] for k in n], indexing="ij")).reshape(3, -1)
    return (affine[:3, :3] @ idx + affine[:3, 3:4]).T


def rotation_error_deg(a: np.ndarray, b: np.ndarray) -> float:
    def rotation(m):
        u, _, vt = np.linalg.svd(m[:3, :3])
        return u @ vt
    r = rotation(a) @ rotation(b).T
    return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1))))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def ras_case():
    fixed, moving, fixed_mask, moving_mask = pair(ras_affine())
    return fixed, moving, fixed_mask, moving_mask, register_affine(fixed, moving, settings=SETTINGS)


# --- accuracy ------------------------------------------------------------------------------

@pytest.mark.parametrize("make_affine", [ras_affine, lps_affine], ids=["RAS", "LPS"])
def test_recovers_known_affine_within_a_voxel_and_a_degree(make_affine, ras_case):
    affine = make_affine()
    if make_affine is ras_affine:
        registration = ras_case[-1]
    else:
        fixed, moving, _, _ = pair(affine)
        registration = register_affine(fixed, moving, settings=SETTINGS)
    truth = true_fixed_to_moving(affine)
    corners = corner_points(affine)
    homogeneous = np.c_[corners, np.ones(len(corners))].T
    error_mm = np.linalg.norm((registration.fixed_to_moving @ homogeneous
                               - truth @ homogeneous)[:3], axis=0)
    assert error_mm.max() < min(GRID.spacing), f"corner errors {np.round(error_mm, 2)} mm"
    assert rotation_error_deg(registration.fixed_to_moving, truth) < 1.0
    # The motion is not trivially small: the identity would miss by several voxels.
    identity_error = np.linalg.norm((truth @ homogeneous)[:3] - homogeneous[:3], axis=0)
    assert identity_error.max() > 4 * min(GRID.spacing)


def test_applied_registration_aligns_image_and_keeps_labels(ras_case):
    fixed, moving, fixed_mask, moving_mask, registration = ras_case
    aligned = apply(registration, moving)
    assert aligned.shape == fixed.shape
    np.testing.assert_allclose(aligned.affine, fixed.affine)
    assert aligned.array.dtype == np.float32
    inside = fixed.array > 0
    before = np.abs(moving.array - fixed.array)[inside].mean()
    after = np.abs(aligned.array - fixed.array)[inside].mean()
    assert after < 0.35 * before

    aligned_mask = registration.apply(moving_mask)  # kind=labels -> label interpolation
    assert aligned_mask.kind == LABELS
    assert aligned_mask.array.dtype == moving_mask.array.dtype
    assert set(np.unique(aligned_mask.array)) <= set(np.unique(moving_mask.array))
    assert dice(aligned_mask.array, fixed_mask.array) > 0.9
    assert dice(moving_mask.array, fixed_mask.array) < 0.8  # registration did the work

    step = aligned_mask.provenance["history"][-1]
    assert step["step"] == "registration_resample"
    assert step["interpolation"] == "labelwise-linear"
    assert abs(step["rotation_deg"] - 5.0) < 1.0


def test_label_interpolation_never_invents_labels(ras_case):
    *_, registration = ras_case
    labels = np.zeros(GRID.shape, np.int16)
    labels[5:20, 10:40, 10:30] = 3
    labels[12:28, 30:55, 25:60] = 7  # overlaps: 3 and 7 touch, their mean 5 must not appear
    aligned = apply(registration, Scan(labels, ras_affine()), labels=True)
    assert set(np.unique(aligned.array)) == {0, 3, 7}
    linear = apply(registration, Scan(labels, ras_affine()), labels=False)
    assert len(np.unique(linear.array)) > 3  # linear interpolation does blend labels


def test_matches_ants_own_resampling(ras_case):
    """Our RAS matrix applied with scipy must equal ANTs applying its own transform file: a
    sign or axis-order slip in the LPS conversion would show here."""
    import ants

    fixed, moving, *_, registration = ras_case
    ours = apply(registration, moving).array
    run = registration.settings  # as run, pyramid filled in
    with tempfile.TemporaryDirectory() as tmp:
        result = ants.registration(to_ants(fixed, shift_to_zero=True),
                                   to_ants(moving, shift_to_zero=True), "Affine",
                                   outprefix=os.path.join(tmp, "x_"),
                                   aff_iterations=run.iterations,
                                   aff_shrink_factors=run.shrink_factors,
                                   aff_smoothing_sigmas=run.smoothing_sigmas,
                                   aff_random_sampling_rate=run.sampling_rate)
        theirs = ants.apply_transforms(to_ants(fixed), to_ants(moving),
                                       result["fwdtransforms"], interpolator="linear",
                                       defaultvalue=float(moving.array.min()))
    theirs = theirs.numpy().transpose(2, 1, 0)
    inside = fixed.array > 0
    assert np.abs(ours - theirs)[inside].mean() < 1.0  # intensities ~100; same seed, same fit


# --- determinism and hygiene -----------------------------------------------------------------

def test_two_runs_are_bit_identical(ras_case, monkeypatch, tmp_path):
    fixed, moving, *_, first = ras_case
    workdir, scratch = tmp_path / "cwd", tmp_path / "tmp"
    workdir.mkdir()
    scratch.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    second = register_affine(fixed, moving, settings=SETTINGS)
    assert np.array_equal(first.fixed_to_moving, second.fixed_to_moving)
    assert np.array_equal(apply(first, moving).array, apply(second, moving).array)
    # ANTs' transform files went to a temporary directory that is gone again.
    assert list(workdir.iterdir()) == []
    assert list(scratch.iterdir()) == []


def test_itk_runs_single_threaded():
    # Set at import of the registration module; with 2 threads ANTs is not reproducible.
    assert os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] == "1"


# --- geometry --------------------------------------------------------------------------------

def test_ants_image_has_the_scan_physical_geometry():
    import ants

    affine = lps_affine()
    affine[:3, :3] = rotation_matrix(np.deg2rad([0.0, 0.0, 10.0]))[::-1, ::-1] @ affine[:3, :3]
    array = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    image = to_ants(Scan(array, affine))
    np.testing.assert_allclose(reg.affine_from_ants(image), affine, atol=1e-5)
    # Voxel (x=5, y=1, z=2) is array[2, 1, 5]; ANTs must find it at the same world point.
    world_ras = affine @ [5, 1, 2, 1]
    lps = world_ras[:3] * [-1, -1, 1]
    index = ants.transform_physical_point_to_index(image, tuple(lps))
    np.testing.assert_allclose(index, [5, 1, 2], atol=1e-4)
    assert image.numpy()[5, 1, 2] == array[2, 1, 5]


def test_resample_identity_and_shift():
    rng = np.random.default_rng(0)
    array = rng.normal(size=(6, 7, 8)).astype(np.float32)
    scan = Scan(array, ras_affine())
    same = resample(scan, scan.shape, scan.affine)
    np.testing.assert_allclose(same, array, atol=1e-5)
    # Target grid shifted by one voxel along x: sample (z, y, x + 1).
    shifted = scan.affine.copy()
    shifted[:3, 3] += scan.affine[:3, 0]
    out = resample(scan, scan.shape, shifted, fill=-5.0)
    np.testing.assert_allclose(out[:, :, :-1], array[:, :, 1:], atol=1e-5)
    assert np.all(out[:, :, -1] == -5.0)


# --- bad input -------------------------------------------------------------------------------

def test_bad_inputs_are_input_errors(ras_case):
    fixed, moving, *_ = ras_case
    nan = moving.array.copy()
    nan[3, 4, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        register_affine(fixed, Scan(nan, moving.affine))
    with pytest.raises(InputError, match="constant"):
        register_affine(Scan(np.full(GRID.shape, 7.0, np.float32), fixed.affine), moving)
    with pytest.raises(InputError, match="3D"):
        register_affine(fixed, Scan(moving.array[10], moving.affine))
    with pytest.raises(InputError, match="type_of_transform"):
        register_affine(fixed, moving, type_of_transform="SyN")
    sheared = fixed.affine.copy()
    sheared[0, 1] = 1.0
    with pytest.raises(InputError, match="perpendicular"):
        register_affine(Scan(fixed.array, sheared), moving)
    with pytest.raises(InputError, match="resolution level"):
        RegistrationSettings(iterations=(10, 10), shrink_factors=(2, 1, 1))
    with pytest.raises(InputError, match="NaN"):
        apply(ras_case[-1], Scan(nan, moving.affine))


def test_pyramid_follows_volume_size():
    small = RegistrationSettings().resolved(32 * 64 * 64)
    assert small.shrink_factors == (4, 2, 1) and small.smoothing_sigmas == (2.0, 1.0, 0.0)
    breast = RegistrationSettings().resolved(96 * 256 * 256)
    assert breast.shrink_factors == (8, 4, 2) and breast.smoothing_sigmas == (3.0, 2.0, 1.0)
    ct = RegistrationSettings().resolved(300 * 512 * 512)
    assert ct.shrink_factors == (16, 8, 4)
    fixed = RegistrationSettings(shrink_factors=(6, 3, 1)).resolved(10**9)
    assert fixed.shrink_factors == (6, 3, 1)
