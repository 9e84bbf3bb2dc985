"""Real windows under Xvfb (1600 x 1000): screenshots of the workspace's first run (no
click), of compare mode with several samples, and of the inspector, kept as CI artefacts in
``test-artifacts/screenshots`` (or ``$NACSIM_SCREENSHOTS``); the README's images are these
files (docs/images)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.viewer

ROOT = Path(__file__).resolve().parents[1]
WAIT_MS = 600_000  # a loaded 2-core machine: model loading, 4 images x samples


def screenshot_dir() -> Path:
    folder = Path(os.environ.get("NACSIM_SCREENSHOTS", ROOT / "test-artifacts" / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def cell_columns_with_content(canvas: np.ndarray, n: int) -> int:
    """How many of ``n`` equal-width vertical strips of the canvas show an image."""
    grey = canvas[..., :3].mean(axis=-1)
    strips = np.array_split(grey, n, axis=1)
    return sum(float(s.std()) > 10 for s in strips)


def dock_widths(main) -> str:
    """Where the window's width went (the message of a failed width check)."""
    from qtpy.QtWidgets import QDockWidget

    docks = [f"{d.windowTitle()}: {d.width()} (min {d.minimumSizeHint().width()}, "
             f"area {int(main.dockWidgetArea(d).value)})"
             for d in main.findChildren(QDockWidget) if d.isVisible()]
    return f"window {main.width()} px; " + "; ".join(docks)


def settle(qtbot, viewer) -> None:
    qtbot.wait(400)
    viewer.window._qt_window.repaint()
    qtbot.wait(200)


def test_workspace_first_run_and_samples_screenshots(make_napari_viewer, qtbot):
    from napari_nacsim.plugin.workspace import WINDOW_SIZE, WhatIfWorkspace

    viewer = make_napari_viewer(show=True)
    main = viewer.window._qt_window
    main.resize(1000, 700)                       # napari's own small default window
    viewer.open_sample("nacsim", "breast")
    widget = WhatIfWorkspace(viewer)
    viewer.window.add_dock_widget(widget, name="nacsim what-if", area="right")
    qtbot.waitUntil(lambda: widget.results_shown == 1 and not widget.runner.running,
                    timeout=WAIT_MS)             # the first run: no click
    screen = main.screen().availableGeometry()
    assert main.width() >= min(WINDOW_SIZE[0], screen.width()) - 1
    assert main.height() >= min(WINDOW_SIZE[1], screen.height()) - 60
    settle(qtbot, viewer)
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    assert cell_columns_with_content(canvas, 3) == 3  # input, pCR, non-pCR side by side
    assert canvas.shape[1] / 3 >= 280, dock_widths(main)  # every cell readable, not a thumbnail
    path = screenshot_dir() / "workspace-compare.png"
    window = viewer.screenshot(path=str(path), canvas_only=False, flash=False)
    assert path.stat().st_size > 50_000 and window.shape[1] >= 1500

    widget.advanced.setChecked(True)
    widget.samples.setValue(3)                   # auto-update: a new run with 3 samples
    qtbot.waitUntil(lambda: widget.result.request.samples == 3 and not widget.runner.running,
                    timeout=WAIT_MS)
    settle(qtbot, viewer)
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    assert cell_columns_with_content(canvas, 3) == 3
    path = screenshot_dir() / "workspace-samples.png"
    viewer.screenshot(path=str(path), canvas_only=False, flash=False)
    assert path.stat().st_size > 50_000
    widget.shutdown()


def test_inspector_screenshot(make_napari_viewer, qtbot, tmp_path):
    from cohort_helpers import tiny_cohort

    from napari_nacsim.plugin.inspector import CohortInspector

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1000, 700)   # the inspector enlarges it
    inspector = CohortInspector(viewer)
    viewer.window.add_dock_widget(inspector, name="nacsim inspector", area="right")
    manifest = tiny_cohort(tmp_path / "cohort", n_patients=2)
    inspector.path_edit.setText(str(manifest))
    inspector.run()
    qtbot.waitUntil(lambda: inspector.table.rowCount() == 2 and not inspector.runner.running,
                    timeout=WAIT_MS)
    inspector.table.selectRow(0)
    qtbot.waitUntil(lambda: len(viewer.layers) >= 8, timeout=30_000)
    settle(qtbot, viewer)
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    assert cell_columns_with_content(canvas, 2) == 2  # 2 x 2 or 3 x 2 cells
    table = inspector.table
    assert table.horizontalScrollBar().maximum() == 0  # every shown column without scrolling
    path = screenshot_dir() / "inspector.png"
    viewer.screenshot(path=str(path), canvas_only=False, flash=False)
    assert path.stat().st_size > 50_000
    inspector.shutdown()
