"""The synthetic breast DCE-MRI patient: geometry, realism checks, calibration of the
response model to the published tumour size reductions, and counterfactual consistency."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from napari_nacsim.core.errors import InputError
from napari_nacsim.core.schema import BREAST
from napari_nacsim.science import measure
from napari_nacsim.science.phantoms import breast, breast_outcomes, shapes

COHORT_SEED = 0
COHORT_SIZE = 200
# Published ground truth (NAC simulation paper): tumour size reduction vs T0, percent.
TARGETS = {("T1", True): 47.93, ("T1", False): 43.13, ("T2", True): 87.48, ("T2", False): 59.28}
TOLERANCE = 3.0


@pytest.fixture(scope="module")
def patient():
    return breast.make_patient(COHORT_SEED, 0)


@pytest.fixture(scope="module")
def rendering(patient):
    return patient.render()


@pytest.fixture(scope="module")
def cohort():
    """200 patients with their tumour sizes, factual and with pCR flipped."""
    rows = []
    for index in range(COHORT_SIZE):
        p = breast.make_patient(COHORT_SEED, index)
        rows.append((p, p.tumour_sizes(), p.tumour_sizes({"pCR": not p.clinical["pCR"]})))
    return rows


def _group_means(sizes_and_labels):
    """Mean measured reduction (%) per (time point, pCR) from (pCR, sizes) pairs."""
    means = {}
    for t in ("T1", "T2"):
        for pcr in (True, False):
            values = [s["reduction_percent"][t] for label, s in sizes_and_labels if label == pcr]
            means[(t, pcr)] = float(np.mean(values))
    return means


# --- determinism and bookkeeping ---------------------------------------------------------

def test_render_is_bit_identical_for_the_same_seed(rendering):
    again = breast.make_patient(COHORT_SEED, 0).render()
    for t in ("T0", "T1", "T2"):
        for channel in ("pre", "post"):
            assert np.array_equal(rendering.scans[t][channel].array, again.scans[t][channel].array)
        assert np.array_equal(rendering.masks[t]["tumour"].array, again.masks[t]["tumour"].array)
    assert json.dumps(rendering.truth, sort_keys=True) == json.dumps(again.truth, sort_keys=True)


def test_different_patients_differ(rendering):
    other = breast.make_patient(COHORT_SEED, 1).render()
    assert other.patient_id == "BR0002" and rendering.patient_id == "BR0001"
    assert not np.allclose(rendering.scans["T0"]["pre"].array, other.scans["T0"]["pre"].array)
    assert rendering.truth["tumour_center_mm"] != other.truth["tumour_center_mm"]
    # Another cohort seed gives another patient with the same id.
    third = breast.make_patient(COHORT_SEED + 1, 0)
    assert third.id == "BR0001"
    assert not np.allclose(third.anatomy.tumour.center_mm, breast.make_patient(0, 0).anatomy
                           .tumour.center_mm)


def test_scans_masks_and_provenance(patient, rendering):
    assert patient.family is BREAST and rendering.family is BREAST
    assert set(patient.clinical) == {"pCR", "HR", "HER2"}
    assert all(isinstance(v, bool) for v in patient.clinical.values())
    assert rendering.clinical == patient.clinical
    assert set(rendering.scans) == set(rendering.masks) == set(BREAST.timepoint_names)
    for t in BREAST.timepoint_names:
        assert set(rendering.scans[t]) == set(BREAST.channels)
        assert set(rendering.masks[t]) == set(BREAST.masks)
        scans = [*rendering.scans[t].values(), rendering.masks[t]["tumour"]]
        for scan in scans:
            assert scan.shape == (32, 128, 128)
            assert scan.spacing == pytest.approx((3.0, 2.0, 2.0))
            assert scan.provenance["synthetic"] is True
            assert scan.provenance["timepoint"] == t
            assert scan.provenance["patient"] == "BR0001"
            assert scan.provenance["scenario"] == patient.clinical
        for channel, scan in rendering.scans[t].items():
            assert scan.kind == "image" and scan.array.dtype == np.float32
            assert scan.provenance["channel"] == channel
            assert np.all(np.isfinite(scan.array)) and scan.array.min() >= 0
        mask = rendering.masks[t]["tumour"]
        assert mask.kind == "labels" and mask.array.dtype == np.uint8
        assert set(np.unique(mask.array)) <= {0, 1}
    json.dumps(rendering.truth)  # JSON-able


def test_truth_reports_what_the_masks_show(rendering):
    truth = rendering.truth
    for t in ("T0", "T1", "T2"):
        mask = rendering.masks[t]["tumour"]
        assert truth["tumour_area_mm2"][t] == measure.projected_area_mm2(mask.array, mask.spacing)
    for t in ("T1", "T2"):
        assert truth["reduction_percent"][t] == pytest.approx(measure.reduction_percent(
            truth["tumour_area_mm2"]["T0"], truth["tumour_area_mm2"][t]))
        assert truth["reduction_percent"][t] == pytest.approx(
            truth["target_reduction_percent"][t], abs=3.0)
    assert truth["subtype"] == breast_outcomes.subtype_name(rendering.clinical["HR"],
                                                   rendering.clinical["HER2"])
    assert np.allclose(truth["misalignment_mm"]["T0"], np.eye(4))


def test_tumour_sizes_is_the_render_path(patient, rendering):
    for scenario in (None, {"pCR": not patient.clinical["pCR"], "HER2": True}):
        sizes = patient.tumour_sizes(scenario)
        truth = rendering.truth if scenario is None else patient.render(scenario).truth
        for key, value in sizes.items():
            assert truth[key] == value, key


def test_lesion_free_rendering_is_the_same_patient_without_its_tumour(patient, rendering):
    free = patient.render(tumour=False)
    assert free.truth["lesion_free"] is True and rendering.truth["lesion_free"] is False
    for t in BREAST.timepoint_names:
        assert not free.masks[t]["tumour"].array.any()
        assert free.truth["tumour_area_mm2"][t] == 0.0
        assert free.scans[t]["post"].provenance["lesion_free"] is True
        assert "lesion_free" not in rendering.scans[t]["post"].provenance
    # Same anatomy and nuisances: at T0 (no misalignment) the images differ only at the
    # tumour (its soft edge reaches a little beyond the mask).
    near = ndimage.binary_dilation(rendering.masks["T0"]["tumour"].array > 0, iterations=3)
    for channel in ("pre", "post"):
        differs = free.scans["T0"][channel].array != rendering.scans["T0"][channel].array
        assert differs.any() and not (differs & ~near).any()
    # ... and no enhancing tumour: the post-pre difference at the tumour's place drops
    tumour = rendering.masks["T0"]["tumour"].array > 0
    gain = {name: float(np.mean(r.scans["T0"]["post"].array[tumour]
                                - r.scans["T0"]["pre"].array[tumour]))
            for name, r in (("with", rendering), ("without", free))}
    assert gain["without"] < 0.5 * gain["with"]
    json.dumps(free.truth)


def test_bad_scenarios_are_refused_with_the_field_named(patient):
    with pytest.raises(InputError, match="BR0001.*pCR"):
        patient.render({"pCR": "maybe"})
    with pytest.raises(InputError, match="ER"):
        patient.tumour_sizes({"ER": True})


# --- anatomy and intensities -------------------------------------------------------------

def _iou(a, b):
    return np.count_nonzero(a & b) / np.count_nonzero(a | b)


def test_tumour_is_irregular_and_inside_the_breast():
    for index in range(4):
        p = breast.make_patient(COHORT_SEED, index)
        grid = p.grid
        mask = p.render().masks["T0"]["tumour"].array.astype(bool)
        assert mask.sum() > 20
        coords = grid.coords()
        points = coords[mask]
        centre = points.mean(axis=0)
        # Not a sphere of the same volume...
        radius = np.cbrt(3 * mask.sum() * np.prod(grid.spacing) / (4 * np.pi))
        sphere = np.linalg.norm(coords - centre, axis=-1) < radius
        assert _iou(mask, sphere) < 0.95
        # ... nor the ellipsoid with the same second moments (solid ellipsoid: cov = a²/5).
        values, vectors = np.linalg.eigh(np.cov((points - centre).T))
        local = (coords - centre) @ vectors
        ellipsoid = np.sum(local ** 2 / (5 * values), axis=-1) < 1
        assert _iou(mask, ellipsoid) < 0.95
        # Inside the breast, anterior to the chest wall, T0 mean radius 6-16 mm.
        z, y, x = points.T
        assert np.all(p.anatomy.breast_level(z, y, x) < 1.0)
        assert np.all(y > p.anatomy.wall_y(z, x))
        assert 6.0 - 1e-9 <= np.cbrt(np.prod(p.anatomy.tumour.radii_mm)) <= 16.0 + 1e-9


def test_non_fat_saturated_contrast_and_enhancement(patient, rendering):
    """Fat bright, parenchyma darker pre-contrast; on the subtraction (post - pre) the tumour
    is far brighter than the tissue around it, also on the axial MIP."""
    pre = rendering.scans["T0"]["pre"].array
    post = rendering.scans["T0"]["post"].array
    subtraction = post - pre
    mask = rendering.masks["T0"]["tumour"].array.astype(bool)
    around = ndimage.binary_dilation(mask, iterations=4) & ~ndimage.binary_dilation(mask)
    assert subtraction[mask].mean() > 4 * max(subtraction[around].mean(), 1.0)
    assert subtraction[mask].mean() > 300  # strong enhancement, signal units of ~1000
    mip = subtraction.max(axis=0)
    footprint = mask.any(axis=0)
    ring = ndimage.binary_dilation(footprint, iterations=6) & ~ndimage.binary_dilation(
        footprint, iterations=2)
    assert np.median(mip[footprint]) > 2 * np.median(mip[ring])
    # Pre-contrast: fat (the brightest tissue) well above the tumour / parenchyma.
    z, y, x = (patient.grid.coords()[..., i] for i in range(3))
    breast_region = (patient.anatomy.breast_level(z, y, x) < 0.8) & ~around & ~mask
    assert np.percentile(pre[breast_region], 90) > 1.8 * pre[mask].mean()


def drawn(scan):
    """A stored phantom scan (LPS storage) back in the RAS index order it was drawn in, the
    frame of the recorded misalignment matrices."""
    return scan.array[:, ::-1, ::-1]


def test_followups_are_misaligned_but_show_the_same_anatomy(patient, rendering):
    pre0 = drawn(rendering.scans["T0"]["pre"])
    for t in ("T1", "T2"):
        matrix = np.asarray(rendering.truth["misalignment_mm"][t])
        assert not np.allclose(matrix, np.eye(4), atol=1e-3)
        assert np.all(np.abs(matrix[:3, 3]) <= 3.0)
        pre = drawn(rendering.scans[t]["pre"])
        moved = shapes.warp(pre0, patient.grid, matrix, order=1)
        # Away from the tumour, the follow-up is the T0 anatomy moved by the recorded
        # transform (up to noise and coil bias): that fits much better than no move at all.
        away = ~ndimage.binary_dilation(drawn(rendering.masks[t]["tumour"]).astype(bool)
                                        | drawn(rendering.masks["T0"]["tumour"]).astype(bool),
                                        iterations=3)
        away &= moved > 0
        aligned = np.corrcoef(moved[away], pre[away])[0, 1]
        unaligned = np.corrcoef(pre0[away], pre[away])[0, 1]
        assert aligned > 0.97 and aligned > unaligned + 0.02
        # The mask is in the follow-up's frame: the full-volume warp of the T0-frame tumour.
        scale = rendering.truth["tumour_scale"][t]
        expected = shapes.warp(patient.anatomy.tumour.mask(patient.grid, scale).astype(np.uint8),
                               patient.grid, matrix, order=0)
        assert np.array_equal(drawn(rendering.masks[t]["tumour"]), expected)


# --- cohort: prevalences and calibration -------------------------------------------------

def test_prevalences_are_plausible(cohort):
    labels = np.array([[p.clinical["HR"], p.clinical["HER2"], p.clinical["pCR"]]
                       for p, _, _ in cohort], float)
    hr, her2, pcr = labels.mean(axis=0)
    assert 0.48 <= hr <= 0.68
    assert 0.18 <= her2 <= 0.38
    assert 0.22 <= pcr <= 0.46
    subtypes = {s["subtype"] for _, s, _ in cohort}
    assert subtypes == {"HR+/HER2-", "HR+/HER2+", "HR-/HER2+", "HR-/HER2-"}
    # pCR is commoner in HR-/HER2+ than in HR+/HER2- (the strongest contrast of the model).
    def rate(name):
        return np.mean([p.clinical["pCR"] for p, s, _ in cohort if s["subtype"] == name])
    assert rate("HR-/HER2+") > rate("HR+/HER2-") + 0.2
    radii = [np.cbrt(np.prod(p.anatomy.tumour.radii_mm)) for p, _, _ in cohort]
    assert 6.0 - 1e-9 <= min(radii) and max(radii) <= 16.0 + 1e-9 and 8.0 < np.median(radii) < 12.0


def test_cohort_reductions_match_the_published_ground_truth(cohort):
    means = _group_means([(p.clinical["pCR"], s) for p, s, _ in cohort])
    for key, target in TARGETS.items():
        assert means[key] == pytest.approx(target, abs=TOLERANCE), key
    # Realised (measured on the masks) vs drawn reductions: the size fit works per patient.
    errors = [s["reduction_percent"][t] - s["target_reduction_percent"][t]
              for _, s, _ in cohort for t in ("T1", "T2")]
    assert abs(np.mean(errors)) < 0.5 and np.max(np.abs(errors)) < 6.0


def test_counterfactual_cohort_means_also_match(cohort):
    """Everyone rendered with pCR flipped: the response model, not the label bookkeeping,
    drives the size, so the flipped groups land on the same targets."""
    means = _group_means([(not p.clinical["pCR"], c) for p, _, c in cohort])
    for key, target in TARGETS.items():
        assert means[key] == pytest.approx(target, abs=TOLERANCE), key
    for p, factual, counterfactual in cohort:
        assert factual["tumour_area_mm2"]["T0"] == counterfactual["tumour_area_mm2"]["T0"]
        responder = factual if p.clinical["pCR"] else counterfactual
        other = counterfactual if p.clinical["pCR"] else factual
        assert responder["tumour_area_mm2"]["T2"] < other["tumour_area_mm2"]["T2"], p.id


# --- counterfactual rendering --------------------------------------------------------------

@pytest.mark.parametrize("want_pcr", [True, False])
def test_counterfactual_changes_only_the_response(cohort, want_pcr):
    patient = next(p for p, _, _ in cohort if p.clinical["pCR"] is want_pcr)
    factual = patient.render()
    flipped = patient.render({"pCR": not want_pcr})
    assert flipped.clinical["pCR"] is (not want_pcr)
    assert flipped.truth["counterfactual"] and not factual.truth["counterfactual"]
    for channel in ("pre", "post"):
        assert np.array_equal(factual.scans["T0"][channel].array,
                              flipped.scans["T0"][channel].array)
    assert np.array_equal(factual.masks["T0"]["tumour"].array, flipped.masks["T0"]["tumour"].array)
    for key in ("misalignment_mm", "latent_quantiles", "contrast_factor", "tumour_center_mm"):
        assert factual.truth[key] == flipped.truth[key], key
    for t in ("T1", "T2"):
        # Same anatomy, misalignment, bias and noise draws: far from the tumour the
        # follow-up images are bit-identical; near it they differ.
        distance = ndimage.distance_transform_edt(
            ~factual.masks["T0"]["tumour"].array.astype(bool), sampling=patient.grid.spacing)
        near = distance < 20.0  # mm: growth, soft edge, misalignment and interpolation
        for channel in ("pre", "post"):
            a, b = factual.scans[t][channel].array, flipped.scans[t][channel].array
            assert np.array_equal(a[~near], b[~near])
        assert not np.array_equal(factual.scans[t]["post"].array, flipped.scans[t]["post"].array)
    area = {r.clinical["pCR"]: r.truth["tumour_area_mm2"]["T2"] for r in (factual, flipped)}
    assert area[True] < area[False]
