"""A what-if run as DICOM (engine.dicom_export) and `--format` of `nacsim simulate`/`demo`.

The results are built by hand from small synthetic arrays (the generation and segmentation
have their own tests): a lung run with two samples per follow-up (CT images, samples as
their own series) and a breast run (secondary capture). The CLI runs a micro model.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("highdicom")

from test_dicom import _disc, validate, write_ct_series  # noqa: E402

from napari_nacsim.core.dicom import read_measurements, read_segmentation  # noqa: E402
from napari_nacsim.core.errors import InputError  # noqa: E402
from napari_nacsim.core.scan import LABELS, Scan  # noqa: E402
from napari_nacsim.engine import WhatIfRequest  # noqa: E402
from napari_nacsim.engine.dicom_export import (write_result_as_dicom,  # noqa: E402
                                               write_result_dicom)
from napari_nacsim.engine.session import Arm, FollowUp, WhatIfResult  # noqa: E402
from napari_nacsim.families import get_family  # noqa: E402
from napari_nacsim.science.measure import measure_tumour, size_change  # noqa: E402

MODEL = {"name": "test model", "model_hash": "feedc0ffee" * 4, "path": "/m", "device": "cpu"}
SEGMENTER = {"name": "Dataset502_NacsimLungCrop", "trainer": "nnUNetTrainer"}


def _scan(array, affine, **prov) -> Scan:
    return Scan(array=np.asarray(array, np.float32), affine=affine, provenance=prov)


def _mask(scan: Scan, threshold: float) -> Scan:
    return Scan(array=(scan.array > threshold).astype(np.uint8), affine=scan.affine,
                kind=LABELS)


def _followup(tp, title, scenario, samples, threshold, base_size) -> FollowUp:
    masks = [_mask(s, threshold) for s in samples]
    sizes = [measure_tumour(m) for m in masks]
    if len(samples) == 1:
        image, mask = samples[0], masks[0]
    else:
        image = _scan(np.mean([s.array for s in samples], axis=0), samples[0].affine,
                      **{**samples[0].provenance, "aggregate": "mean of samples"})
        mask = Scan(array=(np.mean([m.array for m in masks], axis=0) >= 0.5).astype(np.uint8),
                    affine=samples[0].affine, kind=LABELS)
    mean = float(np.mean([s.total for s in sizes]))
    return FollowUp(tp, title, scenario, samples, image, None, mask, sizes,
                    size_change(base_size, mean, base_size.unit), base_size.diameter)


def _generated(base: Scan, array, tp: str, seed: int, scenario: str) -> Scan:
    return _scan(array, base.affine, synthetic=True, role="generated follow-up",
                 timepoint=tp, seed=seed, steps=2, sampler="ddim", guidance_scale=1.0,
                 model_hash=MODEL["model_hash"], scenario_text=scenario)


def lung_result() -> WhatIfResult:
    """A phantom's CT crop (4 x 24 x 20) and two scenarios at follow-up ("post"), two
    samples each."""
    family = get_family("lung")
    rng = np.random.default_rng(4)
    affine = np.diag([-0.8, -0.8, 2.0, 1.0])
    affine[:3, 3] = [30.0, 40.0, -100.0]
    volume = rng.normal(-850, 25, size=(4, 24, 20))
    tumour = _disc(volume.shape, (1.5, 12, 9), 3.2)
    volume[tumour] = 40.0
    base = _scan(volume, affine, synthetic=True, patient="LU0003")
    base_mask = _mask(base, -300)
    base_size = measure_tumour(base_mask)
    arms = []
    for label, radius in (("PD-L1 TPS 0 %", 6.0), ("PD-L1 TPS 50 %", 0.0)):
        samples = []
        for k in range(2):
            array = volume.copy()
            array[tumour] = -850.0
            array[_disc(volume.shape, (1.5, 12, 9), radius + 0.3 * k)] = 35.0
            samples.append(_generated(base, array, "post", 7 + k, f"post: {label}"))
        title = f"post · {label} (synthetic)"
        arms.append(Arm(label, {}, {"post": _followup("post", title, {"time": "post"},
                                                      samples, -300, base_size)}))
    return WhatIfResult(request=WhatIfRequest({}, target="post", seed=7, samples=2),
                        family=family, baseline=base, baseline_mask=base_mask,
                        baseline_size=base_size, arms=arms, model=MODEL,
                        segmenter=SEGMENTER, seconds={"total": 0.0})


def breast_result() -> WhatIfResult:
    family = get_family("breast")
    rng = np.random.default_rng(5)
    image = rng.random((32, 32)) * 0.3
    image[_disc(image.shape, (15, 17), 6)] = 0.9
    base = _scan(image, np.diag([1.5, 1.5, 2.0, 1.0]), synthetic=True, patient="BR0002")
    base_mask = _mask(base, 0.6)
    base_size = measure_tumour(base_mask)
    arms = []
    for label, radius in (("pCR", 0), ("non-pCR", 8)):
        array = image.copy()
        array[_disc(image.shape, (15, 17), 6)] = 0.2
        if radius:
            array[_disc(image.shape, (15, 17), radius)] = 0.9
        followups = {}
        for tp in ("T1", "T2"):
            follow = _generated(base, array, tp, 0, f"{tp}: {label}, HR+, HER2−")
            title = f"{tp} · {label} · HR+ HER2− (synthetic)"
            followups[tp] = _followup(tp, title, {"time": tp}, [follow], 0.6, base_size)
        arms.append(Arm(label, {}, followups))
    return WhatIfResult(request=WhatIfRequest({}, target="T2"), family=family,
                        baseline=base, baseline_mask=base_mask, baseline_size=base_size,
                        arms=arms, model=MODEL, segmenter={"name": "threshold (test)"},
                        seconds={"total": 0.0})


def _objects(out):
    index = json.loads((out / "dicom_index.json").read_text())
    return index, {(e["key"], e["kind"]): e for e in index["series"]}


def test_lung_run_as_ct_series_segs_and_a_recist_report(tmp_path):
    result = lung_result()
    out = tmp_path / "dicom"
    write_result_dicom(result, out)
    index, entries = _objects(out)
    keys = [(e["key"], e["kind"]) for e in index["series"]]
    assert keys == [("pre_input", "image"), ("pre_input", "seg"),
                    ("post_PD-L1_TPS_0", "image"), ("post_PD-L1_TPS_0", "seg"),
                    ("post_PD-L1_TPS_0_sample1", "image"),
                    ("post_PD-L1_TPS_0_sample2", "image"),
                    ("post_PD-L1_TPS_50", "image"), ("post_PD-L1_TPS_50", "seg"),
                    ("post_PD-L1_TPS_50_sample1", "image"),
                    ("post_PD-L1_TPS_50_sample2", "image"),
                    ("measurements", "sr")]
    assert index["patient_id"] == "SYNTHETIC-LU0003" and index["synthetic_identifiers"]
    numbers = [e["series_number"] for e in index["series"]]
    assert len(set(numbers)) == len(numbers)
    mean = pydicom.dcmread(out / entries[("post_PD-L1_TPS_50", "image")]["files"][0])
    assert mean.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and mean.Modality == "CT"
    assert mean.SeriesDescription.startswith("SYNTHETIC post - PD-L1 TPS 50 %")
    assert "mean of 2 samples" in mean.ImageComments
    assert MODEL["model_hash"] in mean.DerivationDescription
    assert "seed 7, 8" in mean.DerivationDescription
    assert (float(mean.WindowCenter), float(mean.WindowWidth)) == (-600.0, 1500.0)
    sample = pydicom.dcmread(out / entries[("post_PD-L1_TPS_50_sample2", "image")]["files"][0])
    assert "sample 2 of 2" in sample.ImageComments and "seed 8;" in sample.DerivationDescription
    # the input of a phantom patient is synthetic too, and says so
    base = pydicom.dcmread(out / entries[("pre_input", "image")]["files"][0])
    assert "SYNTHETIC phantom" in base.SeriesDescription and base.BurnedInAnnotation == "YES"

    report = read_measurements(out / "measurements_SR.dcm")
    assert [g["time_point"] for g in report["groups"]] == ["pre", "post", "post"]
    by_seg = {e["sop_instance_uid"]: key for key, e in entries.items() if key[1] == "seg"}
    assert [by_seg[g["segmentation"]["sop_instance_uid"]][0] for g in report["groups"]] == \
        ["pre_input", "post_PD-L1_TPS_0", "post_PD-L1_TPS_50"]
    for group, arm in zip(report["groups"][1:], result.arms):
        follow = arm.followups["post"]
        values = {m["name"]: m["value"] for m in group["measurements"]}
        assert values["Volume"] == pytest.approx(follow.size_mean)
        assert values["Long axis"] == pytest.approx(follow.diameter_mean)
        assert values["Long axis change from baseline"] == \
            pytest.approx(follow.diameter_change.percent)
        assert group["method"] == "RECIST 1.1"
    responses = [g["evaluations"][0]["value"] for g in report["groups"][1:]]
    assert responses == ["Target Lesion Progressive Disease", "Target Lesion Complete Response"]
    seg = read_segmentation(out / entries[("post_PD-L1_TPS_50", "seg")]["files"][0])
    assert np.array_equal(seg.array > 0, result.arms[1].followups["post"].mask.array > 0)
    # the algorithm the SEG names: nnU-Net with its version
    ds = pydicom.dcmread(out / entries[("pre_input", "seg")]["files"][0])
    algorithm = ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName.startswith("nnU-Net")
    for path in sorted(out.rglob("*.dcm")):
        validate(path)


def test_breast_run_as_dicom_only_folder_with_report_and_figure(tmp_path, capsys):
    result = breast_result()
    out = tmp_path / "demo"
    report = write_result_as_dicom(result, out, extra_report={"demo": "nacsim demo"})
    assert sorted(p.name for p in out.iterdir()) == ["comparison.png", "dicom", "report.json"]
    assert not list(out.rglob("*.nii.gz"))
    assert json.loads((out / "report.json").read_text())["files"]["dicom"] == "dicom"
    assert report["demo"] == "nacsim demo"
    index, entries = _objects(out / "dicom")
    assert [k for k in entries] == [("T0_input", "image"), ("T0_input", "seg"),
                                    ("T1_pCR", "image"), ("T1_pCR", "seg"),
                                    ("T2_pCR", "image"), ("T2_pCR", "seg"),
                                    ("T1_non-pCR", "image"), ("T1_non-pCR", "seg"),
                                    ("T2_non-pCR", "image"), ("T2_non-pCR", "seg"),
                                    ("measurements", "sr")]
    image = pydicom.dcmread(out / "dicom" / entries[("T2_pCR", "image")]["files"][0])
    assert image.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert image.SeriesDescription == "SYNTHETIC T2 - pCR - HR+ HER2- (one sample)"
    groups = read_measurements(out / "dicom" / "measurements_SR.dcm")["groups"]
    assert [g["tracking"] for g in groups] == [
        "T0 input tumour", "T1 - pCR - HR+ HER2- (synthetic) tumour",
        "T2 - pCR - HR+ HER2- (synthetic) tumour",
        "T1 - non-pCR - HR+ HER2- (synthetic) tumour",
        "T2 - non-pCR - HR+ HER2- (synthetic) tumour"]
    assert [g["evaluations"][0]["value"] for g in groups[1:]] == [
        "Target Lesion Complete Response"] * 2 + ["Target Lesion Progressive Disease"] * 2
    # a SEG that names a segmenter other than nnU-Net names it as it is
    ds = pydicom.dcmread(out / "dicom" / entries[("T0_input", "seg")]["files"][0])
    algorithm = ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "threshold (test)"
    with pytest.raises(InputError, match="not empty"):
        write_result_as_dicom(result, out)
    # `nacsim info` reads them back: the SEG as a labels scan, the SR's measurements
    from napari_nacsim.cli.main import main

    capsys.readouterr()
    assert main(["info", str(out / "dicom" / entries[("T2_non-pCR", "seg")]["files"][0])]) == 0
    shown = capsys.readouterr().out
    assert "kind: labels" in shown and "shape: (32, 32)" in shown
    assert main(["info", str(out / "dicom" / "measurements_SR.dcm")]) == 0
    shown = capsys.readouterr().out
    assert "T2 - non-pCR - HR+ HER2- (synthetic) tumour: Area" in shown
    assert "Current Response: Target Lesion Complete Response" in shown
    for path in sorted((out / "dicom").rglob("*.dcm")):
        validate(path)


# --- the CLI ----------------------------------------------------------------------------------

def write_mip_dicom(folder, *, drop=None) -> dict:
    """A one-slice 'MIP' input as DICOM (values 0-1 through the rescale)."""
    rng = np.random.default_rng(6)
    plane = rng.random((1, 20, 24))
    plane[0][_disc((20, 24), (10, 12), 4)] = 0.9
    ids = write_ct_series(folder, np.rint(plane * 1000), drop=drop)
    for path in folder.iterdir():   # stored 0..1000, values 0..1
        ds = pydicom.dcmread(path)
        ds.RescaleSlope = 0.001
        ds.save_as(path)
    return ids


def test_cli_parsers_offer_the_format():
    from napari_nacsim.cli.main import build_parser

    parser = build_parser()
    for command in (["demo"], ["simulate", "--out", "x"]):
        assert parser.parse_args(command).format == "nifti"
        assert parser.parse_args([*command, "--format", "both"]).format == "both"


@pytest.fixture(scope="module")
def micro_model_dir(tmp_path_factory):
    from generative_helpers import micro_model

    from napari_nacsim.science.generative.checkpoint import save_checkpoint

    return save_checkpoint(micro_model(seed=2), tmp_path_factory.mktemp("m") / "model",
                           {"title": "micro test model"})


def test_cli_simulate_from_a_dicom_input_writes_series_in_its_study(micro_model_dir,
                                                                     tmp_path, capsys):
    from napari_nacsim.cli.main import main

    ids = write_mip_dicom(tmp_path / "input")
    out = tmp_path / "sim"
    rc = main(["simulate", "--input", str(tmp_path / "input"), "--model", str(micro_model_dir),
               "--scenario", "time=T2,pCR=yes,HR=+,HER2=-", "--steps", "1", "--out", str(out),
               "--format", "both", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert len(list(out.glob("synthetic_*.nii.gz"))) == 1
    summary = json.loads((out / "simulation.json").read_text())
    assert summary["format"] == "both"
    series = out / summary["outputs"][0]["dicom_series"]
    (path,) = series.iterdir()
    ds = pydicom.dcmread(path)
    assert ds.StudyInstanceUID == ids["StudyInstanceUID"] and ds.PatientID == "PAT-7731"
    assert ds.FrameOfReferenceUID == ids["FrameOfReferenceUID"]
    assert ds.SeriesInstanceUID != ids["SeriesInstanceUID"]
    assert ds.BurnedInAnnotation == "YES" and "SYNTHETIC" in ds.SeriesDescription
    validate(path)


def test_cli_simulate_refuses_a_dicom_input_missing_an_attribute_before_generating(
        micro_model_dir, tmp_path, capsys):
    from napari_nacsim.cli.main import main

    write_mip_dicom(tmp_path / "input", drop="StudyInstanceUID")
    out = tmp_path / "sim"
    rc = main(["simulate", "--input", str(tmp_path / "input"), "--model", str(micro_model_dir),
               "--scenario", "time=T2,pCR=yes,HR=+,HER2=-", "--steps", "1", "--out", str(out),
               "--format", "dicom", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "StudyInstanceUID" in err and "\n" not in err
    assert not out.exists()
