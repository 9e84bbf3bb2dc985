"""The what-if workspace in a real napari viewer (pytest-qt, offscreen/Xvfb).

Runs use the bundled tiny model with few sampler steps: the real code paths, small and fast.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from napari_nacsim.plugin.grid_view import grid_of
from napari_nacsim.plugin.workspace import WhatIfWorkspace

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


def errors_from(monkeypatch):
    """Collect the one-line error/warning notifications the widget shows."""
    messages = []
    import napari_nacsim.plugin.background as background

    monkeypatch.setattr("napari.utils.notifications.show_error",
                        lambda message: messages.append(message))
    monkeypatch.setattr(background, "notify_error",
                        lambda exc, context="": messages.append(str(exc)), raising=True)
    import napari_nacsim.plugin.workspace as workspace_module

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
    names = [layer.name for layer in layers]
    assert len(layers) == 6                                  # baseline + 2 scenarios, + masks
    generated = [layer for layer in layers
                 if layer.metadata["nacsim"]["provenance"].get("model_hash")]
    assert len(generated) == 4 and all(layer.name.endswith("(synthetic)") for layer in generated)
    image_scale = viewer.layers[names[0]].scale
    for layer in layers:
        np.testing.assert_allclose(layer.scale, image_scale)  # masks share the image scale
        if layer.__class__.__name__ == "Labels":
            assert layer.contour == 1
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
    assert len(rows) == 5 and rows[0][0].startswith("T0 baseline")
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
    assert rows[0][1].startswith(f"{result.baseline_size.total:.1f} mm²")
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
    assert grid_of(viewer).actual_shape(viewer.layers) == (2, 3)   # baseline + 2 x (mean, SD)
    assert "±" in widget.table.rows_text()[1][1] and "sampling variability" in \
        widget.table.note.text()


def test_save_writes_nifti_sidecars_and_report(workspace, qtbot, tmp_path):
    _, widget = workspace
    run_and_wait(qtbot, widget)
    out = widget.save_results(tmp_path)
    report = json.loads((out / "report.json").read_text())
    assert report["synthetic"] is True and len(report["scenarios"]) == 2
    sidecar = json.loads((out / "T2_pCR.json").read_text())
    assert sidecar["synthetic"] is True and sidecar["provenance"]["scenario"]["pCR"] is True
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
    volume = next(layer for layer in viewer.layers if layer.ndim == 3 and
                  layer.__class__.__name__ == "Image")
    widget.select_input(volume.name)
    assert widget.run() is None
    assert "is 3D" in messages[-1] and volume.name in messages[-1]

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
    assert widget.model_combo.count() == 1 and widget.result is None


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
    np.testing.assert_allclose(result.baseline.spacing, (4.0, 4.0))


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
