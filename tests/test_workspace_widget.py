"""The what-if workspace in a real napari viewer (pytest-qt, offscreen/Xvfb).

Runs use the bundled tiny model with few sampler steps: the real code paths, small and fast.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from napari_nacsim.plugin.grid_view import (MIN_TITLE_POINTS, PX_PER_CHAR_POINT, TITLE_POINTS,
                                             grid_of, title_points)
from napari_nacsim.plugin.workspace import WhatIfWorkspace
from napari_nacsim.plugin.workspace.input_finder import input_fits, visit_layers
from napari_nacsim.science.measure import format_diameter

pytestmark = pytest.mark.viewer

RUN_TIMEOUT_MS = 120_000


@pytest.fixture
def workspace(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("nacsim", "breast")
    widget = WhatIfWorkspace(viewer)
    widget.auto_run.setChecked(False)  # tests trigger runs explicitly
    widget.advanced.setChecked(True)
    widget.steps.setValue(3)
    viewer.window.add_dock_widget(widget, name="nacsim what-if")
    yield viewer, widget
    widget.shutdown()


def run_and_wait(qtbot, widget):
    before = widget.results_shown
    ticket = widget.run()
    assert ticket is not None
    qtbot.waitUntil(lambda: widget.results_shown > before and not widget.runner.running,
                    timeout=RUN_TIMEOUT_MS)
    return widget.result


def cell_layers(widget, kind: str = "image") -> list:
    """The result layers of one kind in cell order (the first cell first)."""
    layers = [layer for layer in widget.result_layers() if layer._type_string == kind]
    return sorted(layers, key=lambda layer: int(layer.metadata["nacsim"]["slot"].split(":")[1]))


def errors_from(monkeypatch):
    """Collect the one-line error/warning notifications the widget shows."""
    messages = []
    import napari_nacsim.plugin.background as background

    monkeypatch.setattr("napari.utils.notifications.show_error",
                        lambda message: messages.append(message))
    monkeypatch.setattr(background, "notify_error",
                        lambda exc, context="": messages.append(str(exc)), raising=True)
    import napari_nacsim.plugin.workspace.widget as workspace_module

    monkeypatch.setattr(workspace_module, "notify_error",
                        lambda exc, context="": messages.append(str(exc)))
    return messages


def test_panel_defaults_from_schema_and_sample_patient(workspace):
    viewer, widget = workspace
    assert "MIP" in widget.input_combo.currentText()         # the 2D model input
    assert widget.model_combo.currentText().startswith("bundled:")
    assert widget.compare_combo.currentData() == "pCR"       # first outcome variable
    patient = viewer.layers[widget.input_combo.currentText()].metadata["nacsim"]["patient"]
    assert widget.panel.clinical == {k: patient["clinical_values"][k] for k in ("pCR", "HR",
                                                                                "HER2")}
    assert widget.panel["pCR"].enabled is False               # both states are generated
    assert widget.panel["HR"].enabled is True
    # Advanced starts at the model's own sampling defaults (its card) ...
    from napari_nacsim.engine.whatif import bundled_model_path
    from napari_nacsim.science.generative.checkpoint import read_card

    config = read_card(bundled_model_path("breast"))["config"]
    assert widget.guidance.value() == config.get("default_guidance", 1.0)
    assert widget.sampler.currentText() == config.get("default_sampler", "dpmpp")
    # ... which are what runs while Advanced is off
    widget.advanced.setChecked(False)
    request = widget.request()
    assert (request.guidance, request.steps, request.sampler) == (None, None, None)


def test_generate_segment_table_plot_and_provenance(workspace, qtbot):
    viewer, widget = workspace
    result = run_and_wait(qtbot, widget)
    assert [arm.label for arm in result.arms] == ["pCR", "non-pCR"]
    layers = widget.result_layers()
    assert len(layers) == 6                                  # input + 2 scenarios, + masks
    generated = [layer for layer in layers
                 if layer.metadata["nacsim"]["provenance"].get("model_hash")]
    assert len(generated) == 4 and all(layer.metadata["nacsim"]["synthetic"] for layer in
                                       generated)
    assert all(layer.name.endswith("(synthetic)") for layer in generated
               if layer._type_string == "image")  # the outline: the cell's second line
    assert [layer.name for layer in cell_layers(widget, "labels")] == [
        f"input: {result.baseline_size.total:.0f} mm², "
        f"Ø {format_diameter(result.baseline_size.diameter)}",
        *(f"{arm.label}: {f.size_mean:.0f} mm², Ø {format_diameter(f.diameter_mean)}"
          for arm, f in result.shown())]
    # "input" and "generated", each said once per cell; the phantom input is not "synthetic"
    titles = [layer.name for layer in cell_layers(widget)]
    assert titles == ["T0 input", "T2 · pCR · generated (synthetic)",
                      "T2 · non-pCR · generated (synthetic)"]
    image_scale = np.asarray(viewer.layers["T0 input"].scale)
    for layer in layers:
        if layer.__class__.__name__ == "Labels":  # thin outlines: a 4x finer grid in-plane
            assert layer.contour == 1
            np.testing.assert_allclose(layer.scale, image_scale / 4)
            np.testing.assert_allclose(layer.translate, -image_scale / 2 + image_scale / 8)
        else:
            np.testing.assert_allclose(layer.scale, image_scale)
        assert [str(u) for u in layer.units] == ["millimeter"] * 2   # the scale bar reads mm
    for layer in generated:
        if layer.__class__.__name__ == "Image":
            prov = layer.metadata["nacsim"]["provenance"]
            assert layer.metadata["nacsim"]["synthetic"] is True
            assert prov["model_hash"] == result.model["model_hash"]
            assert prov["scenario"]["time"] == "T2" and prov["steps"] == 3
            assert prov["seed"] == 0 and prov["sampler"] and prov["generated_at"]
            assert tuple(layer.contrast_limits) == (0.0, 1.0)
    assert grid_of(viewer).enabled and grid_of(viewer).stride == -2
    # Only our cells are visible in compare mode: three viewboxes side by side.
    assert grid_of(viewer).actual_shape(viewer.layers) == (1, 3)
    rows = widget.table.rows_text()
    assert len(rows) == 5 and rows[0][0].startswith("T0 input")
    # The sample patient's tumour is found at every follow-up of both arms (measured with 3
    # steps: 352 / 64 mm² under pCR at T1 / T2, 352 / 176 mm² under non-pCR), and each
    # row shows what the engine measured.
    size_cells = {r[0]: r[1] for r in rows[1:]}
    for arm in result.arms:
        for tp, follow in arm.followups.items():
            assert follow.n_found == 1 and follow.size_mean > 0, (arm.label, tp)
            (title,) = [t for t in size_cells if t.startswith(f"{tp} · {arm.label} ")]
            assert size_cells[title] == follow.describe_size()
            assert size_cells[title].endswith(" mm²")
    # the input's size written as the follow-ups' (science.measure.format_size)
    assert rows[0][1].startswith(f"{result.baseline_size.total:.0f} mm²")
    # the longest diameter (mm) and its change, beside the size
    header = [widget.table.table.horizontalHeaderItem(c).text() for c in range(6)]
    assert header[4:] == ["longest diameter", "Δ diameter"]
    assert rows[0][4] == f"{result.baseline_size.diameter:.1f} mm"
    for row, follow in zip(rows[1:], [f for arm in result.arms for f in arm.followups.values()]):
        assert row[4] == f"{follow.diameter_mean:.1f} mm" and row[5].endswith(" %)")
    series = widget.plot.values()
    assert set(series) == {"pCR", "non-pCR"} and all(len(v) == 3 for v in series.values())
    assert series["pCR"][0] == pytest.approx(result.baseline_size.total)
    # Switching the target time re-displays from the same run (remembered, no regeneration).
    widget.panel["target"].value = "T1"
    again = run_and_wait(qtbot, widget)
    assert again.seconds == result.seconds and again.target == "T1"
    assert all(layer.metadata["nacsim"]["provenance"]["scenario"]["time"] == "T1"
               for layer in widget.result_layers()
               if "model_hash" in layer.metadata["nacsim"]["provenance"] and
               layer.__class__.__name__ == "Image")
    widget.grid_mode.setChecked(False)
    assert not grid_of(viewer).enabled
    assert any(layer.visible for layer in viewer.layers if layer not in widget.result_layers())


def test_uncertainty_mean_sd_and_spread(workspace, qtbot):
    viewer, widget = workspace
    widget.samples.setValue(3)
    result = run_and_wait(qtbot, widget)
    names = [layer.name for layer in widget.result_layers()]
    assert sum("mean of 3" in n for n in names if "tumour" not in n) == 2
    assert sum("SD of 3" in n for n in names if "tumour" not in n) == 2
    for _, follow in result.shown():
        assert len(follow.samples) == 3 and follow.spread is not None
        seeds = [s.provenance["seed"] for s in follow.samples]
        assert seeds == [0, 1, 2]
        stack = np.stack([s.array for s in follow.samples])
        np.testing.assert_allclose(follow.image.array, stack.mean(0), atol=1e-6)
        np.testing.assert_allclose(follow.spread.array, stack.std(0, ddof=1), atol=1e-6)
    # one row per scenario: input | mean | SD
    assert grid_of(viewer).actual_shape(viewer.layers) == (2, 3)
    images = cell_layers(widget)
    titles = [layer.name for layer in images]
    assert ["mean of 3 (synthetic)" in t for t in titles] == [False, True, False] * 2
    assert ["SD of 3" in t for t in titles] == [False, False, True] * 2
    assert titles[0] == "T0 input" and titles[3].startswith("T0 input")
    sd_maps = images[2::3]
    body = result.family.body_mask(result.baseline)
    for layer, (_, follow) in zip(sd_maps, result.shown()):
        assert layer.colorbar.visible and layer.colormap.name == "magma"
        data = np.asarray(layer.data)
        assert not data[~body].any()                      # the SD map shown on the body only
        np.testing.assert_allclose(data[body], follow.spread.array[body], atol=1e-6)
    outline_names = [layer.name for layer in widget.result_layers()
                     if layer._type_string == "labels"]
    assert any("SD, intensity 0–1" in n for n in outline_names)  # the SD's unit
    rows = widget.table.rows_text()
    assert "±" in rows[1][1] and "sampling variability" in widget.table.note.text()
    assert all("±" in r[3] and "±" in r[4] for r in rows[1:])  # ± on every derived number


def test_save_writes_nifti_sidecars_and_report(workspace, qtbot, tmp_path):
    _, widget = workspace
    run_and_wait(qtbot, widget)
    out = widget.save_results(tmp_path)
    report = json.loads((out / "report.json").read_text())
    assert report["synthetic"] is True and len(report["scenarios"]) == 2
    sidecar = json.loads((out / "T2_pCR.json").read_text())
    assert sidecar["synthetic"] is True and sidecar["provenance"]["scenario"]["pCR"] is True
    # its own time point, kind and scenario, not those of its input (T0, the post channel)
    assert sidecar["timepoint"] == "T2" and sidecar["scenario"] == "pCR"
    assert sidecar["role"] == "generated follow-up"
    assert sidecar["provenance"]["timepoint"] == "T2"
    assert sidecar["provenance"]["channel"] == "MIP"
    assert sidecar["provenance"]["input"] == {"timepoint": "T0", "channel": "post"}
    mask = json.loads((out / "T1_non-pCR_tumour.json").read_text())
    assert mask["timepoint"] == "T1" and mask["provenance"]["timepoint"] == "T1"
    base = json.loads((out / "T0_baseline.json").read_text())
    assert base["role"] == "input" and base["timepoint"] == "T0"
    assert (out / "comparison.png").stat().st_size > 10_000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_cancel_stops_the_run_and_shows_nothing(workspace, qtbot):
    _, widget = workspace
    widget.steps.setValue(400)
    widget.run()
    qtbot.waitUntil(lambda: widget.progress.value() > 2, timeout=RUN_TIMEOUT_MS)
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=RUN_TIMEOUT_MS)
    qtbot.wait(50)
    assert widget.result is None and widget.results_shown == 0
    assert widget.status.text() == "cancelled"


def test_rapid_toggling_supersedes_and_shows_the_last_state(workspace, qtbot):
    _, widget = workspace
    ticks = []
    from qtpy.QtCore import QElapsedTimer, QTimer

    clock = QElapsedTimer()
    clock.start()
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(clock.elapsed()))
    timer.start(10)
    for k in range(100):
        widget.panel["HR"].value = bool(k % 2)
        widget.panel["HER2"].value = bool(k % 3 == 0)
        widget.run()
    qtbot.waitUntil(lambda: widget.results_shown >= 1 and not widget.runner.running,
                    timeout=RUN_TIMEOUT_MS)
    qtbot.wait(100)
    timer.stop()
    final = widget.panel.clinical
    assert widget.results_shown == 1                     # stale runs were never shown
    for arm in widget.result.arms:
        assert arm.clinical["HR"] == final["HR"] and arm.clinical["HER2"] == final["HER2"]
    assert len(ticks) > 10  # the UI thread kept serving its timer during the runs


def test_bad_inputs_are_notifications(workspace, qtbot, monkeypatch, tmp_path):
    viewer, widget = workspace
    messages = errors_from(monkeypatch)
    volume = viewer.add_image(np.random.default_rng(0).random((8, 32, 32), np.float32),
                              name="a post-contrast volume")
    widget.select_input(volume.name)
    assert widget.run() is None
    # every way to a model input: the command that makes one from files, and the widget's
    # (issue 24: naming the widget's buttons only was a dead end for a file)
    assert "is 3D" in messages[-1] and volume.name in messages[-1]
    assert "`nacsim mip --pre PRE --post POST`" in messages[-1]
    assert "cohort patient…'" in messages[-1]
    assert widget.status.text() == messages[-1]

    viewer.add_image(np.full((64, 64), np.nan, np.float32), name="broken")
    widget.select_input("broken")
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=RUN_TIMEOUT_MS)
    assert "broken" in messages[-1] and "NaN" in messages[-1]

    (tmp_path / "notamodel").mkdir()
    (tmp_path / "notamodel" / "model_card.json").write_text("{not json")
    assert widget.add_model_folder(tmp_path / "notamodel") is False
    assert "notamodel" in messages[-1]
    assert widget.add_model_folder(tmp_path / "missing") is False
    from napari_nacsim.families import family_names, get_family

    bundled = [n for n in family_names() if get_family(n).bundled_generator]
    assert widget.model_combo.count() == len(bundled) and widget.result is None


def test_layer_without_spacing_assumes_the_model_field_of_view(workspace, qtbot, monkeypatch):
    viewer, widget = workspace
    warnings = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", warnings.append)
    mip = viewer.layers[widget.input_combo.currentText()]
    viewer.add_image(np.asarray(mip.data), name="plain array")
    widget.select_input("plain array")
    result = run_and_wait(qtbot, widget)
    assert "no voxel spacing" in warnings[-1] and "256 x 256 mm" in warnings[-1]
    assert result.baseline.provenance["spacing_known"] is False
    np.testing.assert_allclose(result.baseline.spacing, (2.0, 2.0))   # 256 mm over 128 px


def test_closing_mid_run_leaves_no_thread(workspace, qtbot):
    _, widget = workspace
    widget.steps.setValue(400)
    threads_before = threading.active_count()
    widget.run()
    qtbot.waitUntil(lambda: widget.progress.value() > 1, timeout=RUN_TIMEOUT_MS)
    widget.close()  # waits for the worker to stop
    assert widget.runner._idle.is_set()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=RUN_TIMEOUT_MS)
    assert widget.runner._idle.is_set()
    assert widget.result is None
    assert threading.active_count() <= threads_before + 1  # the pool may keep an idle thread


def test_cohort_patient_opens_as_input_with_scenario_prefilled(workspace, qtbot, tmp_path):
    from cohort_helpers import tiny_cohort

    from napari_nacsim.core.cohort import load_cohort

    viewer, widget = workspace
    cohort = load_cohort(tiny_cohort(tmp_path / "cohort", n_patients=2, keep=("T0",)))
    patient = cohort.patients[1]
    widget.panel["HR"].value = not patient.clinical["HR"]
    widget.open_cohort_patient(cohort, patient.id)
    qtbot.waitUntil(lambda: patient.id in widget.input_combo.currentText(), timeout=60_000)
    layer = viewer.layers[widget.input_combo.currentText()]
    assert layer.ndim == 2 and layer.metadata["nacsim"]["patient"]["id"] == patient.id
    assert widget.panel.clinical == {k: patient.clinical[k] for k in ("pCR", "HR", "HER2")}
    assert any(patient.id in lyr.name and lyr.__class__.__name__ == "Labels"
               for lyr in viewer.layers)


# --- the workspace as a reading tool --------------------------------------------------------

def test_first_run_shows_the_comparison_without_a_click(make_napari_viewer, qtbot):
    """Opened on the sample patient, the workspace generates the default comparison by
    itself (model loading off the UI thread), says what it is doing, and shows the phantom
    patient in its header; only the image is selected (no paint tools)."""
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer()
    viewer.open_sample("nacsim", "breast")
    assert viewer.dims.ndim == 2                       # no stray slice slider under the MIP
    widget = WhatIfWorkspace(viewer)
    try:
        assert widget.status.text() != "Pick the pre-treatment image."
        assert viewer.layers.selection.active.__class__.__name__ == "Image"
        header = widget.header.text()
        assert "Phantom patient BR0001" in header and "input: T0 MIP" in header
        assert header.count("synthetic") == 1             # said once, in the header
        assert "pCR vs non-pCR · HR+, HER2−" in header     # what the cells share
        qtbot.waitUntil(lambda: widget.results_shown == 1 and not widget.runner.running,
                        timeout=RUN_TIMEOUT_MS)            # no click
        assert widget.status.text().startswith("Done in")
        assert [arm.label for arm in widget.result.arms] == ["pCR", "non-pCR"]
        assert grid_of(viewer).enabled
        active = viewer.layers.selection.active
        assert active.__class__.__name__ == "Image" and active.name == "T0 input"
        # the compared check box: disabled, showing both states
        box = widget.panel["pCR"].native
        assert not box.isEnabled() and box.checkState() == Qt.PartiallyChecked
        # only the comparison is visible (the patient's own layers wait, hidden)
        assert {layer.name for layer in viewer.layers if layer.visible} == \
            {layer.name for layer in widget.result_layers()}
    finally:
        widget.shutdown()


def test_lung_sample_first_run_picks_the_lung_model_and_makes_the_crop(make_napari_viewer,
                                                                      qtbot):
    """The lung sample (its whole CT and masks) in a workspace that lists the breast model
    first: the patient's family chooses the lung model, the CT crop is made from the open
    pre-treatment scans, and the PD-L1 comparison follows, all without a click."""
    viewer = make_napari_viewer(show=True)  # a real window: the cells' width is measured
    viewer.open_sample("nacsim", "lung")
    widget = WhatIfWorkspace(viewer)
    viewer.window.add_dock_widget(widget, name="nacsim what-if", area="right")
    try:
        assert widget.models.current.family.name == "lung"
        assert widget.input_combo.currentText() == "LU0001 pre ct (phantom)"  # the shown CT
        assert widget.panel["PD_L1"].value == pytest.approx(0.0)  # the patient's own values
        qtbot.waitUntil(lambda: widget.results_shown == 1 and not widget.runner.running,
                        timeout=RUN_TIMEOUT_MS)
        layer = widget.input_layer()
        assert layer.name == "LU0001 pre CT crop · model input"
        assert layer.data.shape == (16, 96, 96)
        assert layer.metadata["nacsim"]["patient"]["family"] == "lung"
        assert widget.result.family.name == "lung"
        assert [arm.label for arm in widget.result.arms] == ["PD-L1 TPS 0 %", "PD-L1 TPS 50 %"]
        assert "Phantom patient LU0001" in widget.header.text()
        # scenario titles: the compared value, not the nine background values every arm shares
        assert [f.title for _, f in widget.result.shown()] == [
            "post · PD-L1 TPS 0 % (synthetic)", "post · PD-L1 TPS 50 % (synthetic)"]
        # the long generated-cell titles get a smaller font rather than a cut "(synthetic)"
        cell_px = viewer.window._qt_viewer.canvas.size[1] / 3
        for layer in cell_layers(widget):
            points = layer.name_overlay.font_size
            assert points >= MIN_TITLE_POINTS
            assert len(layer.name) * points * PX_PER_CHAR_POINT <= cell_px
        # the whole CT is not a model input: the widget says so and names its own way out
        widget.select_input("LU0001 pre ct (phantom)")
        assert not input_fits(widget.input_layer(), widget.models.current)
        assert "has shape (40, 128, 160)" in widget.status.text()
        assert "'Make from open scans…'" in widget.status.text()
    finally:
        widget.shutdown()


def test_cell_titles_shrink_to_fit_rather_than_being_cut():
    short, long = "T2 · pCR · generated (synthetic)", "post · PD-L1 TPS 50 % · generated (synthetic)"
    assert title_points(short, 298) == TITLE_POINTS
    points = title_points(long, 298)
    assert MIN_TITLE_POINTS <= points < TITLE_POINTS
    assert len(long) * points * PX_PER_CHAR_POINT <= 298
    assert title_points(long, None) == TITLE_POINTS      # no window: the default size
    assert title_points(long * 4, 298) == MIN_TITLE_POINTS  # never unreadably small


def test_model_loads_at_once_when_nothing_to_compare_yet(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = WhatIfWorkspace(viewer)
    try:
        qtbot.waitUntil(lambda: any(m.session is not None for m in widget.models) and
                        not widget.runner.running,
                        timeout=RUN_TIMEOUT_MS)
        assert widget.results_shown == 0
        assert widget.status.text().startswith("Ready. Open the pre-treatment image")
        assert widget.header.text() == "<b>No input image open</b>"
    finally:
        widget.shutdown()


def test_compared_check_box_holds_its_value(workspace):
    """The compared variable's box is disabled and partly checked; the value it had before
    comes back when nothing (or something else) is compared, and never leaks."""
    from qtpy.QtCore import Qt

    viewer, widget = workspace
    patient = viewer.layers[widget.input_combo.currentText()].metadata["nacsim"]["patient"]
    recorded = patient["clinical_values"]["pCR"]
    box = widget.panel["pCR"].native
    assert not box.isEnabled() and box.checkState() == Qt.PartiallyChecked
    assert "pCR" not in widget.request().clinical        # each arm sets it
    assert widget.request().compare == "pCR"
    widget.compare_combo.setCurrentIndex(widget.compare_combo.findData(None))  # nothing
    assert box.isEnabled() and box.isChecked() is recorded and not box.isTristate()
    one = widget.request()
    assert one.compare is None and one.clinical["pCR"] is recorded
    widget.compare_combo.setCurrentIndex(widget.compare_combo.findData("HR"))
    assert box.isEnabled() and widget.panel["HR"].native.checkState() == Qt.PartiallyChecked
    widget.panel["pCR"].value = not recorded              # now the user may set it
    request = widget.request()
    assert request.compare == "HR" and request.clinical["pCR"] is (not recorded)
    assert "HR" not in request.clinical


def test_linked_window_presets_readout_orientation_and_outlines(workspace, qtbot):
    viewer, widget = workspace
    result = run_and_wait(qtbot, widget)
    images = cell_layers(widget)
    assert widget.window_combo.currentText().startswith("MIP (L 0.5, W 1)")
    # one window for every cell: changing one changes all
    images[1].contrast_limits = (0.1, 0.6)
    assert all(tuple(layer.contrast_limits) == pytest.approx((0.1, 0.6)) for layer in images)
    assert widget.window_combo.currentText().startswith("custom (L 0.35, W 0.5)")
    widget.set_window("MIP")
    assert all(tuple(layer.contrast_limits) == (0.0, 1.0) for layer in images)
    # the window stays when the next result arrives
    images[0].contrast_limits = (0.0, 0.5)
    widget.panel["HR"].value = not widget.panel["HR"].value
    run_and_wait(qtbot, widget)
    assert all(tuple(layer.contrast_limits) == pytest.approx((0.0, 0.5))
               for layer in cell_layers(widget))
    # the value under the cursor in every cell, in mm
    centre = np.asarray(images[0].data.shape) / 2 * np.asarray(images[0].scale)
    text = widget.readout.text_at(tuple(centre))
    assert text.startswith("(x, y) = (") and "mm" in text
    index = tuple(int(v) for v in np.asarray(images[0].data.shape) // 2)
    for label, layer in zip(("input", "pCR", "non-pCR"), cell_layers(widget)):
        assert f"{label} {float(np.asarray(layer.data)[index]):.2f}" in text
    assert text.endswith("[intensity 0–1]")
    # orientation letters and a scale bar in mm in every cell; generated cells framed
    from napari_nacsim.plugin.viewing import orientation_letters, scale_bar_of

    assert orientation_letters(viewer) == ["R", "L"]
    assert scale_bar_of(viewer).visible and scale_bar_of(viewer).gridded
    frames = [layer.bounding_box.visible for layer in cell_layers(widget)]
    assert frames == [False, True, True]
    # one switch for every outline (opacity: a hidden layer would leave its grid cell)
    widget.outlines.setChecked(False)
    assert all(layer.opacity == 0 for layer in cell_layers(widget, "labels"))
    assert grid_of(viewer).actual_shape(viewer.layers) == (1, 3)
    widget.outlines.setChecked(True)
    assert all(layer.opacity == 1 for layer in cell_layers(widget, "labels"))
    assert result.family.name == "breast"


def test_model_input_from_the_open_dce_volumes(make_napari_viewer, qtbot, monkeypatch):
    """Where 3D scans are open, the workspace makes the model input from them (off the UI
    thread) and takes it as its input, the scenario from the patient's values."""
    viewer = make_napari_viewer()
    viewer.open_sample("nacsim", "breast-volumes")
    assert all(layer.ndim == 3 for layer in viewer.layers)
    widget = WhatIfWorkspace(viewer)
    widget.auto_run.setChecked(False)
    messages = errors_from(monkeypatch)
    try:
        assert widget.make_input_button.isEnabled()
        found = visit_layers(viewer.layers, widget.models.current.family)
        assert {k: v.name for k, v in found.items()} == {
            "pre": "BR0001 T0 pre (phantom)", "post": "BR0001 T0 post (phantom)",
            "tumour": "BR0001 T0 tumour (phantom)"}
        assert widget.run() is None and "is 3D" in messages[-1]   # a volume is not the input
        assert "'Make from open scans…'" in messages[-1]
        widget.make_model_input()
        qtbot.waitUntil(lambda: "model input" in widget.input_combo.currentText() and
                        not widget.runner.running, timeout=RUN_TIMEOUT_MS)
        layer = viewer.layers[widget.input_combo.currentText()]
        assert layer.ndim == 2 and layer.metadata["nacsim"]["patient"]["id"] == "BR0001"
        from napari_nacsim.families import get_family

        expected = get_family("breast").sample_case(0)["inputs"]["T0"]["image"]
        np.testing.assert_allclose(np.asarray(layer.data), expected.array, atol=1e-5)
        assert "Phantom patient BR0001" in widget.header.text()
        assert widget.request().clinical == {"HR": True, "HER2": False}
    finally:
        widget.shutdown()


def test_nifti_files_open_with_our_reader_without_asking(workspace, nifti_file):
    from napari.settings import get_settings

    viewer, _ = workspace
    readers = get_settings().plugins.extension2reader
    assert readers["*.nii.gz"] == "nacsim" and readers["*.nii"] == "nacsim"
    before = len(viewer.layers)
    # File → Open's own path (no plugin named): no reader dialog, our reader
    viewer.window._qt_viewer._qt_open([str(nifti_file[0])], stack=False)
    layer = viewer.layers[-1]
    assert len(viewer.layers) == before + 1
    assert layer.metadata["nacsim"]["source"] == str(nifti_file[0])


def test_opening_the_workspace_does_not_import_torch_on_the_ui_thread():
    """Listing the bundled models reads their cards only (`science.generative.card`): the
    torch import (seconds) happens in the worker, with the model."""
    import subprocess
    import sys

    code = ("import sys; import napari_nacsim.plugin.workspace as w; "
            "from napari_nacsim.science.generative.card import read_card, sampling_defaults; "
            "from napari_nacsim.families import get_family; "
            "card = read_card(get_family('breast').bundled_generator_path()); "
            "sampling_defaults(card['config']); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"
