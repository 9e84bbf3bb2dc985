"""The prediction entrypoint, fast: 12 patients, 2 folds, the micro ImmunoDiff, one CNN
epoch; then the bundled heads through the lung family's predictions hook and
`nacsim predict` (one patient; bad input exits 2 with one line)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from prediction_helpers import lung_records, micro_model_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "training"))
    import evaluate_prediction

    tmp = tmp_path_factory.mktemp("pred")
    model = micro_model_folder(tmp / "model")
    lung_records(tmp / "records", 12)
    out = tmp / "out"
    rc = evaluate_prediction.main([
        "--patients", "12", "--cohort-seed", "0", "--records", str(tmp / "records"),
        "--model", str(model), "--variants", "full", "--folds", "2",
        "--cnn-epochs", "1", "--bundle", str(model / "prediction_heads"), "--out", str(out)])
    assert rc == 0
    return tmp, model, out


def test_entrypoint_scores_every_model_on_the_same_folds(evaluated):
    _, model, out = evaluated
    result = json.loads((out / "results.json").read_text())
    assert result["cohort"]["patients"] == 12 and result["cohort"]["responders"] == 4
    rows = result["rows"]
    expected = {"phantom ceiling (its p and pre-treatment hazard)",
                "phantom oracle (hazard knowing the response)",
                "phantom ceiling without tumour size (clinical part of its p)",
                "clinical only (logistic regression; Cox, lifelines)",
                "image CNN (MONAI DenseNet, 3D)", "image CNN + clinical",
                "ImmunoDiff heads (full)", "ImmunoDiff heads (full) + clinical",
                "ImmunoDiff heads (denoiser_features + clinical + baseline_diameter)"}
    assert set(rows) == expected
    for name, row in rows.items():
        assert len(row["folds"]) == 2
        if "without tumour size" not in name:
            assert 0.0 <= row["summary"]["c_index"]["mean"] <= 1.0, name
    # the stand-in ceiling: probabilities 0.6 / 0.2 for responders / others separate them
    ceiling = rows["phantom ceiling (its p and pre-treatment hazard)"]["summary"]
    assert ceiling["balanced_accuracy"]["mean"] == 1.0 and ceiling["roc_auc"]["mean"] == 1.0
    assert (out / "reliability.png").stat().st_size > 5000
    assert (out / "features_full.npz").exists()
    assert "| ImmunoDiff heads (full) |" in (out / "results.md").read_text()
    card = json.loads((model / "prediction_heads" / "heads_card.json").read_text())
    assert card["model_hash"] == json.loads((model / "model_card.json").read_text())[
        "model_hash"]
    from napari_nacsim.science.prediction.clinical import COLUMNS

    # what the product's heads read: the features, the clinical matrix, the baseline size
    assert card["inputs"] == ["denoiser_features", "clinical", "baseline_diameter"]
    assert card["training_cohort"]["patients"] == 12
    assert card["n_features"] == 32 + len(COLUMNS) + 1
    # the denoiser features got an L2 strength of their own (heads.GROUP_L2_GRID)
    assert len(card["files"]["response"]["l2"]) == 2


def test_family_hook_and_predict_cli(evaluated, capsys):
    from napari_nacsim.cli.main import main
    from napari_nacsim.core.scan import LABELS, Scan
    from napari_nacsim.core.scan_io import write_scan
    from napari_nacsim.engine import load_model
    from napari_nacsim.families import get_family
    from napari_nacsim.science.generative.immunodiff.data import read_record

    tmp, model_dir, _ = evaluated
    record = read_record(tmp / "records" / "records_0" / "00000.npz")
    a = record["arrays"]
    affine = np.diag([3.0, 3.0, 4.0, 1.0])
    crop = Scan(a["pre_image"].astype(np.float32), affine)
    context = {"lobes": Scan(a["pre_lobes"], affine, kind=LABELS),
               "vessels": Scan(a["pre_vessels"], affine, kind=LABELS)}
    family = get_family("lung")
    model = load_model(model_dir)
    clinical = {k: v for k, v in record["meta"]["clinical"].items()
                if k not in ("responder", "survival_months", "death")}
    mask = Scan(a["pre_tumour"].astype(np.uint8), affine, kind=LABELS)
    low = family.predictions(model, crop, {**clinical, "PD_L1": 0.0}, context,
                             baseline_mask=mask)
    high = family.predictions(model, crop, {**clinical, "PD_L1": 80.0}, context,
                              baseline_mask=mask)
    assert set(low) == {"response_probability", "survival_risk"}
    assert 0 < low["response_probability"]["value"] < 1 and low["survival_risk"]["value"] > 0
    assert low["survival_risk"]["unit"] == "× cohort" and low["survival_risk"]["meaning"]
    assert low != high                       # the scenario's clinical values matter
    assert family.predictions(model, crop, clinical, None,
                              baseline_mask=mask) == {}   # no anatomy: none

    paths = {}
    for name, scan in (("crop", crop), *context.items()):
        paths[name] = tmp / f"{name}.nii.gz"
        write_scan(scan, paths[name], overwrite=True)
    text = ",".join(f"{k}={v}" for k, v in clinical.items() if k != "NLR")
    out = tmp / "pred.json"
    rc = main(["predict", "--input", str(paths["crop"]), "--context",
               f"lobes={paths['lobes']}", "--context", f"vessels={paths['vessels']}",
               "--clinical", text, "--model", str(model_dir), "--out", str(out)])
    assert rc == 0
    saved = json.loads(out.read_text())["predictions"][0]
    # the CLI measures the baseline tumour with the bundled segmenter, as the workspace does
    measured = family.load_segmenter(device="cpu").segment(family.to_segmenter(crop))
    assert saved["predicted_response_probability"] == pytest.approx(
        family.predictions(model, crop, family.schema.validate_clinical(
            dict(clinical), subject="t", partial=True), context, baseline_mask=measured)[
            "response_probability"]["value"])

    capsys.readouterr()
    bad = [["predict", "--model", str(model_dir)],                        # nothing given
           ["predict", "--input", str(paths["crop"]), "--model", str(model_dir)],  # clinical
           ["predict", "--input", str(paths["crop"]), "--clinical", "age=70",
            "--model", str(model_dir)]]
    for argv in bad:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "error" in err, argv


def test_what_if_session_carries_the_heads_predictions_per_arm(evaluated):
    from immunodiff_helpers import ThresholdSegmenter

    from napari_nacsim.core.scan import LABELS, Scan
    from napari_nacsim.engine import WhatIfRequest, WhatIfSession, load_model
    from napari_nacsim.science.generative.immunodiff.data import read_record

    tmp, model_dir, _ = evaluated
    record = read_record(tmp / "records" / "records_0" / "00003.npz")
    a = record["arrays"]
    affine = np.diag([3.0, 3.0, 4.0, 1.0])
    crop = Scan(a["pre_image"].astype(np.float32), affine)
    context = {"lobes": Scan(a["pre_lobes"], affine, kind=LABELS),
               "vessels": Scan(a["pre_vessels"], affine, kind=LABELS)}
    clinical = {k: v for k, v in record["meta"]["clinical"].items()
                if k not in ("responder", "survival_months", "death", "NLR")}
    session = WhatIfSession(load_model(model_dir), ThresholdSegmenter())
    result = session.run(crop, WhatIfRequest(clinical=clinical, target="post",
                                             compare="PD_L1", compare_values=(0, 50),
                                             steps=1), context=context)
    low, high = (arm.predictions for arm in result.arms)
    assert set(low) == {"response_probability", "survival_risk"} and low != high
    assert result.has_predictions
    assert "P(response)" in result.arms[0].describe_predictions()
    assert "× cohort" in result.arms[0].describe_predictions()


def test_predict_cli_over_a_cohort_manifest(evaluated, tmp_path):
    import csv

    from napari_nacsim.cli.main import main
    from napari_nacsim.datasets.phantom_cohort import write_phantom_cohort

    _, model_dir, _ = evaluated
    manifest = write_phantom_cohort("lung", 1, 9, tmp_path / "cohort")
    out = tmp_path / "predictions.csv"
    assert main(["predict", "--manifest", str(manifest), "--model", str(model_dir),
                 "--device", "cpu", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["patient"] for r in rows] == ["LU0001"]
    assert 0.0 <= float(rows[0]["predicted_response_probability"]) <= 1.0
    assert float(rows[0]["predicted_survival_risk"]) > 0
    assert main(["predict", "--manifest", str(manifest), "--model", str(model_dir),
                 "--out", str(out)]) == 2          # exists: refused, nothing overwritten
