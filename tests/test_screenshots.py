"""Real windows under Xvfb: screenshots of the workspace (compare mode) and the inspector,
kept as CI artefacts in ``test-artifacts/screenshots`` (or ``$NACSIM_SCREENSHOTS``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.viewer

ROOT = Path(__file__).resolve().parents[1]


def screenshot_dir() -> Path:
    folder = Path(os.environ.get("NACSIM_SCREENSHOTS", ROOT / "test-artifacts" / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def cell_columns_with_content(canvas: np.ndarray, n: int) -> int:
    """How many of ``n`` equal-width vertical strips of the canvas show an image."""
    grey = canvas[..., :3].mean(axis=-1)
    strips = np.array_split(grey, n, axis=1)
    return sum(float(s.std()) > 10 for s in strips)


def test_workspace_compare_mode_screenshot(make_napari_viewer, qtbot):
    from napari_nacsim.plugin.workspace import WhatIfWorkspace

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1600, 960)
    viewer.open_sample("nacsim", "breast")
    widget = WhatIfWorkspace(viewer)
    widget.auto_run.setChecked(False)
    viewer.window.add_dock_widget(widget, name="nacsim what-if", area="right")
    widget.run()
    qtbot.waitUntil(lambda: widget.results_shown == 1 and not widget.runner.running,
                    timeout=120_000)
    qtbot.wait(300)
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    assert cell_columns_with_content(canvas, 3) == 3  # baseline, pCR, non-pCR side by side
    path = screenshot_dir() / "workspace-compare.png"
    window = viewer.screenshot(path=str(path), canvas_only=False, flash=False)
    assert path.stat().st_size > 50_000 and window.shape[1] >= 1200
    widget.shutdown()


def test_inspector_screenshot(make_napari_viewer, qtbot, tmp_path):
    from cohort_helpers import tiny_cohort

    from napari_nacsim.plugin.inspector import CohortInspector

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1600, 960)
    inspector = CohortInspector(viewer)
    viewer.window.add_dock_widget(inspector, name="nacsim inspector", area="right")
    manifest = tiny_cohort(tmp_path / "cohort", n_patients=2)
    inspector.path_edit.setText(str(manifest))
    inspector.run()
    qtbot.waitUntil(lambda: inspector.table.rowCount() == 2 and not inspector.runner.running,
                    timeout=240_000)
    inspector.table.selectRow(0)
    qtbot.waitUntil(lambda: len(viewer.layers) >= 8, timeout=30_000)
    qtbot.wait(300)
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    assert cell_columns_with_content(canvas, 2) == 2  # 2 x 2 cells
    path = screenshot_dir() / "inspector.png"
    viewer.screenshot(path=str(path), canvas_only=False, flash=False)
    assert path.stat().st_size > 50_000
    inspector.shutdown()
