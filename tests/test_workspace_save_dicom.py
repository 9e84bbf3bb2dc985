"""The workspace's Save… as DICOM (`plugin.workspace.saving`, `engine.dicom_export`).

The viewer test opens a breast phantom's MIP written as a DICOM series (a made-up patient,
as a scanner files it), runs the bundled model with few steps, saves through the Save
button with "DICOM" chosen, and reads everything back: pydicom/highdicom (synthetic
labelling, the input's patient and study, SEG → image and SR → SEG references, the sizes),
dciodvfy where installed, and napari's reader (the round trip). Then the failures: a folder
that cannot be written, an input DICOM that lost an attribute. The formats themselves
(nothing half-written with "both") are checked without a viewer on a hand-built result.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
highdicom = pytest.importorskip("highdicom")

from test_dicom import validate, write_ct_series  # noqa: E402
from test_dicom_export import breast_result  # noqa: E402

from napari_nacsim.core.dicom import read_measurements, read_segmentation  # noqa: E402
from napari_nacsim.core.errors import InputError  # noqa: E402
from napari_nacsim.engine.results import slug  # noqa: E402
from napari_nacsim.plugin.workspace.saving import FOLDER_PREFIX, save_result  # noqa: E402

RUN_TIMEOUT_MS = 600_000   # the CPU may be shared: a run of three steps, and the save


def write_mip_series(folder, mip) -> dict:
    """``mip`` (values 0-1) as a one-slice DICOM series with its pixel spacing; returns the
    identifiers of the made-up patient."""
    ids = write_ct_series(folder, np.rint(mip.array * 1000)[None])
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.RescaleSlope = 0.001
        ds.PixelSpacing = [float(s) for s in mip.spacing]
        ds.save_as(path)
    return ids


def drop_attribute(folder, keyword: str) -> None:
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        delattr(ds, keyword)
        ds.save_as(path)


def _save_with_button(qtbot, widget, monkeypatch, folder, told) -> tuple[str, str]:
    """Click Save with the folder dialog answering ``folder``; the notification that
    follows once the worker has written (or failed)."""
    import napari_nacsim.plugin.workspace.widget as workspace_module

    monkeypatch.setattr(workspace_module, "choose_save_folder", lambda parent: str(folder))
    before = len(told)
    widget.save_button.click()
    qtbot.waitUntil(lambda: any(kind in ("info", "error") for kind, _ in told[before:]),
                    timeout=RUN_TIMEOUT_MS)
    return next((kind, text) for kind, text in told[before:] if kind in ("info", "error"))


def _masks_by_key(result) -> dict:
    masks = {f"{result.schema.baseline}_input": result.baseline_mask}
    for arm in result.arms:
        for tp, follow in arm.followups.items():
            masks[f"{tp}_{slug(arm.label)}"] = follow.mask
    return masks


@pytest.mark.viewer
def test_save_as_dicom_after_a_run_files_it_with_the_input_study_and_reads_back(
        make_napari_viewer, qtbot, tmp_path, monkeypatch, told):
    from napari_nacsim.families import get_family
    from napari_nacsim.plugin.workspace import WhatIfWorkspace

    family = get_family("breast")
    mip = family.sample_case(0)["inputs"][family.schema.baseline]["image"]
    ids = write_mip_series(tmp_path / "input", mip)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "input"), plugin="nacsim")
    widget = WhatIfWorkspace(viewer)
    widget.auto_run.setChecked(False)
    viewer.window.add_dock_widget(widget, name="nacsim what-if")
    try:
        assert widget.save_format.currentData() == "nifti"      # the default is as before
        widget.advanced.setChecked(True)
        widget.steps.setValue(3)
        widget.samples.setValue(1)
        widget.select_input(layer.name)
        before = widget.results_shown
        assert widget.run() is not None
        qtbot.waitUntil(lambda: widget.results_shown > before and not widget.runner.running,
                        timeout=RUN_TIMEOUT_MS)
        result = widget.result

        widget.save_format.setCurrentIndex(widget.save_format.findData("dicom"))
        kind, text = _save_with_button(qtbot, widget, monkeypatch, tmp_path / "saved", told)
        (out,) = (tmp_path / "saved").iterdir()
        assert kind == "info" and str(out / "dicom") in text and "SYNTHETIC" in text
        assert sorted(p.name for p in out.iterdir()) == ["comparison.png", "dicom",
                                                         "report.json"]
        assert not list(out.rglob("*.nii.gz"))
        _check_export(out / "dicom", result, ids)

        # the round trip: the DICOM folder opens in napari with nacsim's reader, images
        # then their masks with the SR's sizes
        told.clear()
        opened = viewer.open(str(out / "dicom"), plugin="nacsim")
        images = [x for x in opened if x._type_string == "image"]
        labels = [x for x in opened if x._type_string == "labels"]
        masks = _masks_by_key(result)
        assert len(images) == len(labels) == len(masks)
        generated = [x for x in images if not x.name.startswith("T0_input")]
        assert generated and all(x.name.endswith("(synthetic)") for x in generated)
        for mask_layer in labels:
            key = mask_layer.name.split("_tumour_SEG")[0]
            assert np.array_equal(np.asarray(mask_layer.data) > 0, masks[key].array > 0)
            assert "Area (mm2)" in mask_layer.features
        assert any(k == "info" and "tumour: Area" in t for k, t in told)  # the SR's summary

        # a folder that cannot be written: one line naming it, nothing written
        (tmp_path / "a file").write_text("not a folder")
        kind, text = _save_with_button(qtbot, widget, monkeypatch,
                                       tmp_path / "a file" / "results", told)
        assert kind == "error" and "a file" in text and "\n" not in text
        if os.geteuid() != 0:   # root writes into a read-only folder
            (tmp_path / "locked").mkdir(mode=0o555)
            kind, text = _save_with_button(qtbot, widget, monkeypatch, tmp_path / "locked",
                                           told)
            assert kind == "error" and "locked" in text and "\n" not in text
            assert not list((tmp_path / "locked").iterdir())

        # the input's DICOM lost an attribute a derived series needs: one line naming it,
        # nothing written, in either DICOM format; NIfTI does not need it
        drop_attribute(tmp_path / "input", "FrameOfReferenceUID")
        for fmt in ("dicom", "both"):
            widget.save_format.setCurrentIndex(widget.save_format.findData(fmt))
            kind, text = _save_with_button(qtbot, widget, monkeypatch, tmp_path / "saved",
                                           told)
            assert kind == "error" and "FrameOfReferenceUID" in text and "\n" not in text
            assert len(list((tmp_path / "saved").iterdir())) == 1      # the first save only
        assert widget.save_results(tmp_path / "saved", "nifti") is not None
    finally:
        widget.shutdown()


def _check_export(folder, result, ids) -> None:
    """What the CLI writes for a run, in the input's study: read back and validated."""
    index = json.loads((folder / "dicom_index.json").read_text())
    assert index["study_instance_uid"] == ids["StudyInstanceUID"]
    assert index["patient_id"] == "PAT-7731" and not index["synthetic_identifiers"]
    entries = {(e["key"], e["kind"]): e for e in index["series"]}
    masks = _masks_by_key(result)
    assert {key for key, kind in entries if kind == "image"} == set(masks)
    model_hash = result.model["model_hash"]
    uids = []
    image_series = {}
    for (key, kind), entry in entries.items():
        if kind != "image":
            continue
        (name,) = entry["files"]
        ds = pydicom.dcmread(folder / name)
        image_series[key] = ds.SeriesInstanceUID
        # the patient's own study and frame of reference; a new series
        assert ds.StudyInstanceUID == ids["StudyInstanceUID"] and ds.PatientID == "PAT-7731"
        assert ds.FrameOfReferenceUID == ids["FrameOfReferenceUID"]
        assert ds.SeriesInstanceUID != ids["SeriesInstanceUID"]
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        if key == f"{result.schema.baseline}_input":    # derived from a measured image
            assert "SYNTHETIC" not in ds.SeriesDescription and ds.BurnedInAnnotation == "NO"
        else:
            assert "SYNTHETIC" in ds.SeriesDescription and "SYNTHETIC" in ds.ImageComments
            assert model_hash in ds.DerivationDescription
            assert ds.BurnedInAnnotation == "YES"
        uids += [ds.SOPInstanceUID, ds.SeriesInstanceUID]
    seg_of = {}
    for key, mask in masks.items():
        (name,) = entries[(key, "seg")]["files"]
        seg = highdicom.seg.segread(folder / name)
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == image_series[key]
        assert np.array_equal(read_segmentation(folder / name).array > 0, mask.array > 0)
        seg_of[seg.SOPInstanceUID] = key
        uids += [seg.SOPInstanceUID, seg.SeriesInstanceUID]
    report = read_measurements(folder / "measurements_SR.dcm")
    assert sorted(seg_of[g["segmentation"]["sop_instance_uid"]] for g in report["groups"]) \
        == sorted(masks)
    sizes = {f"{tp}_{slug(arm.label)}": follow.size_mean
             for arm in result.arms for tp, follow in arm.followups.items()}
    for group in report["groups"]:
        key = seg_of[group["segmentation"]["sop_instance_uid"]]
        values = {m["name"]: m["value"] for m in group["measurements"]}
        expected = sizes.get(key, result.baseline_size.total)
        assert values["Area"] == pytest.approx(expected, abs=1e-3)
        assert "Long axis" in values
    sr = pydicom.dcmread(folder / "measurements_SR.dcm")
    uids += [sr.SOPInstanceUID, sr.SeriesInstanceUID]
    assert len(set(uids)) == len(uids) and ids["SeriesInstanceUID"] not in uids
    assert all(pydicom.uid.UID(uid).is_valid for uid in uids)
    for path in sorted(folder.rglob("*.dcm")):
        validate(path)


# --- the formats, without a viewer ------------------------------------------------------------

def test_save_writes_the_format_chosen_in_a_new_folder_each_time(tmp_path):
    result = breast_result()
    nifti = save_result(result, tmp_path, "nifti")
    both = save_result(result, tmp_path, "both")
    dicom = save_result(result, tmp_path, "dicom")
    assert len({nifti, both, dicom}) == 3 and all(p.name.startswith(FOLDER_PREFIX)
                                                  for p in (nifti, both, dicom))
    assert (nifti / "T2_pCR.nii.gz").exists() and not (nifti / "dicom").exists()
    assert (both / "T2_pCR.nii.gz").exists() and (both / "dicom" / "dicom_index.json").exists()
    assert json.loads((both / "report.json").read_text())["dicom_files"]["dicom"] == "dicom"
    assert (dicom / "dicom" / "measurements_SR.dcm").exists()
    assert not list(dicom.glob("*.nii.gz"))
    # a phantom's run: made-up identifiers that say so
    index = json.loads((dicom / "dicom" / "dicom_index.json").read_text())
    assert index["synthetic_identifiers"] and index["patient_id"].startswith("SYNTHETIC-")
    with pytest.raises(InputError, match="nothing generated yet"):
        save_result(None, tmp_path, "dicom")


def test_both_formats_leave_nothing_when_the_dicom_export_fails(tmp_path, monkeypatch):
    import napari_nacsim.engine.dicom_export as dicom_export

    def broken(*args, **kwargs):
        raise RuntimeError("disk gone mid-export")

    monkeypatch.setattr(dicom_export, "write_result_dicom", broken)
    with pytest.raises(RuntimeError, match="mid-export"):
        save_result(breast_result(), tmp_path, "both")
    assert list(tmp_path.iterdir()) == []     # no NIfTI folder without its DICOM, no staging
