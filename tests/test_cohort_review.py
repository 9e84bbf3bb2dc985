"""The cohort review behind the failure-case inspector: per-case metrics, images, CSV, and
plain errors for bad input."""

from __future__ import annotations

import csv
import dataclasses
import json
import math

import numpy as np
import pytest

from cohort_helpers import tiny_cohort, without_truth
from napari_nacsim.core.cohort import load_cohort
from napari_nacsim.core.errors import InputError
from napari_nacsim.core.schema import LUNG
from napari_nacsim.engine.cohort_review import (METRICS, cases_to_csv, describe_summary,
                                                review_cohort, summarise)
from napari_nacsim.engine.jobs import Cancelled, CancelToken

STEPS = 2  # the bundled model at 2 sampler steps: seconds per patient


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    # BR0001: T0 + T1 (one case); BR0002: baseline only (skipped)
    return tiny_cohort(tmp_path_factory.mktemp("cohort") / "c", 2, baseline_only=(1,))


@pytest.fixture(scope="module")
def reviewed(manifest):
    seen = []
    review = review_cohort(manifest, steps=STEPS, progress=lambda d, n, w: seen.append((d, n)))
    return review, list(review), seen


def test_phantom_case_has_finite_metrics_images_and_provenance(reviewed):
    review, cases, progress = reviewed
    assert [c.key for c in cases] == ["BR0001 T1"]
    assert [(s.patient, s.reason) for s in review.skipped] == [("BR0002", "no follow-up scans")]
    assert progress[-1][0] == progress[-1][1]  # reached the end
    (case,) = cases
    assert case.unit == "mm²" and case.baseline_time == "T0"
    for key in ("ssim", "psnr", "size_t0", "size_real", "size_generated", "match"):
        assert math.isfinite(case.metrics[key]), key
    # every metric recomputed from the images and masks the review returns
    im = case.images
    _assert_pair_metrics(case.metrics, "", im.generated, im.real, im.generated_mask,
                         im.real_mask)
    _assert_pair_metrics(case.metrics, "cf_", im.counterfactual, im.counterfactual_truth,
                         im.counterfactual_mask, im.counterfactual_truth_mask)
    assert case.metrics["size_t0"] == pytest.approx(_area(im.baseline_mask))
    assert case.metrics["size_real"] > 0 and case.metrics["size_t0"] > 0  # a tumour to match
    # phantoms: the counterfactual (pCR flipped) is scored against its ground truth
    assert case.has_truth and case.counterfactual["pCR"] is not case.clinical["pCR"]
    for key in ("cf_ssim", "cf_psnr", "cf_size_truth", "cf_size_generated", "cf_match"):
        assert case.metrics[key] is not None and math.isfinite(case.metrics[key]), key

    im = case.images
    size = review.model.image_size
    for scan in (im.baseline, im.real, im.generated, im.difference, im.baseline_mask,
                 im.real_mask, im.generated_mask, im.counterfactual, im.counterfactual_truth):
        assert scan.shape == (size, size)
        assert scan.spacing == pytest.approx(im.baseline.spacing)
    for scan in (im.generated, im.generated_mask, im.difference, im.counterfactual):
        assert scan.provenance["synthetic"] is True
        assert scan.provenance["model_hash"] == review.model.model_hash
    for scan in (im.baseline, im.real, im.counterfactual_truth):  # phantom renderings
        assert "model_hash" not in scan.provenance
    assert im.generated.provenance["steps"] == STEPS
    assert im.generated.provenance["scenario"]["time"] == "T1"
    np.testing.assert_allclose(im.difference.array, im.generated.array - im.real.array,
                               atol=1e-6)
    assert "1 case (1 patient)" in describe_summary(summarise(cases))


def _area(mask) -> float:
    """mm² of a 2D mask: its non-zero pixels times the pixel area."""
    return float(np.count_nonzero(mask.array) * np.prod(mask.spacing))


def _assert_pair_metrics(metrics, prefix, generated, reference, gen_mask, ref_mask):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    ref = np.asarray(reference.array, np.float64)
    gen = np.clip(np.asarray(generated.array, np.float64), 0.0, 1.0)
    assert metrics[prefix + "ssim"] == pytest.approx(
        structural_similarity(ref, gen, data_range=1.0), abs=1e-9)
    assert metrics[prefix + "psnr"] == pytest.approx(
        peak_signal_noise_ratio(ref, gen, data_range=1.0), abs=1e-9)
    size_gen, size_ref = _area(gen_mask), _area(ref_mask)
    assert metrics[prefix + "size_generated"] == pytest.approx(size_gen)
    assert metrics[prefix + ("size_truth" if prefix else "size_real")] == pytest.approx(size_ref)
    match = 100.0 if size_gen == size_ref == 0 else 100.0 * min(size_gen, size_ref) / max(
        size_gen, size_ref)
    assert metrics[prefix + "match"] == pytest.approx(match)
    if not prefix:
        assert metrics["size_error_percent"] == pytest.approx(100 * (size_gen - size_ref) /
                                                              size_ref)
        a, b = gen_mask.array != 0, ref_mask.array != 0
        assert metrics["dice"] == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_csv_is_written_atomically_and_parses(reviewed, tmp_path):
    _, cases, _ = reviewed
    out = cases_to_csv(cases, tmp_path / "review.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["review.csv"]  # no temp left over
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1
    row = rows[0]
    assert row["patient"] == "BR0001" and row["time"] == "T1"
    assert float(row["ssim"]) == pytest.approx(cases[0].metrics["ssim"], abs=1e-5)
    assert float(row["size_generated_mm2"]) == pytest.approx(cases[0].metrics["size_generated"])
    assert float(row["cf_match_percent"]) == pytest.approx(cases[0].metrics["cf_match"],
                                                           abs=1e-6)
    assert float(row["match_percent"]) == pytest.approx(cases[0].metrics["match"], abs=1e-6)
    assert row["steps"] == str(STEPS) and row["model_hash"]


def test_real_data_has_no_counterfactual_metrics(manifest):
    review = review_cohort(without_truth(manifest), steps=STEPS)
    (case,) = list(review)
    assert not case.has_truth and case.images.counterfactual is None
    assert all(case.metrics[m.key] is None for m in METRICS if m.counterfactual)
    assert math.isfinite(case.metrics["ssim"])
    assert summarise([case])["means"]["cf_match"] is None


def test_bad_manifests_raise_one_line_input_errors(manifest, tmp_path, monkeypatch):
    junk = tmp_path / "junk.json"
    junk.write_text("not json")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something else"}))
    for path, words in ((junk, "not valid JSON"), (other, "not a nacsim cohort manifest"),
                        (tmp_path / "absent.json", "does not exist")):
        with pytest.raises(InputError, match=words) as err:
            review_cohort(path)
        assert "\n" not in str(err.value)

    payload = json.loads(manifest.read_text())
    payload["patients"][0]["scans"]["T1"]["pre"] = "nowhere/T1_pre.nii.gz"
    missing = manifest.with_name("missing.json")
    missing.write_text(json.dumps(payload))
    with pytest.raises(InputError, match="T1_pre.nii.gz.*missing"):
        review_cohort(missing)

    lung = dataclasses.replace(load_cohort(manifest), family=LUNG)
    from napari_nacsim.families.lung import LungFamily

    monkeypatch.setattr(LungFamily, "bundled_generator", None)  # a family without one
    with pytest.raises(InputError, match="the lung family has no bundled generative model"):
        review_cohort(lung)


def test_broken_file_names_the_file(manifest):
    payload = json.loads(manifest.read_text())
    source = manifest.parent / payload["patients"][0]["scans"]["T1"]["post"]
    broken = manifest.parent / "broken_T1_post.nii.gz"
    broken.write_bytes(source.read_bytes()[:200])
    payload["patients"][0]["scans"]["T1"]["post"] = broken.name
    bad = manifest.with_name("broken.json")
    bad.write_text(json.dumps(payload))
    review = review_cohort(bad, steps=STEPS)  # the manifest itself is fine ...
    with pytest.raises(InputError, match="broken_T1_post.nii.gz"):  # ... the file is not
        list(review)


def test_cancel_stops_the_review(manifest):
    token = CancelToken()
    said = []

    def progress(done, total, what):
        said.append(what)
        token.cancel()

    review = review_cohort(manifest, steps=STEPS, cancel=token, progress=progress)
    with pytest.raises(Cancelled):
        list(review)
    assert said == ["BR0001: reading and registering scans"]  # stopped before registering
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        review_cohort(manifest, cancel=token)


def test_review_command_writes_the_table(manifest, tmp_path, capsys):
    from napari_nacsim.cli.main import main

    out = tmp_path / "cases.csv"
    assert main(["review", str(manifest), "--csv", str(out), "--steps", str(STEPS),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "1 case (1 patient)" in printed and "skipped BR0002" in printed
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1 and rows[0]["patient"] == "BR0001"
    assert main(["review", str(manifest), "--csv", str(out), "--quiet"]) == 2  # no overwrite
    assert "already exists" in capsys.readouterr().err
