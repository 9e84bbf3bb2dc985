"""``--format dicom|both`` of the cohort runs (`nacsim batch`, `nacsim review`): each case's
generated images, tumour SEGs and size report as DICOM in its ``dicom/`` folder, labelled
synthetic with the model's provenance, read back and validated (dciodvfy where installed).

The smallest runs the cohort-runner tests use: one breast phantom, 2 sampler steps, in this
process (``--workers 0``), the bundled models.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("highdicom")

from cohort_helpers import tiny_cohort  # noqa: E402
from test_dicom import validate  # noqa: E402

from napari_nacsim.core.dicom import read_measurements, read_segmentation  # noqa: E402
from napari_nacsim.core.errors import InputError  # noqa: E402
from napari_nacsim.core.scan_io import read_scan  # noqa: E402
from napari_nacsim.engine.cohort_runner import (CASES, DONE, ReviewJob,  # noqa: E402
                                                run_cases, safe_name)

STEPS = 2


def _index(folder):
    index = json.loads((folder / "dicom_index.json").read_text())
    return index, {(e["key"], e["kind"]): e for e in index["series"]}


def _check_synthetic_series(folder, entries, keys, model_hash):
    """Every generated series says SYNTHETIC where a PACS shows it, with the model hash."""
    for key in keys:
        ds = pydicom.dcmread(folder / entries[(key, "image")]["files"][0])
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert ds.SeriesDescription.startswith("SYNTHETIC ")
        assert "SYNTHETIC" in ds.ImageComments and ds.BurnedInAnnotation == "YES"
        assert model_hash in ds.DerivationDescription


def test_batch_writes_each_case_as_dicom(tmp_path, capsys):
    from napari_nacsim.cli.main import main

    out = tmp_path / "batch"
    argv = ["batch", "--phantoms", "breast", "--patients", "1", "--scenario", "pCR=yes",
            "--steps", str(STEPS), "--no-figure", "--out", str(out), "--quiet",
            "--workers", "0", "--format", "dicom"]
    assert main(argv) == 0
    assert "wrote 1 SYNTHETIC what-if runs" in capsys.readouterr().out
    case = out / CASES / "BR0001" / safe_name("pCR=yes")
    assert sorted(p.name for p in case.iterdir()) == ["case.json", "dicom", "report.json"]
    assert not list(case.rglob("*.nii.gz"))               # dicom: instead of NIfTI
    report = json.loads((case / "report.json").read_text())
    assert report["files"] == {"dicom": "dicom", "dicom_index": "dicom/dicom_index.json"}
    assert report["patient"] == "BR0001" and report["synthetic"] is True
    folder = case / "dicom"
    index, entries = _index(folder)
    # the arm is named by the scenario over the patient's own values: T1_pCR_HRpos_...
    arm = list(entries)[2][0][len("T1_"):]
    assert arm.startswith("pCR")
    assert list(entries) == [("T0_input", "image"), ("T0_input", "seg"),
                             (f"T1_{arm}", "image"), (f"T1_{arm}", "seg"),
                             (f"T2_{arm}", "image"), (f"T2_{arm}", "seg"),
                             ("measurements", "sr")]
    assert index["patient_id"] == "SYNTHETIC-BR0001" and index["synthetic_identifiers"]
    model_hash = report["model"]["model_hash"]
    _check_synthetic_series(folder, entries, [f"T1_{arm}", f"T2_{arm}"], model_hash)
    # the SR's sizes are the table's, each group referencing its time point's SEG
    rows = {r["time"]: r for r in csv.DictReader((out / "batch.csv").open())}
    groups = read_measurements(folder / "measurements_SR.dcm")["groups"]
    segs = {e["sop_instance_uid"]: key for (key, kind), e in entries.items() if kind == "seg"}
    for group in groups[1:]:
        tp = group["time_point"]
        assert segs[group["segmentation"]["sop_instance_uid"]] == f"{tp}_{arm}"
        area = {m["name"]: m["value"] for m in group["measurements"]}["Area"]
        assert area == pytest.approx(float(rows[tp]["size_mean"]), rel=1e-6, abs=1e-6)
    for path in sorted(folder.rglob("*.dcm")):
        validate(path)
    # the format is part of what a case answers: a NIfTI run does not reuse it
    assert main([*argv[:-1], "nifti", "--resume"]) == 0
    assert "from before" not in capsys.readouterr().out
    assert list(case.glob("*.nii.gz")) and not (case / "dicom").exists()


def test_review_writes_each_patient_as_nifti_and_dicom(tmp_path):
    manifest = tiny_cohort(tmp_path / "cohort", 1)
    job = ReviewJob(manifest, steps=STEPS, format="both")
    summary = run_cases(job, tmp_path / "run", workers=0)
    (record,) = summary.records
    assert record["status"] == DONE and not summary.failed
    case = tmp_path / "run" / CASES / "BR0001"
    assert "dicom" in record["files"] and (case / "T1_generated.nii.gz").exists()
    folder = case / "dicom"
    index, entries = _index(folder)
    assert list(entries) == [("T0_input", "image"), ("T0_input", "seg"),
                             ("T1_generated", "image"), ("T1_generated", "seg"),
                             ("T1_counterfactual", "image"), ("T1_counterfactual", "seg"),
                             ("measurements", "sr")]
    row = record["rows"][0]
    _check_synthetic_series(folder, entries, ["T1_generated", "T1_counterfactual"],
                            row["model_hash"])
    # the SEG is the review's mask of the generated image, on its grid
    seg = read_segmentation(folder / entries[("T1_generated", "seg")]["files"][0])
    nifti_mask = read_scan(case / "T1_generated_tumour.nii.gz")
    assert seg.shape == nifti_mask.shape
    assert np.array_equal(seg.array > 0, nifti_mask.array > 0)
    # in-plane axes and position (a MIP's third axis is the projected one: DICOM keeps
    # the plane's normal, not the depth it was projected over)
    np.testing.assert_allclose(seg.affine[:, [0, 1, 3]], nifti_mask.affine[:, [0, 1, 3]],
                               atol=1e-4)
    groups = read_measurements(folder / "measurements_SR.dcm")["groups"]
    assert [g["time_point"] for g in groups] == ["T0", "T1", "T1"]
    sizes = [{m["name"]: m["value"] for m in g["measurements"]}["Area"] for g in groups]
    assert sizes[0] == pytest.approx(row["size_t0_mm2"], rel=1e-6, abs=1e-6)
    assert sizes[1] == pytest.approx(row["size_generated_mm2"], rel=1e-6, abs=1e-6)
    assert sizes[2] == pytest.approx(row["cf_size_generated_mm2"], rel=1e-6, abs=1e-6)
    for path in sorted(folder.rglob("*.dcm")):
        validate(path)


def test_format_options_are_checked_before_any_case_runs(tmp_path, capfd):
    from napari_nacsim.cli.main import main

    manifest = tiny_cohort(tmp_path / "cohort", 1)
    nifti, dicom = (next(ReviewJob(manifest, format=f).cases()) for f in ("nifti", "dicom"))
    assert nifti.request_hash != dicom.request_hash
    with pytest.raises(InputError, match="--no-images writes no images"):
        ReviewJob(manifest, images=False, format="dicom")
    assert main(["review", str(manifest), "--csv", str(tmp_path / "r.csv"), "--no-images",
                 "--format", "dicom"]) == 2
    err = capfd.readouterr().err.strip()
    assert err.startswith("nacsim: error: ") and "--no-images" in err and "\n" not in err
    assert not (tmp_path / "r.csv").exists()
