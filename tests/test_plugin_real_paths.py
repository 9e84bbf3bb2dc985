"""The workspace and the inspector as napari really opens them (issue 24).

`make demo` (with a display), ``napari -w nacsim`` and the Plugins menu all dock the widget
with ``viewer.window.add_plugin_dock_widget``: napari constructs it and hands it a
``PublicOnlyProxy`` of the viewer, not the viewer. Tests that construct the widget
themselves never see that, so these tests go napari's way: the demo's own viewer, and
``add_plugin_dock_widget`` in a real viewer (under Xvfb in CI). Each runs several what-ifs
in a row, saves after them and checks the window keeps its size.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest

from napari_nacsim.families import get_family

pytestmark = pytest.mark.viewer

RUN_TIMEOUT_MS = int(os.environ.get("NACSIM_TEST_WAIT_MS", 240_000))  # a loaded machine: more
WORKSPACE = "What-if workspace"
INSPECTOR = "Cohort inspector"


@pytest.fixture
def notices():
    """The notifications a user would see from now on (errors and warnings), as text."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    start = len(notification_manager.records)

    def read(min_severity=NotificationSeverity.WARNING) -> list[str]:
        return [str(n.message) for n in notification_manager.records[start:]
                if n.severity >= min_severity]
    return read


def _wait_result(qtbot, widget, count: int) -> None:
    qtbot.waitUntil(lambda: widget.results_shown >= count and not widget.runner.running,
                    timeout=RUN_TIMEOUT_MS)


def _docks(widget, name: str) -> int:
    from qtpy.QtWidgets import QDockWidget

    return sum(1 for dock in widget.window().findChildren(QDockWidget)
               if name in dock.windowTitle() or name in dock.objectName())


def _our_warnings(caught) -> list[str]:
    """Developer warnings our widgets cause (private napari access, matplotlib)."""
    return [f"{w.category.__name__}: {w.message}" for w in caught
            if "Private attribute" in str(w.message) or "matplotlib" in w.filename or
            "napari_nacsim" in w.filename]


def _check_slider_and_zoom_fit_the_crop(viewer, widget) -> None:
    """Item 4: the hidden whole-CT layers (40 slices) neither extend the slice slider past
    the 16-slice crop (empty cells) nor shrink the cells."""
    crop = widget.input_layer()
    lo, hi = crop.extent.world[:, 0]
    r = viewer.dims.range[0]
    positions = round((r.stop - r.start) / r.step) + 1
    assert positions == crop.data.shape[0] == 16       # every position: the crop's slices
    assert lo - r.step <= r.start and r.stop <= hi + r.step
    assert lo <= viewer.dims.point[0] <= hi
    zoom = viewer.camera.zoom
    viewer.reset_view()                                # napari's own fit: every layer
    assert zoom > 1.2 * viewer.camera.zoom             # the cells' fit is tighter
    viewer.camera.zoom = zoom


def _screenshot(qtbot, viewer, name: str) -> None:
    """The whole window as a CI artefact (`test_screenshots.screenshot_dir`)."""
    from test_screenshots import screenshot_dir

    qtbot.wait(400)
    viewer.screenshot(path=str(screenshot_dir() / name), canvas_only=False, flash=False)


def _check_run_state(widget, main, width: int, height: int) -> None:
    assert widget.status.text().startswith("Done in"), widget.status.text()
    assert widget.save_button.isEnabled()
    assert _docks(widget, "nacsim: tumour sizes") == 1      # one table, one plot: ever
    assert _docks(widget, "nacsim: size over time") == 1
    assert (main.width(), main.height()) == (width, height)  # the window keeps its size


def test_demo_path_breast_consecutive_runs_save_and_window_size(qtbot, tmp_path, notices):
    """`make demo` with a display: the sample, the workspace docked napari's way; the first
    comparison comes without a click, then three what-ifs in a row, then Save."""
    from napari_nacsim.cli.demo import demo_viewer

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        viewer, widget = demo_viewer(get_family("breast"))
        try:
            assert type(widget.viewer).__name__ == "Viewer"   # not napari's proxy
            _wait_result(qtbot, widget, 1)                    # no click
            main = widget.window()
            qtbot.wait(50)                                    # the docks laid out
            width, height = main.width(), main.height()
            _check_run_state(widget, main, width, height)
            for k in range(3):
                widget.panel["HR"].value = not widget.panel["HR"].value  # updates by itself
                _wait_result(qtbot, widget, k + 2)
                _check_run_state(widget, main, width, height)
            assert widget.results_shown == 4
            _screenshot(qtbot, viewer, "workspace-three-runs.png")  # docs/images
            out = widget.save_results(tmp_path)
            assert out is not None and (out / "report.json").is_file()
            assert (out / "comparison.png").is_file()
            report = json.loads((out / "report.json").read_text())
            # the last run's scenario
            assert report["request"]["clinical"]["HR"] is widget.panel["HR"].value
            assert notices() == []
        finally:
            widget.shutdown()
            viewer.close()
    assert _our_warnings(caught) == []


def test_plugins_menu_lung_sample_runs_without_a_click(make_napari_viewer, qtbot, notices):
    """The lung sample, then the workspace from the Plugins menu (the same call): the input
    is the shown pre-treatment CT (never the hidden post CT), the crop is made from it and
    the comparison follows by itself; a second run keeps the docks and the window."""
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("nacsim", "lung")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, widget = viewer.window.add_plugin_dock_widget("nacsim", WORKSPACE)
        try:
            assert type(widget.viewer).__name__ == "Viewer"
            assert widget.input_combo.currentText() == "LU0001 pre ct (phantom)"
            header = widget.header.text()                   # the layer as it is
            assert "LU0001 pre ct (phantom)" in header and "post" not in header
            _wait_result(qtbot, widget, 1)
            assert widget.input_layer().name == "LU0001 pre CT crop · model input"
            assert widget.result.family.name == "lung"
            _screenshot(qtbot, viewer, "lung-first-comparison.png")  # docs/images
            _check_slider_and_zoom_fit_the_crop(viewer, widget)
            main = widget.window()
            qtbot.wait(50)
            width, height = main.width(), main.height()
            _check_run_state(widget, main, width, height)
            # the lung table: RECIST per scenario, measured on each generated image
            headers = [widget.table.table.horizontalHeaderItem(c).text()
                       for c in range(widget.table.table.columnCount())]
            assert "RECIST (measured)" in headers
            column = headers.index("RECIST (measured)")
            cells = [widget.table.table.item(r, column).text()
                     for r in range(1, widget.table.table.rowCount())]
            assert cells and all(any(c in text for c in ("CR", "PR", "SD", "PD"))
                                 for text in cells), cells
            widget.advanced.setChecked(True)
            widget.samples.setValue(2)                      # a different request: a run
            _wait_result(qtbot, widget, 2)
            _check_run_state(widget, main, width, height)
            r = viewer.dims.range[0]                       # still the crop's slices
            assert round((r.stop - r.start) / r.step) + 1 == 16
            assert notices() == []
            widget.grid_mode.setChecked(False)             # off the grid: the whole CT again
            r = viewer.dims.range[0]
            assert round((r.stop - r.start) / r.step) + 1 > 16
        finally:
            widget.shutdown()
    assert _our_warnings(caught) == []


# --- each wrong or confusing item, on napari's path -----------------------------------------

@pytest.fixture
def docked(make_napari_viewer):
    """A shown viewer with the breast sample and the workspace from the Plugins menu, its
    updates off (the tests trigger runs), few sampler steps."""
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("nacsim", "breast")
    dock, widget = viewer.window.add_plugin_dock_widget("nacsim", WORKSPACE)
    widget.auto_run.setChecked(False)  # before its first run (queued to the event loop)
    widget.advanced.setChecked(True)
    widget.steps.setValue(2)
    yield viewer, dock, widget
    widget.shutdown()


def _run(qtbot, widget) -> None:
    before = widget.results_shown
    assert widget.run() is not None
    _wait_result(qtbot, widget, before + 1)


def _cells_top_down(viewer, group: str) -> list:
    """The group's layers from the top of the layer list: napari fills each grid cell with
    the next two (stride -2), so [outline, image] pairs must share a slot's cell."""
    from napari_nacsim.plugin.grid_view import group_layers

    ours = set(map(id, group_layers(viewer, group)))
    layers = [layer for layer in reversed(list(viewer.layers)) if id(layer) in ours]
    return [layer.metadata["nacsim"]["slot"].split(":")[1] for layer in layers]


def test_deleting_a_cell_layer_takes_its_partner(docked, qtbot):
    """Item 6: deleting a generated image removes its outline too, so the cells below keep
    their [outline, image] pairs (no pCR image under the non-pCR size)."""
    viewer, _, widget = docked
    _run(qtbot, widget)
    from napari_nacsim.plugin.workspace import GROUP

    pcr = next(layer for layer in widget.result_layers()
               if layer._type_string == "image" and "pCR" in layer.name and
               "non-pCR" not in layer.name)
    viewer.layers.remove(pcr)
    qtbot.waitUntil(lambda: len(widget.result_layers()) == 4, timeout=5_000)
    cells = _cells_top_down(viewer, GROUP)
    assert len(cells) == 4                            # input and non-pCR: whole cells
    assert cells[0::2] == cells[1::2]                 # every pair from one cell
    _run(qtbot, widget)                               # the next run restores every cell
    assert len(widget.result_layers()) == 6


def test_closing_the_dock_mid_run_leaves_the_grid(docked, qtbot):
    """Item 6: the workspace closed (its dock's close button) while a run goes on: the grid
    is left and the user's layers are visible again."""
    from napari_nacsim.plugin.grid_view import grid_of

    viewer, dock, widget = docked
    own = {layer.name: layer.visible for layer in viewer.layers}  # the user's, as they were
    _run(qtbot, widget)
    assert grid_of(viewer).enabled and not any(viewer.layers[name].visible for name in own)
    widget.panel["HR"].value = not widget.panel["HR"].value
    widget.run()
    viewer.window.remove_dock_widget(dock)
    qtbot.waitUntil(lambda: widget._closed, timeout=10_000)
    assert not grid_of(viewer).enabled
    assert {name: viewer.layers[name].visible for name in own} == own


def test_inspector_and_workspace_together_lung_after_breast(docked, qtbot, tmp_path,
                                                            notices):
    """Items 5 and 6 on the Plugins-menu path: the inspector next to the workspace; a lung
    cohort after a breast one opens on the lung window and the tumour's slice, its
    scenario column starts with PD-L1, its cells are fitted; the workspace's cells never
    carry the inspector's titles, frames or colour bars (nor the other way round)."""
    from cohort_helpers import tiny_cohort
    from napari_nacsim.datasets.phantom_cohort import write_phantom_cohort
    from napari_nacsim.plugin import inspector as inspector_module

    viewer, _, widget = docked
    _run(qtbot, widget)
    _, inspector = viewer.window.add_plugin_dock_widget("nacsim", INSPECTOR)
    assert type(inspector.viewer).__name__ == "Viewer"
    inspector.steps.setValue(2)
    breast = tiny_cohort(tmp_path / "breast", 1)
    lung = write_phantom_cohort("lung", 1, 11, tmp_path / "lung", jobs=1)
    try:
        for manifest in (breast, lung):
            inspector.path_edit.setText(str(manifest))
            inspector.run()
            qtbot.waitUntil(lambda: not inspector.runner.running and bool(inspector.cases),
                            timeout=RUN_TIMEOUT_MS)
            inspector.table.selectRow(0)  # shown once its layer data are made (a worker)
            qtbot.waitUntil(lambda: inspector.shown_case is inspector.cases[0],
                            timeout=RUN_TIMEOUT_MS)
            _decorations_only_on_shown_layers(viewer)
        case = inspector.cases[0]
        lung_family = get_family("lung")
        images = sorted((layer for layer in viewer.layers
                         if (layer.metadata.get("nacsim") or {}).get("group") ==
                         inspector_module.GROUP and layer._type_string == "image"),
                        key=lambda layer: layer.metadata["nacsim"]["slot"])
        assert tuple(images[0].contrast_limits) == pytest.approx(
            lung_family.window_presets[0].limits)      # not the breast 0-1 window
        index = lung_family.display_slice(case.images.baseline_mask)
        assert viewer.dims.point[0] == pytest.approx(images[0].data_to_world([index, 0, 0])[0])
        assert inspector.table.item(0, 2).text().startswith("PD-L1")
        r = viewer.dims.range[0]
        assert round((r.stop - r.start) / r.step) + 1 == images[0].data.shape[0]
        # back to the workspace: its cells, its decorations only
        widget.panel["HR"].value = not widget.panel["HR"].value
        _run(qtbot, widget)
        _decorations_only_on_shown_layers(viewer)
        assert inspector.cursor_label.text() == ""
        assert notices() == []
    finally:
        inspector.shutdown()


def _decorations_only_on_shown_layers(viewer) -> None:
    for layer in viewer.layers:
        if not layer.visible:
            assert not layer.name_overlay.visible, layer.name
            assert not layer.bounding_box.visible, layer.name
            if hasattr(layer, "colorbar"):
                assert not layer.colorbar.visible, layer.name


def test_labels_fit_and_readout_is_off_the_canvas(docked, qtbot):
    """Item 7: with samples > 1 (three columns) every cell's second line fits its cell (a
    right-aligned line too long lost its start: "L1 TPS 0 %…"); the value under the cursor
    is in the widget, not over the cells' scale bars, and a new layout clears it."""
    from types import SimpleNamespace

    from napari_nacsim.plugin.grid_view import (PX_PER_CHAR_POINT, SUBTITLE_PX_PER_CHAR_POINT,
                                                 TITLE_MARGIN_PX)

    viewer, _, widget = docked
    widget.samples.setValue(3)
    _run(qtbot, widget)
    cell_px = viewer.window._qt_viewer.canvas.size[1] / 3
    for layer in widget.result_layers():
        points = layer.name_overlay.font_size
        per_char = PX_PER_CHAR_POINT if layer._type_string == "image" else \
            SUBTITLE_PX_PER_CHAR_POINT
        assert len(layer.name) * points * per_char <= cell_px - TITLE_MARGIN_PX + 1, \
            (layer.name, points)
    assert not any("readout" in str(key) for key in viewer.canvas.overlays)
    image = widget.input_layer()
    centre = tuple(np.asarray(image.data.shape) / 2 * np.asarray(image.scale))
    widget.readout._on_move(viewer, SimpleNamespace(position=centre))
    assert widget.cursor_label.text().startswith("(x, y) = (")
    widget.samples.setValue(1)
    _run(qtbot, widget)
    assert widget.cursor_label.text() == ""           # no stale labels of the old layout


def test_header_and_advice_describe_the_layer_chosen(docked, qtbot):
    """Item 8: a layer that is not the model's input is described as it is (not "input: T0
    MIP"), and the advice names the commands that make an input from files."""
    viewer, _, widget = docked
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=RUN_TIMEOUT_MS)  # preload
    viewer.add_image(np.zeros((20, 64, 64), np.float32), name="brain MRI")
    widget.select_input("brain MRI")
    header = widget.header.text()
    assert "input: T0 MIP" not in header
    assert "brain MRI (3D, 20×64×64)" in header and "not the breast model's input" in header
    assert "`nacsim mip --pre PRE --post POST`" in widget.status.text()


def test_make_input_follows_the_model_and_advanced_alone_does_not_rerun(docked, qtbot):
    """Item 9: 'Make from open scans…' is refreshed when the model changes; ticking
    Advanced with its values unchanged generates nothing new."""
    viewer, _, widget = docked
    widget.controls.show_sampling_defaults(         # Advanced at the model's own values
        widget.models.current.sampling_defaults)
    widget.advanced.setChecked(False)
    widget.auto_run.setChecked(True)
    _run(qtbot, widget)
    shown = widget.results_shown
    widget.advanced.setChecked(True)                  # the model's own defaults: same run
    widget.advanced.setChecked(False)
    qtbot.wait(600)                                   # past the debounce
    assert widget.results_shown == shown and not widget.runner.running
    widget.auto_run.setChecked(False)
    # (off the grid first: napari 0.9.2's canvas raised IndexError in a paint when a sample's
    # visible layers were added to a gridded view)
    widget.grid_mode.setChecked(False)
    viewer.open_sample("nacsim", "lung")              # the lung CT: a lung model input
    lung = [k for k, model in enumerate(widget.models) if model.family.name == "lung"][0]
    breast = [k for k, model in enumerate(widget.models) if model.family.name == "breast"][0]
    widget.model_combo.setCurrentIndex(lung)
    assert widget.make_input_button.isEnabled()
    assert "pre ct" in widget.make_input_button.toolTip()
    widget.model_combo.setCurrentIndex(breast)        # no breast DCE volumes open
    assert not widget.make_input_button.isEnabled()
    # the lung crop is cut around the tumour: without its mask open, no button to press,
    # and the tooltip says what to open (not "lung visits: ... has no tumour mask" later)
    widget.model_combo.setCurrentIndex(lung)
    tumour = next(layer for layer in viewer.layers if layer._type_string == "labels" and
                  "pre" in layer.name and "tumour" in layer.name and
                  (layer.metadata.get("nacsim") or {}).get("group") is None)
    viewer.layers.remove(tumour)
    assert not widget.make_input_button.isEnabled()
    assert "the tumour mask" in widget.make_input_button.toolTip()


def test_a_window_restored_wider_than_the_screen_comes_back(make_napari_viewer, qtbot):
    """Item 1's aftermath: napari restores the last session's window size (11,727 px wide
    after twelve broken runs); the workspace brings such a window back within the screen."""
    viewer = make_napari_viewer(show=True)
    main = viewer.window._qt_window
    main.resize(11727, 900)
    qtbot.wait(50)
    _, widget = viewer.window.add_plugin_dock_widget("nacsim", WORKSPACE)
    widget.auto_run.setChecked(False)
    try:
        screen = main.screen().availableGeometry()
        qtbot.waitUntil(lambda: main.width() <= screen.width(), timeout=10_000)
        assert main.height() >= min(900, screen.height()) - 1   # never shrunk otherwise
    finally:
        widget.shutdown()
