"""The cohort review compares the right images: its real follow-up is the phantom's own
rendering, its generated follow-up and counterfactual are what the model generates under
the patient's scenario and under the flipped one (their provenance says so, and generating
again gives them), and the counterfactual is scored against the phantom rendered under the
flipped scenario — for both families. Metrics are checked against images computed here,
not against the images the review returns (which would only prove they agree with
themselves). Also: a model of another family is refused, a patient missing a condition
value is skipped with the reason."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cohort_helpers import tiny_cohort
from immunodiff_helpers import ThresholdSegmenter
from napari_nacsim.core.cohort import load_cohort
from napari_nacsim.core.errors import InputError
from napari_nacsim.core.scan import LABELS, Scan
from napari_nacsim.engine import load_model, simulate
from napari_nacsim.engine.cohort_review import review_cohort
from napari_nacsim.families import get_family
from napari_nacsim.datasets.phantom_cohort import phantom_of, write_phantom_cohort

STEPS = 2


class MipThreshold:
    """Breast stand-in segmenter (the review's identity does not depend on nnU-Net)."""

    name = "threshold 0.5 (test)"

    def segment(self, image: Scan) -> Scan:
        return image.derive((np.asarray(image.array) > 0.5).astype(np.uint8),
                            step="segment", kind=LABELS)


SEGMENTERS = {"breast": MipThreshold, "lung": ThresholdSegmenter}
TOLERANCE = {"breast": 1e-5, "lung": 1e-2}   # the same computation, on one machine
FOLLOW_UP = {"breast": "T1", "lung": "post"}


def _manifest(family: str, folder):
    if family == "breast":
        return tiny_cohort(folder / "c", 1)                      # T0 + T1
    # cohort seed 0: its patient responds only under the flipped PD-L1 stratum, so the
    # counterfactual rendering differs from the real follow-up (where the draw does not
    # flip, the two are the same image)
    return write_phantom_cohort("lung", 1, 0, folder / "c", jobs=1)


@pytest.fixture(scope="module", params=["breast", "lung"])
def reviewed(request, tmp_path_factory):
    family = get_family(request.param)
    manifest = _manifest(family.name, tmp_path_factory.mktemp(f"review_{family.name}"))
    cohort = load_cohort(manifest)
    review = review_cohort(cohort, steps=STEPS, segmenter=SEGMENTERS[family.name](), seed=3)
    (case,) = list(review)
    return family, cohort, review, case


def _on_grid(family, model, entry) -> Scan:
    return family.resample(entry["image"], model.grid)


def _phantom_inputs(family, cohort, clinical=None) -> dict:
    """The phantom behind the cohort's patient rendered (under ``clinical``: its own
    scenario when None), baseline and the reviewed follow-up preprocessed as model inputs."""
    phantom = phantom_of(cohort, cohort.patients[0])
    rendering = phantom.render(None if clinical is None else dict(clinical))
    visits = rendering.visits()
    keep = (family.schema.baseline, FOLLOW_UP[family.name])
    return family.model_inputs({tp: visits[tp] for tp in keep})


def test_the_real_follow_up_is_the_phantoms_own_rendering(reviewed):
    family, cohort, review, case = reviewed
    inputs = _phantom_inputs(family, cohort)
    tol = TOLERANCE[family.name]
    real = _on_grid(family, review.model, inputs[case.time])
    baseline = _on_grid(family, review.model, inputs[family.schema.baseline])
    np.testing.assert_allclose(case.images.real.array, real.array, atol=tol)
    np.testing.assert_allclose(case.images.baseline.array, baseline.array, atol=tol)
    # the two are different images (the check can tell them apart)
    assert np.abs(real.array - baseline.array).max() > 100 * tol
    assert case.time == FOLLOW_UP[family.name] and case.baseline_time == family.schema.baseline


def test_generated_and_counterfactual_are_generated_under_their_scenarios(reviewed):
    family, cohort, review, case = reviewed
    patient = cohort.patients[0]
    own = {v.name: patient.clinical[v.name] for v in family.schema.condition_variables
           if v.derive is None}
    assert case.clinical == own
    flipped = family.counterfactual(own)
    assert case.counterfactual == flipped
    compared = {k for k in own if own[k] != flipped[k]}
    assert compared == {"pCR" if family.name == "breast" else "PD_L1"}
    generated, counterfactual = case.images.generated, case.images.counterfactual
    for image, clinical in ((generated, own), (counterfactual, flipped)):
        scenario = image.provenance["scenario"]
        assert scenario["time"] == case.time
        for name, value in clinical.items():
            assert scenario[name] == (pytest.approx(value) if isinstance(value, float)
                                      else value), name
        assert image.provenance["synthetic"] is True
        assert image.provenance["model_hash"] == review.model.model_hash
    # generating again under each provenance scenario gives the image the review scored
    inputs = _phantom_inputs(family, cohort)
    context = family.model_context(inputs[family.schema.baseline])
    again = simulate(review.model, case.images.baseline,
                     [generated.provenance["scenario"], counterfactual.provenance["scenario"]],
                     seed=3, steps=STEPS, context=context)
    tol = max(TOLERANCE[family.name], 0.5 if family.name == "lung" else 1e-4)
    np.testing.assert_allclose(generated.array, again[0].array, atol=tol)
    np.testing.assert_allclose(counterfactual.array, again[1].array, atol=tol)


def test_the_counterfactual_is_scored_against_the_phantoms_counterfactual_rendering(reviewed):
    from skimage.metrics import structural_similarity

    family, cohort, review, case = reviewed
    truth = _on_grid(family, review.model,
                     _phantom_inputs(family, cohort, case.counterfactual)[case.time])
    real = case.images.real
    tol = TOLERANCE[family.name]
    np.testing.assert_allclose(case.images.counterfactual_truth.array, truth.array, atol=tol)
    assert np.abs(truth.array - real.array).max() > 100 * tol   # not the real follow-up
    # the metrics are of these images, computed here
    lo, hi = family.model_input.value_range or family.model_input.display_range

    def ssim(a, b):
        return structural_similarity(np.clip(np.asarray(a, np.float64), lo, hi),
                                     np.clip(np.asarray(b, np.float64), lo, hi),
                                     data_range=hi - lo)

    assert case.metrics["cf_ssim"] == pytest.approx(
        ssim(truth.array, case.images.counterfactual.array), abs=1e-6)
    expected_real = _on_grid(family, review.model,
                             _phantom_inputs(family, cohort)[case.time])
    assert case.metrics["ssim"] == pytest.approx(
        ssim(expected_real.array, case.images.generated.array), abs=1e-6)


def test_a_model_of_another_family_is_refused(tmp_path):
    manifest = tiny_cohort(tmp_path / "c", 1)
    with pytest.raises(InputError) as err:
        review_cohort(manifest, model=load_model(family="lung", device="cpu"))
    message = str(err.value)
    assert "is a breast cohort but the model is for lung" in message and "\n" not in message


def test_a_patient_missing_a_condition_value_is_skipped_with_the_reason(tmp_path):
    cohort = load_cohort(tiny_cohort(tmp_path / "c", 2))
    first, second = cohort.patients
    without = dataclasses.replace(first, clinical={k: v for k, v in first.clinical.items()
                                                   if k != "HER2"})
    cohort = dataclasses.replace(cohort, patients=type(cohort.patients)([without, second]))
    review = review_cohort(cohort, steps=1, segmenter=MipThreshold())
    cases = list(review)
    assert [c.patient for c in cases] == [second.id]
    assert [(s.patient, s.reason) for s in review.skipped] == [
        (first.id, "no HER2 value (the model is conditioned on it)")]
