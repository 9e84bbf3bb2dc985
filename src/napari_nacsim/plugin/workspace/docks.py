"""The size table and the size-over-time plot, docked under napari's canvas.

`SizeDocks` shows each result in the pair and docks it once per workspace, side by side
under the canvas and as tall as the table's rows, so that the grid of cells keeps the
window's full width.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QDockWidget, QMainWindow

from ..size_views import SizePlot, SizeTable
from ..viewing import side_docks_to_content


class SizeDocks:
    def __init__(self):
        self.table = SizeTable()
        self.plot = SizePlot()
        self.added = False

    def show(self, result, viewer, main) -> None:
        """Show ``result`` in the table and plot, docked in ``viewer``'s window once (never a
        second pair); ``main``: the Qt main window holding the workspace."""
        self.table.show_result(result)
        self.plot.show_result(result)
        if self.added or not can_dock(viewer):
            return
        self.added = True  # before anything that could fail: never a second pair
        add_size_docks(viewer.window, self.table, self.plot, main)


def can_dock(viewer) -> bool:
    """Whether ``viewer`` has a window to dock widgets in (not a headless viewer)."""
    window = getattr(viewer, "window", None)
    return window is not None and hasattr(window, "add_dock_widget")


def add_size_docks(window, table, plot, main) -> None:
    """Dock ``table`` and ``plot`` in napari's ``window``; ``main``: the Qt main window
    holding the workspace, whose docks are sized so that the grid keeps its width."""
    window.add_dock_widget(table, name="nacsim: tumour sizes", area="bottom")
    window.add_dock_widget(plot, name="nacsim: size over time", area="bottom")
    docks = [_dock_of(widget) for widget in (table, plot)]
    if isinstance(main, QMainWindow) and all(docks):
        width = main.width()
        height = table.maximumHeight()
        plot.setMaximumHeight(max(height, plot.minimumHeight()))
        main.resizeDocks(docks, [height, height], Qt.Vertical)
        main.resizeDocks(docks, [3 * width // 5, 2 * width // 5], Qt.Horizontal)
        side_docks_to_content(main)  # new docks must not take the grid's width
        if main.width() != width and not (main.isMaximized() or main.isFullScreen()):
            main.resize(width, main.height())  # the docks share the width it had


def _dock_of(widget):
    """The QDockWidget holding ``widget`` (napari wraps each docked widget in one)."""
    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parentWidget()
    return parent
