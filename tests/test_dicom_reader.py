"""nacsim's DICOM exports opened in napari (`plugin.reader`, `plugin.dicom_layers`): a SEG
as a labels layer on its image series' grid, an SR's measurements on the segments they
measure, an export folder as images then masks, and a damaged file as one notification.

The exports are written with the project's own writer (`write_result_dicom`) from the small
hand-built results of tests/test_dicom_export.py (a lung CT crop, a breast MIP).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pydicom")
pytest.importorskip("highdicom")

from test_dicom_export import breast_result, lung_result  # noqa: E402

from napari_nacsim.engine.dicom_export import write_result_dicom  # noqa: E402
from napari_nacsim.plugin.layers import METADATA_KEY  # noqa: E402
from napari_nacsim.plugin.reader import NULL_LAYER, get_reader  # noqa: E402
from napari_nacsim.science.measure import measure_tumour  # noqa: E402


@pytest.fixture(scope="module")
def lung(tmp_path_factory):
    result = lung_result()
    out = tmp_path_factory.mktemp("lung") / "dicom"
    write_result_dicom(result, out)
    return result, out


@pytest.fixture(scope="module")
def breast(tmp_path_factory):
    result = breast_result()
    out = tmp_path_factory.mktemp("breast") / "dicom"
    write_result_dicom(result, out)
    return result, out


def _open(path):
    reader = get_reader(str(path))
    assert reader is not None, f"nacsim declined {path}"
    return reader(str(path))


def test_seg_opens_as_labels_on_its_image_series_grid(lung, told):
    import napari

    result, out = lung
    (data, kwargs, kind), = _open(out / "post_PD-L1_TPS_0_tumour_SEG.dcm")
    assert kind == "labels" and not told
    assert kwargs["name"] == "post_PD-L1_TPS_0_tumour_SEG: Tumour (synthetic)"
    mask = result.arms[0].followups["post"].mask.array   # a tumour (the other arm: none)
    assert np.array_equal(np.asarray(data) > 0, mask > 0) and np.asarray(data).max() == 1
    # the image series it was made from, opened the same way, lies on the same grid
    (image, image_kwargs, image_kind), = _open(out / "post_PD-L1_TPS_0")
    assert image_kind == "image" and image.shape == data.shape
    assert image_kwargs["name"] == "post_PD-L1_TPS_0 (synthetic)"
    assert kwargs["scale"] == pytest.approx(image_kwargs["scale"])
    assert kwargs["scale"] == pytest.approx([2.0, 0.8, 0.8])
    meta = kwargs["metadata"][METADATA_KEY]
    assert meta["segment_labels"] == {"1": "Tumour"} and meta["synthetic"] is True
    assert "SYNTHETIC" in meta["provenance"]["series_description"]
    layer = napari.layers.Labels(data, **kwargs)      # napari takes what the reader gives
    assert list(layer.features["segment"]) == ["Tumour"]


def test_sr_shows_its_measurements_on_the_segments_it_measures(breast, told):
    result, out = breast
    layers = _open(out / "measurements_SR.dcm")
    (kind, text), = told
    assert kind == "info" and "measurements_SR.dcm" in text
    assert "T2 - non-pCR - HR+ HER2- (synthetic) tumour: Area" in text
    assert "Current Response: Target Lesion Complete Response" in text
    names = [kwargs["name"] for _, kwargs, _ in layers]
    assert names == [f"{key}_tumour_SEG: Tumour (synthetic)" for key in
                     ("T0_input", "T1_non-pCR", "T1_pCR", "T2_non-pCR", "T2_pCR")]
    by_name = {kwargs["name"].split("_tumour")[0]: (data, kwargs) for data, kwargs, _ in layers}
    data, kwargs = by_name["T2_non-pCR"]
    follow = result.arms[1].followups["T2"]
    assert np.array_equal(np.asarray(data) > 0, follow.mask.array > 0)
    features = kwargs["features"]
    assert features["index"] == [1]
    assert features["Area (mm2)"][0] == pytest.approx(measure_tumour(follow.mask).total,
                                                      abs=1e-3)
    assert features["Current Response"] == ["Target Lesion Progressive Disease"]
    (group,) = kwargs["metadata"][METADATA_KEY]["measurements"]
    assert group["tracking"] == "T2 - non-pCR - HR+ HER2- (synthetic) tumour"
    base = by_name["T0_input"][1]["features"]
    assert "Current Response" not in base                 # the input has no response
    assert base["Area (mm2)"][0] == pytest.approx(result.baseline_size.total, abs=1e-3)


def test_export_folder_opens_images_then_their_masks(breast, told):
    result, out = breast
    layers = _open(out)
    kinds = [kind for _, _, kind in layers]
    assert kinds == ["image"] * 5 + ["labels"] * 5        # masks drawn over the images
    names = [kwargs["name"] for _, kwargs, _ in layers]
    assert names[:5] == [f"{key} (synthetic)" for key in
                         ("T0_input", "T1_non-pCR", "T1_pCR", "T2_non-pCR", "T2_pCR")]
    assert all(kwargs["scale"] == pytest.approx([1.5, 1.5]) for _, kwargs, _ in layers)
    assert all("features" in kwargs and "Area (mm2)" in kwargs["features"]
               for _, kwargs, kind in layers if kind == "labels")
    (kind, text), = told                                  # the SR's summary, nothing else
    assert kind == "info" and text.count("tumour: Area") == 5


def test_a_damaged_dicom_object_is_one_line_naming_the_file(lung, tmp_path, told):
    _, out = lung
    seg = (out / "pre_input_tumour_SEG.dcm").read_bytes()
    sr = (out / "measurements_SR.dcm").read_bytes()
    cut_seg = tmp_path / "cut_SEG.dcm"
    cut_seg.write_bytes(seg[:len(seg) // 2])             # the header is whole, the frames not
    cut_sr = tmp_path / "cut_SR.dcm"
    cut_sr.write_bytes(sr[:len(sr) // 3])
    # one byte short: pydicom alone reads it without complaint (the last group lost)
    end_sr = tmp_path / "end_SR.dcm"
    end_sr.write_bytes(sr[:-1])
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)
    for path in (cut_seg, cut_sr, end_sr, junk):
        told.clear()
        assert _open(path) == NULL_LAYER
        (kind, text), = told
        assert kind == "error" and str(path) in text and "\n" not in text, text


def test_a_damaged_seg_in_an_export_folder_is_named_and_the_rest_opens(lung, tmp_path, told):
    import shutil

    _, out = lung
    copy = tmp_path / "dicom"
    shutil.copytree(out, copy)
    seg = copy / "post_PD-L1_TPS_0_tumour_SEG.dcm"
    seg.write_bytes(seg.read_bytes()[:2000])
    layers = _open(copy)
    index = json.loads((copy / "dicom_index.json").read_text())
    n_images = sum(e["kind"] == "image" for e in index["series"])
    assert [kind for _, _, kind in layers] == ["image"] * n_images + ["labels"] * 2
    warnings = [text for kind, text in told if kind == "warning"]
    assert len(warnings) == 1 and "post_PD-L1_TPS_0_tumour_SEG.dcm" in warnings[0]
    assert "\n" not in warnings[0]
