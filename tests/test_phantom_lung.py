"""The synthetic lung CT patient (NSCLC under immunotherapy): images, masks, clinical values,
outcome models and counterfactual renderings."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from napari_nacsim.core.errors import InputError
from napari_nacsim.core.schema import LUNG
from napari_nacsim.families import get_family
from napari_nacsim.science import measure
from napari_nacsim.science.phantoms import lung, lung_outcomes, shapes

COHORT = 0


@pytest.fixture(scope="module")
def patient():
    return lung.make_patient(COHORT, 2)


@pytest.fixture(scope="module")
def rendering(patient):
    return patient.render()


@pytest.fixture(scope="module")
def population():
    """Outcomes of 500 patients, through the same code path as rendering (no images)."""
    return [lung.make_patient(COHORT, i) for i in range(500)]


def drawn(scan):
    """A stored phantom scan (LPS storage) back in the RAS index order it was drawn in, the
    frame of the recorded misalignment matrix."""
    return scan.array[:, ::-1, ::-1]


def world_centre(scan, mask):
    """Centroid of ``mask`` (stored index order) in world RAS mm, (x, y, z)."""
    z, y, x = np.argwhere(mask).mean(0)
    return (scan.affine @ [x, y, z, 1.0])[:3]


def _arrays(rendering):
    out = {}
    for tp in ("pre", "post"):
        out[f"{tp}/ct"] = rendering.scans[tp]["ct"].array
        for name, scan in rendering.masks[tp].items():
            out[f"{tp}/{name}"] = scan.array
    return out


# --- identity, geometry, determinism ---------------------------------------------------------

def test_patient_identity_and_factory(patient):
    assert patient.id == "LU0003"
    assert patient.family is LUNG
    assert (patient.cohort_seed, patient.index) == (COHORT, 2)
    via_family = get_family("lung").make_phantom(COHORT, 2)
    assert isinstance(via_family, lung.LungPhantom) and via_family.clinical == patient.clinical


def test_scans_and_masks_have_the_documented_layout(rendering):
    grid = lung.CONFIG.grid
    assert set(rendering.scans) == set(rendering.masks) == {"pre", "post"}
    for tp in ("pre", "post"):
        ct = rendering.scans[tp]["ct"]
        assert set(rendering.scans[tp]) == {"ct"}
        assert ct.array.shape == grid.shape == (40, 128, 160)
        assert ct.array.dtype == np.float32
        assert np.allclose(ct.spacing, (4.0, 2.5, 2.5))
        assert ct.kind == "image"
        assert ct.provenance["synthetic"] is True
        assert ct.provenance["timepoint"] == tp and ct.provenance["patient"] == "LU0003"
        assert set(rendering.masks[tp]) == set(LUNG.masks) == {"tumour", "lobes", "vessels"}
        for name, mask in rendering.masks[tp].items():
            assert mask.kind == "labels" and mask.provenance["synthetic"] is True
            assert mask.array.shape == grid.shape and mask.array.dtype == np.uint8
            assert mask.same_grid(ct)
        assert set(np.unique(rendering.masks[tp]["lobes"].array)) == {0, 1, 2, 3, 4, 5}
        assert set(np.unique(rendering.masks[tp]["vessels"].array)) == {0, 1}
    assert rendering.masks["pre"]["tumour"].array.any()
    # as visits (what a family's preprocessing takes): each time point's scans and masks
    visits = rendering.visits()
    assert {tp: set(v) for tp, v in visits.items()} == {
        tp: {"ct", "tumour", "lobes", "vessels"} for tp in ("pre", "post")}
    assert visits["post"]["lobes"] is rendering.masks["post"]["lobes"]


def test_same_seed_same_arrays_different_patients_differ():
    lung._anatomy.cache_clear()  # recompute, do not just return the cached volumes
    first = _arrays(lung.make_patient(COHORT, 5).render())
    lung._anatomy.cache_clear()
    again = _arrays(lung.make_patient(COHORT, 5).render())
    for key in first:
        assert np.array_equal(first[key], again[key]), key
    other = _arrays(lung.make_patient(COHORT, 6).render())
    assert not np.array_equal(first["pre/ct"], other["pre/ct"])
    assert not np.array_equal(first["pre/lobes"], other["pre/lobes"])
    assert lung.make_patient(COHORT, 5).clinical != lung.make_patient(COHORT, 6).clinical
    assert lung.make_patient(COHORT + 1, 5).clinical != lung.make_patient(COHORT, 5).clinical


# --- anatomy and attenuation ----------------------------------------------------------------

def test_hounsfield_ranges_are_plausible(rendering):
    ct = rendering.scans["pre"]["ct"].array
    lobes = rendering.masks["pre"]["lobes"].array > 0
    vessels = rendering.masks["pre"]["vessels"].array > 0
    tumour = rendering.masks["pre"]["tumour"].array > 0
    corner = ct[:, :6, :6]  # air outside the body
    assert -1010 < np.median(corner) < -990
    assert 12 < corner.std() < 25  # ~18 HU noise
    parenchyma = ct[lobes & ~vessels & ~tumour]
    assert -900 < np.median(parenchyma) < -810
    assert 0 < np.median(ct[tumour]) < 70  # soft tissue
    assert -20 < np.median(ct[vessels]) < 80  # blood, with partial volume
    fat = np.mean((ct > -150) & (ct < -60))
    soft = np.mean((ct > 20) & (ct < 80))
    assert fat > 0.02 and soft > 0.05
    assert np.count_nonzero(ct > 500) > 200  # cortical bone: ribs, spine
    assert ct.min() >= -1024 and ct.max() <= 3071


def test_lobes_are_anatomically_placed(rendering):
    scan = rendering.masks["pre"]["lobes"]
    lobes = scan.array
    counts = {name: int(np.count_nonzero(lobes == label))
              for name, label in lung.LOBE_LABELS.items()}
    assert all(n > 2000 for n in counts.values()), counts
    # World RAS (x, y, z): +x patient's right, +y anterior, +z superior.
    centre = {name: world_centre(scan, lobes == label)
              for name, label in lung.LOBE_LABELS.items()}
    for name in ("RUL", "RML", "RLL"):
        assert centre[name][0] > 30, name
    for name in ("LUL", "LLL"):
        assert centre[name][0] < -30, name
    assert centre["RUL"][2] > centre["RLL"][2] and centre["LUL"][2] > centre["LLL"][2]
    assert centre["RML"][1] > centre["RLL"][1]  # the middle lobe is anterior
    assert centre["RML"][2] < centre["RUL"][2]  # and below the upper lobe
    # Stored in LPS order: row 0 is anterior, column 0 the patient's right.
    assert scan.orientation == "LPS"


def test_all_five_lobes_present_for_many_patients():
    for index in range(6):
        lobes = lung.make_patient(11, index).render().masks["pre"]["lobes"].array
        assert all(np.count_nonzero(lobes == k) > 1000 for k in range(1, 6)), index


def test_vessels_and_tumour_lie_in_the_lungs(patient, rendering):
    for tp in ("pre", "post"):
        masks = {k: v.array > 0 for k, v in rendering.masks[tp].items()}
        assert not np.any(masks["tumour"] & ~masks["lobes"])
        assert not np.any(masks["vessels"] & ~masks["lobes"])
        assert not np.any(masks["vessels"] & masks["tumour"])
        vessel_fraction = masks["vessels"].sum() / masks["lobes"].sum()
        assert 0.005 < vessel_fraction < 0.08
    lobes = rendering.masks["pre"]["lobes"].array
    tumour = rendering.masks["pre"]["tumour"].array > 0
    own = np.mean(lobes[tumour] == lung.LOBE_LABELS[patient.tumour_lobe])
    assert own > 0.8
    assert rendering.truth["tumour_lobe"] == patient.tumour_lobe


def test_baseline_tumour_size_is_realistic():
    for index in range(4):
        patient = lung.make_patient(COHORT, index)
        truth = patient.render().truth
        assert 16 <= patient.tumour_diameter_mm <= 58
        assert 10 < truth["longest_diameter_mm"]["pre"] < 70
        assert truth["tumour_volume_ml"]["pre"] > 0.3


def test_truth_is_json_and_consistent(rendering):
    truth = json.loads(json.dumps(rendering.truth, allow_nan=False))
    tumour = rendering.masks["pre"]["tumour"]
    assert math.isclose(truth["tumour_volume_ml"]["pre"],
                        measure.volume_ml(tumour.array, tumour.spacing))
    assert truth["synthetic"] is True and truth["patient_id"] == "LU0003"
    assert truth["lobe_labels"] == {"1": "RUL", "2": "RML", "3": "RLL", "4": "LUL", "5": "LLL"}
    assert truth["recist"] == lung_outcomes.recist_category(truth["diameter_change_percent"])
    assert truth["responder"] == (truth["recist"] in ("CR", "PR"))
    assert np.allclose(truth["misalignment"]["pre"], np.eye(4))
    post = np.asarray(truth["misalignment"]["post"])
    assert post.shape == (4, 4) and not np.allclose(post, np.eye(4))
    assert np.allclose(post[3], [0, 0, 0, 1]) and np.all(np.abs(post[:3, 3]) <= 3.0)


def test_followup_is_misaligned_and_renoised(rendering):
    pre = rendering.scans["pre"]["ct"].array
    post = rendering.scans["post"]["ct"].array
    lobes_pre = drawn(rendering.masks["pre"]["lobes"])
    lobes_post = drawn(rendering.masks["post"]["lobes"])
    assert not np.array_equal(lobes_pre, lobes_post)  # repositioned ...
    overlap = np.mean(lobes_pre[lobes_pre > 0] == lobes_post[lobes_pre > 0])
    assert overlap > 0.8  # ... by a little ...
    matrix = np.asarray(rendering.truth["misalignment"]["post"])
    moved = shapes.warp(np.ascontiguousarray(lobes_pre), lung.CONFIG.grid, matrix, order=0)
    inner = (slice(4, -4), slice(None), slice(None))  # away from the crop's ends
    assert np.mean(moved[inner] == lobes_post[inner]) > 0.995  # ... by the recorded move
    air = (slice(None), slice(0, 6), slice(0, 6))
    assert not np.allclose(pre[air], post[air])  # independent noise
    assert abs(np.median(post[air]) + 1000) < 10  # no empty space pulled in at the edges
    for edge in (0, -1):  # the tilt brings anatomy, not empty space, into the end slices
        body_pre, body_post = np.mean(pre[edge] > -500), np.mean(post[edge] > -500)
        assert abs(body_post / body_pre - 1) < 0.08


# --- clinical values and outcome models -----------------------------------------------------

def test_clinical_values_pass_the_schema(population):
    for patient in population[:100]:
        values = patient.clinical
        assert LUNG.validate_clinical(values, subject=patient.id) == values
        assert set(values) == {v.name for v in LUNG.variables}
        assert math.isclose(values["NLR"], values["ANC"] / values["ALC"], rel_tol=1e-9)
        assert isinstance(values["responder"], bool) and isinstance(values["death"], bool)


def test_clinical_distributions_are_realistic(population):
    def values(name):
        return np.array([p.clinical[name] for p in population])

    age = values("age")
    assert 62 < np.mean(age) < 70 and 6 < np.std(age) < 12 and age.min() >= 35
    assert 0.45 < np.mean(values("sex") == "male") < 0.65
    assert 0.6 < np.mean(values("race") == "White") < 0.8
    assert 3 < np.median(values("CEA")) < 5.5 and np.percentile(values("CEA"), 95) > 20
    assert 4 < np.median(values("ANC")) < 6 and 1.2 < np.median(values("ALC")) < 1.8
    assert 0.1 < np.median(values("AEC")) < 0.2 and 0.45 < np.median(values("AMC")) < 0.65
    pdl1 = values("PD_L1")
    for fraction in (np.mean(pdl1 < 1), np.mean((pdl1 >= 1) & (pdl1 < 50)), np.mean(pdl1 >= 50)):
        assert 0.25 < fraction < 0.42


def test_responder_rate_matches_the_paper(population):
    rate = np.mean([p.clinical["responder"] for p in population])
    assert abs(rate - 19 / 74) < 0.05, rate
    mean_p = np.mean([p.outcome().response_probability for p in population])
    assert abs(mean_p - 19 / 74) < 0.03, mean_p


def test_response_depends_on_pdl1_and_nlr(population):
    pdl1 = np.array([p.clinical["PD_L1"] for p in population])
    nlr = np.array([p.clinical["NLR"] for p in population])
    responder = np.array([p.clinical["responder"] for p in population])
    assert responder[pdl1 >= 50].mean() > responder[pdl1 < 1].mean() + 0.1
    assert responder[nlr < np.median(nlr)].mean() > responder[nlr >= np.median(nlr)].mean()


def test_tumour_change_follows_the_response(population):
    for patient in population:
        out = patient.outcome()
        if out.responder:
            assert out.diameter_change_percent <= -30 and out.recist in ("CR", "PR")
        else:
            assert out.diameter_change_percent > -30 and out.recist in ("SD", "PD")
    recists = {p.outcome().recist for p in population}
    assert recists == {"CR", "PR", "SD", "PD"}


def test_rendered_tumours_shrink_for_responders_only():
    # Measured on voxel masks (2.5 mm in-plane): allow one voxel of discretisation.
    seen = set()
    for index in range(8):
        patient = lung.make_patient(3, index)
        for forced in (True, False):
            truth = patient.render({"responder": forced}).truth
            pre, post = truth["longest_diameter_mm"]["pre"], truth["longest_diameter_mm"]["post"]
            if forced:
                assert post <= 0.7 * pre + 2.5, (index, truth)
                assert truth["tumour_volume_ml"]["post"] < 0.45 * truth["tumour_volume_ml"]["pre"]
            else:
                assert post >= 0.7 * pre - 2.5, (index, truth)
                assert truth["tumour_volume_ml"]["post"] > 0.2 * truth["tumour_volume_ml"]["pre"]
            seen.add(truth["recist"])
    assert {"PR", "SD", "PD"} <= seen


def test_survival_model(population):
    months = np.array([p.clinical["survival_months"] for p in population])
    death = np.array([p.clinical["death"] for p in population])
    responder = np.array([p.clinical["responder"] for p in population])
    assert np.all(months > 0) and np.all(months <= 60)
    assert 0.1 < 1 - death.mean() < 0.5  # some censored
    km_r = lung_outcomes.kaplan_meier_median(months[responder], death[responder])
    km_n = lung_outcomes.kaplan_meier_median(months[~responder], death[~responder])
    assert km_r > 1.5 * km_n, (km_r, km_n)
    assert 5 < km_n < 15


def test_kaplan_meier_median():
    assert lung_outcomes.kaplan_meier_median([1, 2, 3, 4], [True] * 4) == 2
    # Censoring at 1 leaves 3 at risk: S = 2/3 after t=2, 1/3 after t=3.
    assert lung_outcomes.kaplan_meier_median([1, 2, 3, 4], [False, True, True, True]) == 3
    assert lung_outcomes.kaplan_meier_median([1, 2], [False, False]) == math.inf


# --- counterfactual scenarios -------------------------------------------------------------

def test_better_biomarkers_never_lower_the_response(population):
    for patient in population[:200]:
        factual = patient.outcome()
        better = patient.outcome({"PD_L1": 90, "NLR": patient.clinical["NLR"] / 2})
        assert better.response_probability >= factual.response_probability
        assert better.responder >= factual.responder
        assert better.clinical["PD_L1"] == 90
        assert math.isclose(better.clinical["ANC"], patient.clinical["ANC"] / 2)
        assert better.clinical["ALC"] == patient.clinical["ALC"]
    changed = sum(p.outcome({"PD_L1": 90, "NLR": 1.0}).responder != p.clinical["responder"]
                  for p in population[:200])
    assert changed > 10  # the scenario matters for some patients


def test_scenario_rendering_keeps_baseline_and_anatomy(patient, rendering):
    factual = dict(patient.clinical)
    scenario = {"PD_L1": 90, "ANC": 2.0, "ALC": 2.5}
    what_if = patient.render(scenario)
    assert np.array_equal(what_if.scans["pre"]["ct"].array, rendering.scans["pre"]["ct"].array)
    for name in ("tumour", "lobes", "vessels"):
        assert np.array_equal(what_if.masks["pre"][name].array,
                              rendering.masks["pre"][name].array)
    assert np.array_equal(what_if.masks["post"]["lobes"].array,
                          rendering.masks["post"]["lobes"].array)
    assert math.isclose(what_if.clinical["NLR"], 0.8)  # re-derived from ANC / ALC
    assert what_if.truth["response_probability"] > rendering.truth["response_probability"]
    assert what_if.scans["post"]["ct"].provenance["scenario"] == scenario
    assert patient.clinical == factual and scenario == {"PD_L1": 90, "ANC": 2.0, "ALC": 2.5}


def test_forced_response_shrinks_the_followup_tumour(patient):
    responds = patient.render({"responder": True})
    persists = patient.render({"responder": False})
    assert responds.truth["responder"] and responds.truth["responder_forced"]
    assert not persists.truth["responder"]
    assert responds.truth["diameter_change_percent"] <= -30
    assert persists.truth["diameter_change_percent"] > -30
    assert (responds.truth["tumour_volume_ml"]["post"]
            < persists.truth["tumour_volume_ml"]["post"])
    assert np.array_equal(responds.scans["pre"]["ct"].array, persists.scans["pre"]["ct"].array)
    assert not np.array_equal(responds.scans["post"]["ct"].array,
                              persists.scans["post"]["ct"].array)
    # Survival follows the forced response (same latent uniforms).
    assert responds.clinical["survival_months"] >= persists.clinical["survival_months"]


def test_bad_scenarios_are_rejected_clearly(patient):
    with pytest.raises(InputError, match="LU0003.*PD_L1.*plausible"):
        patient.render({"PD_L1": 150})
    with pytest.raises(InputError, match="LU0003.*'HER2'.*not a lung variable"):
        patient.outcome({"HER2": True})
    with pytest.raises(InputError, match="survival_months.*cannot be set"):
        patient.outcome({"survival_months": 12})
    with pytest.raises(InputError, match="NLR.*disagrees"):
        patient.outcome({"ANC": 4.0, "ALC": 2.0, "NLR": 5.0})
    with pytest.raises(InputError, match="responder.*yes/no"):
        patient.outcome({"responder": "maybe"})


def test_render_speed_after_first_render_is_interactive(patient):
    import time

    patient.render()
    start = time.perf_counter()
    patient.render({"PD_L1": 80})
    assert time.perf_counter() - start < 0.5  # the anatomy is reused across scenarios
