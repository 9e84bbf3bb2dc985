"""The what-if session (engine, no Qt): arms, follow-ups, samples, reuse, cancellation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_nacsim.core.errors import InputError
from napari_nacsim.core.scan import Scan, affine_from_spacing
from napari_nacsim.core.schema import BREAST
from napari_nacsim.engine import (Cancelled, CancelToken, WhatIfRequest, WhatIfSession,
                                  load_model)
from napari_nacsim.engine.results import comparison_figure, write_result
from napari_nacsim.engine.session import scenario_title
from napari_nacsim.science.measure import measure_tumour


class CountingSegmenter:
    """A stand-in segmenter: thresholds the image (the nnU-Net path has its own tests);
    counts calls so reuse can be checked."""

    def __init__(self, threshold: float = 0.6):
        self.calls = 0
        self.threshold = threshold

    def segment(self, image: Scan) -> Scan:
        self.calls += 1
        mask = (image.array > self.threshold).astype(np.uint8)
        return image.derive(mask, step="segment_tumour", kind="labels")

    def describe(self):
        return {"name": f"threshold {self.threshold} (test)"}


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture
def baseline():
    rng = np.random.default_rng(3)
    image = rng.random((128, 128)).astype(np.float32) * 0.3   # the model grid: 2 mm
    yy, xx = np.mgrid[:128, :128]
    image[(yy - 60) ** 2 + (xx - 48) ** 2 < 144] = 0.95  # a bright "tumour"
    return Scan(array=image, affine=affine_from_spacing([2.0, 2.0]),
                provenance={"layer_name": "T0 MIP"})


CLINICAL = {"pCR": True, "HR": True, "HER2": False}


def test_pcr_vs_non_pcr_at_every_followup(model, baseline):
    seg = CountingSegmenter()
    session = WhatIfSession(model, seg)
    steps_seen = []
    result = session.run(baseline, WhatIfRequest(CLINICAL, target="T2", steps=2),
                         progress=lambda d, n, what: steps_seen.append((d, n)))
    assert [a.label for a in result.arms] == ["pCR", "non-pCR"]
    for arm, pcr in zip(result.arms, (True, False)):
        assert set(arm.followups) == {"T1", "T2"}
        assert arm.clinical == {**CLINICAL, "pCR": pcr}
        for tp, follow in arm.followups.items():
            assert follow.scenario == {"time": tp, **arm.clinical}
            assert follow.image.provenance["synthetic"] is True
            assert follow.image.provenance["scenario"]["time"] == tp
            # its own time point and kind, not the input's (T0)
            assert follow.image.provenance["timepoint"] == tp
            assert follow.image.provenance["input"]["timepoint"] == "T0"
            assert follow.diameter_change.baseline == result.baseline_size.diameter
            assert follow.spread is None and len(follow.sizes) == 1
            assert follow.change.baseline == result.baseline_size.total
            assert follow.size_mean == measure_tumour(follow.mask).total
    assert result.shown()[0][1].title == "T2 · pCR · HR+ HER2− (synthetic)"
    assert seg.calls == 1 + 4
    assert steps_seen[-1][0] == steps_seen[-1][1]  # progress reaches its total
    rows = result.table_rows()
    assert rows[0]["scenario"].startswith("T0 input") and len(rows) == 5
    assert rows[0]["diameter"].endswith(" mm") and rows[0]["diameter_value"] > 0
    assert all(r["diameter_delta"].endswith("%)") or r["diameter"] == "—" for r in rows[1:])

    # Same request again: remembered (no generation, no segmentation).
    again = session.run(baseline, WhatIfRequest(CLINICAL, target="T1", steps=2))
    assert seg.calls == 5 and again.target == "T1" and again.arms is result.arms
    # Another scenario: the baseline is not segmented again.
    session.run(baseline, WhatIfRequest({**CLINICAL, "HR": False}, target="T2", steps=2))
    assert seg.calls == 5 + 4


def test_same_seed_same_images_and_one_arm_without_comparison(model, baseline):
    a = WhatIfSession(model, CountingSegmenter()).run(
        baseline, WhatIfRequest(CLINICAL, target="T1", steps=2, compare=None, seed=5))
    b = WhatIfSession(model, CountingSegmenter()).run(
        baseline, WhatIfRequest(CLINICAL, target="T1", steps=2, compare=None, seed=5))
    assert len(a.arms) == 1 and a.arms[0].clinical == CLINICAL
    for tp in ("T1", "T2"):
        np.testing.assert_array_equal(a.arms[0].followups[tp].image.array,
                                      b.arms[0].followups[tp].image.array)
    assert scenario_title(BREAST, "T1", CLINICAL) == "T1 · pCR HR+ HER2− (synthetic)"


def test_samples_give_mean_sd_and_majority_mask(model, baseline):
    # At T1 the generated follow-ups keep the baseline's tumour, so a threshold of 0.3 finds
    # it in every sample, with a different size in each; the majority mask lies on the
    # baseline's tumour (the 128 px model: 428 of 430 pixels inside the disk, 2 on its edge).
    seg = CountingSegmenter(threshold=0.3)
    result = WhatIfSession(model, seg).run(
        baseline, WhatIfRequest(CLINICAL, target="T2", steps=2, samples=3, seed=10))
    follow = result.arms[0].followups["T1"]
    assert [s.provenance["seed"] for s in follow.samples] == [10, 11, 12]
    stack = np.stack([s.array for s in follow.samples])
    np.testing.assert_allclose(follow.image.array, stack.mean(0), atol=1e-6)
    np.testing.assert_allclose(follow.spread.array, stack.std(0, ddof=1), atol=1e-6)
    assert follow.image.provenance["synthetic"] is True and "seed" not in follow.image.provenance
    votes = np.stack([(s.array > seg.threshold) for s in follow.samples]).mean(0) >= 0.5
    np.testing.assert_array_equal(follow.mask.array > 0, votes)
    totals = [s.total for s in follow.sizes]
    assert follow.size_mean == pytest.approx(np.mean(totals))
    assert follow.size_sd == pytest.approx(np.std(totals, ddof=1))
    assert follow.n_found == 3 and all(t > 0 for t in totals) and len(set(totals)) == 3
    yy, xx = np.mgrid[:128, :128]
    disk = (yy - 60) ** 2 + (xx - 48) ** 2 < 144  # where the baseline's tumour is
    inside = follow.mask.array[disk].sum() / max(1, follow.mask.array.sum())
    assert follow.mask.array[disk].any() and inside >= 0.98   # measured: 428 of 430 pixels
    lo, hi = min(totals), max(totals)
    assert follow.describe_size() == (f"{np.mean(totals):.0f} ± {np.std(totals, ddof=1):.0f} "
                                      f"mm² (n=3, {lo:.0f}–{hi:.0f})")


def test_cancel_stops_between_steps(model, baseline):
    token = CancelToken()
    calls = []

    def progress(done, total, what):
        calls.append(done)
        if len(calls) == 3:
            token.cancel()

    with pytest.raises(Cancelled):
        WhatIfSession(model, CountingSegmenter()).run(
            baseline, WhatIfRequest(CLINICAL, target="T2", steps=50), progress=progress,
            cancel=token)
    assert len(calls) == 3  # stopped at the next step


@pytest.mark.parametrize("change, message", [
    (lambda s: Scan(np.zeros((4, 64, 64), np.float32), np.eye(4)), "got 3D"),
    (lambda s: Scan(np.full((64, 64), np.nan, np.float32), s.affine), "NaN"),
    (lambda s: Scan(np.zeros((64, 64), np.float32), s.affine), "constant"),
    (lambda s: Scan(s.array * 300, s.affine), "outside [0, 1]"),
])
def test_bad_images_are_one_line_input_errors(model, baseline, change, message):
    session = WhatIfSession(model, CountingSegmenter())
    with pytest.raises(InputError) as err:
        session.run(change(baseline), WhatIfRequest(CLINICAL, target="T2", steps=1))
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("request_kwargs, message", [
    ({"clinical": {"pCR": True, "HR": True}, "target": "T2"}, "'HER2'"),
    ({"clinical": {**CLINICAL, "ER": 1}, "target": "T2"}, "'ER'"),
    ({"clinical": {**CLINICAL, "HR": "maybe"}, "target": "T2"}, "HR"),
    ({"clinical": CLINICAL, "target": "T0"}, "not a follow-up"),
    ({"clinical": CLINICAL, "target": "T2", "compare": "age"}, "age"),
    ({"clinical": CLINICAL, "target": "T2", "samples": 0}, "samples"),
])
def test_bad_scenarios_name_the_field(model, baseline, request_kwargs, message):
    with pytest.raises(InputError) as err:
        WhatIfSession(model, CountingSegmenter()).run(baseline, WhatIfRequest(**request_kwargs))
    assert message in str(err.value)


def test_results_folder_and_figure(model, baseline, tmp_path):
    result = WhatIfSession(model, CountingSegmenter()).run(
        baseline, WhatIfRequest(CLINICAL, target="T2", steps=2, samples=2))
    report = write_result(result, tmp_path / "run")
    on_disk = json.loads((tmp_path / "run" / "report.json").read_text())
    assert on_disk["scenarios"][0]["followups"]["T2"]["files"]["sd_map"] == "T2_pCR_sd.nii.gz"
    assert len(on_disk["scenarios"][1]["followups"]["T1"]["files"]["samples"]) == 2
    assert report["request"]["samples"] == 2
    with pytest.raises(InputError, match="not empty"):
        write_result(result, tmp_path / "run")
    png = comparison_figure(result, tmp_path / "fig.png").read_bytes()
    assert png[:4] == b"\x89PNG"
