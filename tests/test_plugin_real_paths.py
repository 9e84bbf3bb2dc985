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
import warnings

import numpy as np
import pytest

from napari_nacsim.families import get_family

pytestmark = pytest.mark.viewer

RUN_TIMEOUT_MS = 240_000
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
            out = widget.save_results(tmp_path)
            assert out is not None and (out / "report.json").is_file()
            assert (out / "comparison.png").is_file()
            report = json.loads((out / "report.json").read_text())
            assert report["request"]["clinical"]["HR"] is widget.panel["HR"].value  # the last run
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
            assert "pre CT" in widget.header.text() and "post CT" not in widget.header.text()
            _wait_result(qtbot, widget, 1)
            assert widget.input_layer().name == "LU0001 pre CT crop · model input"
            assert widget.result.family.name == "lung"
            main = widget.window()
            qtbot.wait(50)
            width, height = main.width(), main.height()
            _check_run_state(widget, main, width, height)
            # the lung table: RECIST per scenario, measured on each generated image
            headers = [widget.table.table.horizontalHeaderItem(c).text()
                       for c in range(widget.table.table.columnCount())]
            assert "RECIST (measured)" in headers
            widget.advanced.setChecked(True)
            widget.samples.setValue(2)                      # a different request: a run
            _wait_result(qtbot, widget, 2)
            _check_run_state(widget, main, width, height)
            assert notices() == []
        finally:
            widget.shutdown()
    assert _our_warnings(caught) == []
