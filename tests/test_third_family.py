"""A model family defined only in tests/ (third_family.py) runs through every face of nacsim:
the training entrypoint, the engine session (arms over values, samples > 1, predictions),
`nacsim simulate`, the results folder, the cohort review and the workspace widget — with no
change under src/. This is what "a family is a plug-in" means."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

import third_family
from napari_nacsim.core.errors import InputError
from napari_nacsim.engine import WhatIfRequest, WhatIfSession, load_model

ROOT = Path(__file__).resolve().parents[1]


def _entrypoint(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "training" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def spheroid(tmp_path_factory):
    """The family registered, and a tiny generative model trained for it by the real
    training entrypoint (a few steps of both stages)."""
    family = third_family.register()
    root = tmp_path_factory.mktemp("spheroid")
    config = root / "spheroid_micro.json"
    config.write_text(json.dumps(third_family.micro_config()))
    code = _entrypoint("train_nac").main([
        "--config", str(config), "--out", str(root / "run"), "--patients", "8",
        "--cohort-seed", "3", "--stage1-steps", "3", "--stage2-steps", "3",
        "--batch-size", "4", "--cache", str(root / "cache"), "--cpu", "--quiet"])
    assert code == 0
    yield family, root / "run" / "model"
    third_family.unregister()


def _logistic(dose: float) -> float:
    return round(1.0 / (1.0 + math.exp(-(dose - 50.0) / 10.0)), 4)


def test_training_entrypoint_reads_the_family(spheroid):
    family, model_dir = spheroid
    card = json.loads((model_dir / "model_card.json").read_text())
    assert card["family"] == family.name
    assert card["data"]["source"] == family.training_data
    assert card["data"]["split"]["train"][0].startswith("SP")   # the family's phantom ids
    model = load_model(model_dir, device="cpu")
    assert model.family is family and model.grid == (third_family.GRID,) * 2


def test_session_compares_values_with_samples_and_predictions(spheroid):
    family, model_dir = spheroid
    model = load_model(model_dir, device="cpu")
    session = WhatIfSession(model, family.load_segmenter())
    image = family.sample_case(0, cohort_seed=11)["inputs"]["day0"]["image"]
    request = WhatIfRequest(clinical={"drug": "beta"}, target="week4", compare="dose",
                            compare_values=(10, 90), samples=2, seed=5)
    result = session.run(image, request)
    assert [arm.label for arm in result.arms] == ["Dose 10 mg", "Dose 90 mg"]
    assert [arm.clinical for arm in result.arms] == [{"dose": 10.0, "drug": "beta"},
                                                     {"dose": 90.0, "drug": "beta"}]
    for arm, dose in zip(result.arms, (10.0, 90.0)):
        follow = arm.followups["week4"]
        assert len(follow.samples) == 2 and follow.spread is not None
        np.testing.assert_allclose(follow.image.array,
                                   np.mean([s.array for s in follow.samples], axis=0), atol=1e-6)
        assert follow.image.provenance["synthetic"] is True
        assert [s.provenance["seed"] for s in follow.samples] == [5, 6]
        assert follow.title.startswith("week4 · Dose")
        assert arm.predictions["response_probability"]["value"] == _logistic(dose)
    rows = result.table_rows()
    assert rows[0]["predictions"] == ""
    assert rows[1]["predictions"] == f"P(response) {_logistic(10.0):.2f}"
    # the same request on a fresh session gives the same images (determinism)
    again = WhatIfSession(model, family.load_segmenter()).run(image, request)
    np.testing.assert_array_equal(again.arms[1].followups["week4"].image.array,
                                  result.arms[1].followups["week4"].image.array)
    # a categorical variable: every category by default; a number needs its values
    drugs = session.run(image, WhatIfRequest(clinical={"dose": 40}, target="week4",
                                             compare="drug"))
    assert [arm.label for arm in drugs.arms] == ["Drug alpha", "Drug beta", "Drug gamma"]
    with pytest.raises(InputError, match="give the values"):
        session.run(image, WhatIfRequest(clinical={"drug": "beta"}, target="week4",
                                         compare="dose"))
    with pytest.raises(InputError, match="outside the plausible range"):
        session.run(image, WhatIfRequest(clinical={"drug": "beta"}, target="week4",
                                         compare="dose", compare_values=(10, 900)))


def test_results_folder_has_report_and_figure(spheroid, tmp_path):
    from napari_nacsim.engine.results import write_result

    family, model_dir = spheroid
    session = WhatIfSession(load_model(model_dir, device="cpu"), family.load_segmenter())
    image = family.sample_case(1, cohort_seed=11)["inputs"]["day0"]["image"]
    result = session.run(image, WhatIfRequest(clinical={"drug": "gamma"}, target="week4"))
    report = write_result(result, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["family"] == "spheroid"
    assert [s["label"] for s in saved["scenarios"]] == ["Dose 10 mg", "Dose 90 mg"]
    assert saved["scenarios"][1]["predictions"]["response_probability"]["value"] == \
        _logistic(90.0)
    assert (tmp_path / "out" / "day0_baseline.nii.gz").exists()
    assert (tmp_path / "out" / "week4_Dose_90_mg.nii.gz").exists()
    assert (tmp_path / "out" / "comparison.png").stat().st_size > 5000


def test_cli_simulate_uses_the_family(spheroid, tmp_path):
    from napari_nacsim.cli.main import main

    _, model_dir = spheroid
    out = tmp_path / "sim"
    assert main(["simulate", "--family", "spheroid", "--model", str(model_dir), "--sample", "2",
                 "--out", str(out), "--quiet"]) == 0
    record = json.loads((out / "simulation.json").read_text())
    assert [o["scenario"]["dose"] for o in record["outputs"]] == [10.0, 90.0]
    assert all(o["scenario"]["time"] == "week4" for o in record["outputs"])
    assert (out / "input_day0.nii.gz").exists()
    # a scenario the schema refuses: one line, exit 2
    assert main(["simulate", "--model", str(model_dir), "--sample", "2", "--out",
                 str(tmp_path / "bad"), "--scenario", "time=week4,dose=5,drug=delta",
                 "--quiet"]) == 2


def test_cohort_review_scores_against_the_counterfactual_truth(spheroid, tmp_path):
    from napari_nacsim.engine.cohort_review import cases_to_csv, review_cohort
    from napari_nacsim.datasets.phantom_cohort import write_phantom_cohort
    from skimage.metrics import structural_similarity

    family, model_dir = spheroid
    manifest = write_phantom_cohort("spheroid", 2, 21, tmp_path / "cohort", jobs=1)
    review = review_cohort(manifest, model=load_model(model_dir, device="cpu"), steps=2)
    cases = list(review)
    assert [c.patient for c in cases] == ["SP0001", "SP0002"] and not review.skipped
    for case in cases:
        assert case.counterfactual == family.counterfactual(case.clinical)
        images = case.images
        expected = structural_similarity(np.asarray(images.real.array, float),
                                         np.clip(images.generated.array, 0, 1).astype(float),
                                         data_range=1.0)
        assert case.metrics["ssim"] == pytest.approx(expected)
        truth = family.counterfactual_truth(family.make_phantom(21, int(case.patient[2:]) - 1),
                                            case.counterfactual)["week4"]["image"]
        np.testing.assert_allclose(images.counterfactual_truth.array, truth.array)
        assert case.predictions["response_probability"]["value"] == \
            _logistic(case.clinical["dose"])
    rows = list(csv.DictReader(open(cases_to_csv(cases, tmp_path / "cases.csv"))))
    assert [float(r["predicted_response_probability"]) for r in rows] == \
        [_logistic(c.clinical["dose"]) for c in cases]


@pytest.mark.viewer
def test_workspace_builds_its_panel_and_grid_from_the_family(spheroid, make_napari_viewer,
                                                             qtbot):
    from napari_nacsim.plugin.grid_view import grid_of, group_layers, make_layer
    from napari_nacsim.plugin.layers import scan_to_layer_data
    from napari_nacsim.plugin.workspace import WhatIfWorkspace

    family, model_dir = spheroid
    viewer = make_napari_viewer()
    case = family.sample_case(0, cohort_seed=11)
    data, kwargs, kind = scan_to_layer_data(case["inputs"]["day0"]["image"],
                                            name="SP0001 day0 image · model input")
    kwargs["metadata"]["nacsim"]["patient"] = {"id": case["patient"],
                                               "clinical_values": case["clinical"]}
    layer = viewer.add_layer(make_layer(data, kwargs, kind))
    widget = WhatIfWorkspace(viewer)
    try:
        widget.auto_run.setChecked(False)
        assert widget.add_model_folder(model_dir)
        widget.select_input(layer.name)
        assert widget.panel.schema is family.schema
        assert {"dose", "drug"} <= {w.name for w in widget.panel}
        assert widget.compare_combo.currentData() == "dose"
        assert widget.compare_values.text() == "10, 90"
        widget.compare_values.setText("20, 70")
        assert widget.request().compare_values == (20.0, 70.0)
        before = widget.results_shown
        assert widget.run() is not None
        qtbot.waitUntil(lambda: widget.results_shown > before and not widget.runner.running,
                        timeout=120_000)
        result = widget.result
        assert [arm.label for arm in result.arms] == ["Dose 20 mg", "Dose 70 mg"]
        titles = [cell.name for cell in group_layers(viewer, "whatif")]
        assert any(t.startswith("week4 · Dose 20 mg") and t.endswith("(synthetic)")
                   for t in titles)
        assert grid_of(viewer).enabled
        header = [widget.table.table.horizontalHeaderItem(c).text()
                  for c in range(widget.table.table.columnCount())]
        assert header[-1] == "predicted"
    finally:
        widget.shutdown()


def test_manifest_cohort_matches_the_phantom_cohort(spheroid, tmp_path):
    """Evaluation data from a cohort manifest (files) equal those made in memory, with the
    counterfactual ground truth of phantom patients reachable the same way."""
    from napari_nacsim.datasets.paired import manifest_cohort, phantom_cohort
    from napari_nacsim.datasets.phantom_cohort import write_phantom_cohort

    family, _ = spheroid
    manifest = write_phantom_cohort("spheroid", 3, 31, tmp_path / "cohort", jobs=1)
    from_files, skipped = manifest_cohort(manifest, third_family.GRID)
    in_memory = phantom_cohort(family, 31, 3, third_family.GRID, cache_dir=tmp_path / "cache",
                               counterfactual_ids=["SP0001", "SP0002", "SP0003"])
    assert not skipped and from_files.ids == in_memory.ids
    np.testing.assert_allclose(from_files.images, in_memory.images, atol=1e-6)
    np.testing.assert_array_equal(from_files.masks, in_memory.masks)
    for pid in from_files.ids:
        assert from_files.cf_clinical[pid]["drug"] == in_memory.cf_clinical[pid]["drug"]
        np.testing.assert_allclose(from_files.cf_images[pid], in_memory.cf_images[pid],
                                   atol=1e-6)
