"""The napari face: manifest discovery, reader, writer and sample data, with napari's own
fixtures (needs a display: CI runs under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_nacsim.core.scan_io import read_scan, sidecar_path
from napari_nacsim.plugin.reader import NULL_LAYER, get_reader

pytestmark = pytest.mark.viewer


def test_manifest_is_discovered_and_valid():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("nacsim")
    assert manifest.name == "nacsim"
    commands = {c.id for c in manifest.contributions.commands}
    assert {"nacsim.get_reader", "nacsim.write_image", "nacsim.sample_breast"} <= commands


def test_reader_declines_what_it_cannot_read(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader([str(tmp_path / "a.nii"), str(tmp_path / "b.nii")]) is None


def test_viewer_opens_nifti_with_spacing_as_scale(make_napari_viewer, nifti_file):
    path, volume, affine = nifti_file
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin="nacsim")
    assert len(layers) == 1
    layer = layers[0]
    np.testing.assert_array_equal(layer.data, volume)
    np.testing.assert_allclose(layer.scale, (2.5, 0.7, 0.8))
    meta = layer.metadata["nacsim"]
    assert meta["source"] == str(path) and meta["orientation"] == "LPS"
    np.testing.assert_allclose(meta["affine"], affine)


def test_viewer_opens_a_dicom_folder(make_napari_viewer, dicom_folder, volume):
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(dicom_folder), plugin="nacsim")
    np.testing.assert_array_equal(layer.data, volume.astype(np.int16))
    np.testing.assert_allclose(layer.scale, (2.5, 0.7, 0.8), atol=1e-4)
    assert layer.metadata["nacsim"]["provenance"]["format"] == "dicom"


def test_bad_file_notifies_instead_of_crashing(make_napari_viewer, tmp_path, monkeypatch,
                                               nifti_file):
    import napari.utils.notifications as notifications

    messages = []
    monkeypatch.setattr(notifications, "show_error", messages.append)
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(nifti_file[0].read_bytes()[:150])
    reader = get_reader(str(bad))
    assert reader(str(bad)) == NULL_LAYER
    assert len(messages) == 1 and "broken.nii.gz" in messages[0] and "\n" not in messages[0]

    viewer = make_napari_viewer()
    viewer.open(str(bad), plugin="nacsim")  # must not raise
    assert len(viewer.layers) == 0


def test_writer_round_trip_image_and_labels(make_napari_viewer, tmp_path, nifti_file):
    path, volume, affine = nifti_file
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(path), plugin="nacsim")
    labels = viewer.add_labels((volume > 110).astype(np.uint8), scale=image.scale,
                               name="tumour", metadata={"nacsim": image.metadata["nacsim"]})
    out_image = tmp_path / "saved_image.nii.gz"
    out_labels = tmp_path / "saved_labels.nii.gz"
    written = image.save(str(out_image), plugin="nacsim")
    assert written == [str(out_image)]
    written = labels.save(str(out_labels), plugin="nacsim")
    assert written == [str(out_labels)]

    back = read_scan(out_image)
    np.testing.assert_array_equal(back.array, volume)
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)  # orientation kept
    back_labels = read_scan(out_labels)
    assert back_labels.kind == "labels"
    np.testing.assert_array_equal(back_labels.array, (volume > 110).astype(np.uint8))
    assert sidecar_path(out_labels).exists()


def test_writer_never_overwrites_the_input(make_napari_viewer, nifti_file, monkeypatch):
    import napari.utils.notifications as notifications

    messages = []
    monkeypatch.setattr(notifications, "show_error", messages.append)
    path, volume, _ = nifti_file
    before = path.read_bytes()
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(path), plugin="nacsim")
    image.save(str(path), plugin="nacsim")
    assert path.read_bytes() == before
    assert messages and "refusing to write over an input" in messages[0]


def test_writer_uses_layer_scale_when_no_geometry(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.random.default_rng(1).random((5, 6, 7)), scale=(3.0, 0.5, 0.6))
    out = tmp_path / "plain.nii.gz"
    layer.save(str(out), plugin="nacsim")
    np.testing.assert_allclose(read_scan(out).spacing, (3.0, 0.5, 0.6))


@pytest.mark.parametrize("sample, n_timepoints, input_ndim", [
    ("breast", 0, 2), ("breast-volumes", 3, 3), ("lung", 2, 3)])
def test_sample_data(make_napari_viewer, sample, n_timepoints, input_ndim):
    """A sample opens what the comparison needs: the breast patient its 2D model input (and
    no hidden volumes, which would add a slice slider under it), the DCE volumes as a
    sample of their own, the lung patient its CT. The image opens selected (not a mask,
    whose paint tools napari would show). All phantom data, named so."""
    viewer = make_napari_viewer()
    layers = viewer.open_sample("nacsim", sample)
    names = [layer.name for layer in layers]
    assert all(name.endswith("(phantom)") for name in names)
    for layer in layers:
        assert layer.metadata["nacsim"]["synthetic"] is True
        assert layer.metadata["nacsim"]["patient"]["clinical_values"]
        assert layer.metadata["nacsim"]["patient"]["phantom"] is True
    model_input = [layer for layer in layers if layer.ndim == 2]
    volumes = [layer for layer in layers if layer.ndim == 3]
    if sample == "breast":
        assert [layer.__class__.__name__ for layer in model_input] == ["Labels", "Image"]
        assert volumes == [] and viewer.dims.ndim == 2            # no slice slider
        assert "model input" in model_input[1].name
    else:
        assert model_input == []
    tumour_layers = [layer for layer in volumes if "tumour" in layer.name]
    assert len(tumour_layers) == n_timepoints
    assert all(layer.__class__.__name__ == "Labels" for layer in tumour_layers)
    images = [layer for layer in volumes if layer.__class__.__name__ == "Image"]
    for layer in volumes:
        np.testing.assert_allclose(layer.scale, images[0].scale)
    shown = [layer for layer in layers if layer.visible and layer.__class__.__name__ == "Image"]
    assert len(shown) == 1 and shown[0].ndim == input_ndim
    assert viewer.layers.selection.active is shown[0]            # the image, not a mask


def test_widgets_open_like_napari_dash_w(make_napari_viewer):
    """`napari -w nacsim` opens the first widget of the manifest (the what-if workspace);
    `napari -w nacsim "Cohort inspector"` the inspector — through napari's own plugin API."""
    from napari.plugins import _npe2

    viewer = make_napari_viewer()
    from napari_nacsim.plugin.inspector import CohortInspector
    from napari_nacsim.plugin.workspace import WhatIfWorkspace

    # what `-w nacsim` resolves to: the manifest's first widget, by its display name
    assert _npe2.get_widget_contribution("nacsim") == (WhatIfWorkspace, "What-if workspace")
    assert _npe2.get_widget_contribution("nacsim", "Cohort inspector") == (
        CohortInspector, "Cohort inspector")
    dock, widget = viewer.window.add_plugin_dock_widget("nacsim")
    assert type(widget).__name__ == "WhatIfWorkspace"
    dock, inspector = viewer.window.add_plugin_dock_widget("nacsim", "Cohort inspector")
    assert type(inspector).__name__ == "CohortInspector"
    widget.shutdown()
    inspector.shutdown()
