"""Linked viewing of side-by-side cells, as in a clinical viewer (3D Slicer, OHIF, Horos).

- `ContrastLink`: one window/level for a set of image layers — changing the contrast of any
  cell changes every cell; named presets come from the family (`ModelFamily.window_presets`).
- `CursorReadout`: the value under the mouse in every cell at once (the cells share one
  geometry and one camera, so the same world position is the same anatomy in each), with
  the position in mm, on one line in the owning widget (never over the cells).
- `show_orientation` / `hide_orientation`: the orientation letters at the edges of every
  cell; `show_scale_bar`: a scale bar in mm in every cell (the layers' units are mm).
- `style_cell`: what a cell is, at a glance: the input and real follow-ups with a white
  title, generated images with an orange title and an orange frame.

Only napari's public viewer model is used (canvas overlays, layer overlays, mouse-move
callbacks); nothing here computes an image.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from .layers import METADATA_KEY

INPUT, REAL, GENERATED = "input", "real follow-up", "generated"
GENERATED_COLOUR = "#ff9f1c"      # orange: every generated cell (title and frame)
MEASURED_COLOUR = "white"
ORIENTATION_COLOUR = "#ffe066"    # the orientation letters (as on the saved figure: yellow)
_ORIENTATION_KEYS = {"top": ("nacsim_orientation_top", "top_center"),
                     "bottom": ("nacsim_orientation_bottom", "bottom_center"),
                     "left": ("nacsim_orientation_left", "middle_left"),
                     "right": ("nacsim_orientation_right", "middle_right")}


# --- what a cell is ----------------------------------------------------------------------

def style_cell(layer, role: str, title_points: float) -> None:
    """Title colour and frame of a cell's image layer by its role (input, real follow-up,
    generated); the role is also kept in the layer metadata."""
    generated = role == GENERATED
    ours = dict(layer.metadata.get(METADATA_KEY) or {})
    if ours.get("role") != role:
        layer.metadata = {**layer.metadata, METADATA_KEY: {**ours, "role": role}}
    overlay = layer.name_overlay
    overlay.font_size = title_points
    overlay.color = GENERATED_COLOUR if generated else MEASURED_COLOUR
    box = layer.bounding_box
    box.points = False
    box.lines = True
    box.line_color = GENERATED_COLOUR
    box.line_thickness = 3
    box.visible = generated


def role_of(layer) -> Optional[str]:
    return (layer.metadata.get(METADATA_KEY) or {}).get("role")


# --- one window for every cell -----------------------------------------------------------

class ContrastLink:
    """Keeps the contrast limits of a set of image layers equal: a change to any of them
    (the layer controls, a preset, a script) is applied to all. ``on_change(limits)`` is
    called after each change."""

    def __init__(self, on_change: Optional[Callable[[tuple[float, float]], None]] = None):
        self.layers: list = []
        self.on_change = on_change
        self._busy = False

    def set_layers(self, layers: Sequence) -> None:
        for layer in self.layers:
            if layer not in layers:
                layer.events.contrast_limits.disconnect(self._changed)
        for layer in layers:
            if layer not in self.layers:
                layer.events.contrast_limits.connect(self._changed)
        self.layers = list(layers)

    @property
    def limits(self) -> Optional[tuple[float, float]]:
        return tuple(map(float, self.layers[0].contrast_limits)) if self.layers else None

    def apply(self, limits: Sequence[float]) -> None:
        """Set every linked layer's contrast limits (a preset)."""
        lo, hi = (float(v) for v in limits)
        self._set_all((lo, hi), source=None)
        if self.on_change is not None:
            self.on_change((lo, hi))

    def _changed(self, event) -> None:
        if self._busy:
            return
        source = event.source
        limits = tuple(map(float, source.contrast_limits))
        self._set_all(limits, source)
        if self.on_change is not None:
            self.on_change(limits)

    def _set_all(self, limits: tuple[float, float], source) -> None:
        self._busy = True
        try:
            for layer in self.layers:
                if layer is source or np.allclose(layer.contrast_limits, limits):
                    continue
                lo, hi = layer.contrast_limits_range
                if limits[0] < lo or limits[1] > hi:  # a preset wider than this image
                    layer.contrast_limits_range = (min(lo, limits[0]), max(hi, limits[1]))
                layer.contrast_limits = limits
        finally:
            self._busy = False

    def close(self) -> None:
        self.set_layers([])


# --- the value under the cursor in every cell --------------------------------------------

class CursorReadout:
    """The cursor position in mm and the value of every cell's image there (``cells``:
    short label, image layer), in ``unit``, shown by ``show(text)`` — the owning widget's
    label, never on the canvas: a line over the cells covered the bottom row's scale bars
    and colour bars. Only cells that are shown count; a new set of cells clears the line
    (no stale labels after the layout changes)."""

    def __init__(self, viewer, show: Callable[[str], None]):
        self.viewer = viewer
        self.cells: list[tuple[str, object]] = []
        self.unit = ""
        self.show = show
        self.text = ""
        viewer.mouse_move_callbacks.append(self._on_move)

    def set_cells(self, cells: Sequence[tuple[str, object]], unit: str = "") -> None:
        self.cells = list(cells)
        self.unit = unit
        self._set("")

    def text_at(self, position: Sequence[float]) -> str:
        """The read-out for a world position (also what tests and scripts call)."""
        values = [f"{label} {_format_value(_value_at(layer, position))}"
                  for label, layer in self.cells if layer in self.viewer.layers and
                  layer.visible]
        if not values:
            return ""
        where = ", ".join(f"{v:.0f}" for v in list(position)[-2:][::-1])
        unit = f"   [{self.unit}]" if self.unit else ""
        return f"(x, y) = ({where}) mm:  " + "  │  ".join(values) + unit

    def _set(self, text: str) -> None:
        if text != self.text:
            self.text = text
            try:
                self.show(text)
            except RuntimeError:  # the label went with its widget
                self.close()

    def _on_move(self, viewer, event) -> None:
        if self.cells:
            self._set(self.text_at(event.position))

    def close(self) -> None:
        if self._on_move in self.viewer.mouse_move_callbacks:
            self.viewer.mouse_move_callbacks.remove(self._on_move)
        self.cells = []


def show_slice(viewer, layer, index: Optional[int]) -> None:
    """Move the slice slider of a volume ``layer`` (z, y, x) to its slice ``index``."""
    if index is None or layer.ndim != 3:
        return
    axis = viewer.dims.ndim - 3  # the slice axis of the (z, y, x) cells in world coordinates
    viewer.dims.set_point(axis, float(layer.data_to_world([index, 0, 0])[0]))


def readout_label():
    """The label a widget shows its `CursorReadout` in (one line, a point smaller)."""
    from qtpy.QtWidgets import QLabel

    label = QLabel("")
    label.setWordWrap(True)
    label.setToolTip("the value under the cursor in every cell")
    font = label.font()
    font.setPointSizeF(max(font.pointSizeF() - 1, 7))
    label.setFont(font)
    return label


def _value_at(layer, position) -> Optional[float]:
    """The image value at a world position, None outside the image."""
    data = np.asarray(layer.data)
    world = list(position)[-layer.ndim:]
    index = np.round(np.asarray(layer.world_to_data(world), float)).astype(int)
    if index.shape[0] != data.ndim or np.any(index < 0) or \
            np.any(index >= np.asarray(data.shape)):
        return None
    value = data[tuple(index)]
    return float(value) if np.isfinite(value) else None


def _format_value(value: Optional[float]) -> str:
    if value is None:
        return "—"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}"


# --- orientation and scale -----------------------------------------------------------------

def show_orientation(viewer, letters: Sequence[str],
                     edges: Sequence[str] = ("left", "right")) -> None:
    """The patient's orientation at the edges of every cell (``letters``: a family's
    ``orientation``, top, bottom, left, right, e.g. ("A", "P", "R", "L")). By default the
    left and right letters, as on the saved figure: the side is what a 2D view can get
    wrong (the top and bottom edge of a cell hold its title and scale bar)."""
    from napari.components.overlays import TextOverlay

    for (edge, (key, position)), letter in zip(_ORIENTATION_KEYS.items(), letters):
        overlay = viewer.canvas.overlays.get(key)
        if edge not in edges:
            if overlay is not None:
                overlay.visible = False
            continue
        if overlay is None:
            overlay = TextOverlay(position=position, gridded=True, box=False, font_size=11,
                                  color=ORIENTATION_COLOUR)
            viewer.canvas.overlays[key] = overlay
        overlay.text = letter
        overlay.visible = True


def hide_orientation(viewer) -> None:
    for key, _ in _ORIENTATION_KEYS.values():
        overlay = viewer.canvas.overlays.get(key)
        if overlay is not None:
            overlay.visible = False


def orientation_letters(viewer) -> list[str]:
    """The letters shown (tests)."""
    shown = []
    for key, _ in _ORIENTATION_KEYS.values():
        overlay = viewer.canvas.overlays.get(key)
        if overlay is not None and overlay.visible:
            shown.append(overlay.text)
    return shown


def scale_bar_of(viewer):
    """napari's scale bar: a canvas overlay since napari 0.9, ``viewer.scale_bar`` before."""
    canvas = getattr(viewer, "canvas", None)
    overlays = getattr(canvas, "overlays", None)
    return overlays["scale_bar"] if overlays is not None else viewer.scale_bar


def show_scale_bar(viewer) -> None:
    """A scale bar in every cell; it reads mm because the layers' units are mm."""
    bar = scale_bar_of(viewer)
    bar.visible = True
    bar.gridded = True
    bar.ticks = False
    bar.colored = False
    bar.length = 50  # 5 cm, as on the saved figure
    bar.font_size = 9


# --- the window --------------------------------------------------------------------------

WINDOW_SIZE = (1600, 1000)  # napari's window is enlarged to this (at most the screen)


def enlarge_window(widget, size: tuple[int, int] = WINDOW_SIZE) -> bool:
    """Make the napari window holding ``widget`` at least ``size`` (within the screen), so
    that side-by-side cells and their titles are readable (napari's default window leaves
    each cell a thumbnail). Never shrinks, except a window larger than the screen (napari
    restores the size of the last session, however broken), which comes back within it;
    never touches a maximised or full-screen window.
    Returns whether it resized."""
    from qtpy.QtWidgets import QMainWindow

    main = widget.window()
    if not isinstance(main, QMainWindow) or main.isMaximized() or main.isFullScreen():
        return False
    screen = main.screen().availableGeometry() if main.screen() else None
    width, height = size
    now = (main.width(), main.height())
    if screen is not None:
        width, height = min(width, screen.width()), min(height, screen.height())
        # a window wider or taller than the screen (a size napari restored from its settings
        # after a broken session) comes back within it
        now = (min(now[0], screen.width()), min(now[1], screen.height()))
    target = (max(now[0], width), max(now[1], height))
    if target == (main.width(), main.height()):
        return False
    main.resize(*target)
    side_docks_to_content(main)
    # Once more when the resize has gone through the layout: on a loaded machine Qt may lay
    # the new width out after this call and share it among the docks.
    from qtpy.QtCore import QTimer
    QTimer.singleShot(0, lambda: side_docks_to_content(main))
    return True


def side_docks_to_content(main) -> None:
    """The side docks as narrow as their content allows, so that the width the window
    gained goes to the canvas (Qt would share it out among the docks)."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QDockWidget

    sides = (Qt.LeftDockWidgetArea, Qt.RightDockWidgetArea)
    try:
        main.width()
    except RuntimeError:  # the window closed before a deferred call came
        return
    docks = [dock for dock in main.findChildren(QDockWidget)
             if dock.isVisible() and not dock.isFloating() and
             main.dockWidgetArea(dock) in sides]
    if docks:
        main.resizeDocks(docks, [dock.minimumSizeHint().width() for dock in docks],
                         Qt.Horizontal)
