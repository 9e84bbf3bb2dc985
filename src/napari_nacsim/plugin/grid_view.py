"""Side-by-side cells in napari's grid: each cell is an image with its overlays (a tumour
contour), titled with the image layer's name, all cells sharing one camera.

A *group* (e.g. "whatif" or "inspector") owns its layers, marked in their metadata. Showing a
new set of cells updates the group's layers in place where a slot already exists (so rapid
re-runs do not flicker or reset the view), adds the missing ones and removes the rest.

Layout: napari places ``abs(stride)`` consecutive layers per grid cell; with a negative stride
the groups are counted from the top of the layer list. Every cell has exactly ``STRIDE``
layers, kept at the top of the list, first cell topmost; layers of the user are hidden while
the grid is on (their visibility is restored when it is turned off), so they take no cell.
"""

from __future__ import annotations

import weakref
from typing import Any, Sequence

import numpy as np

from .layers import METADATA_KEY

STRIDE = 2  # an image and one overlay per cell
TITLE_POINTS = 8.5  # cell titles (the layer names) must fit a third of the canvas
# A longer title in a narrower cell gets a smaller font rather than being cut (a cut title
# hides "(synthetic)"). Measured under Xvfb: about 0.92 px per character per point (DejaVu
# Sans, mixed case); the margin keeps clear of the cell's frame.
PX_PER_CHAR_POINT = 0.95
MIN_TITLE_POINTS = 6.5
TITLE_MARGIN_PX = 14
SUBTITLE_POINTS = 8  # the second line: the overlay's name (the tumour and its size)
# viewer -> {id(layer): layer} of the user's layers hidden while the grid is on
_SAVED_VISIBILITY: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
# viewer -> the group in the grid and the world extent its view and slider were fitted to
_FITTED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
# viewers whose layer removals keep the cells whole (`_keep_cells_whole`)
_WATCHED: "weakref.WeakSet" = weakref.WeakSet()
_BUSY: "weakref.WeakSet" = weakref.WeakSet()  # viewers whose cells `show_cells` is changing


def _group_of(layer) -> str | None:
    return (layer.metadata.get(METADATA_KEY) or {}).get("group")


def _slot_of(layer) -> str | None:
    return (layer.metadata.get(METADATA_KEY) or {}).get("slot")


def grid_of(viewer):
    """napari's grid model: ``viewer.canvas.grid`` since napari 0.9, ``viewer.grid`` before."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else viewer.grid


def group_layers(viewer, group: str) -> list:
    return [layer for layer in viewer.layers if _group_of(layer) == group]


def grid_columns(n_cells: int, columns: int | None = None) -> int:
    """Columns of the compare grid: one row up to four cells, then two rows."""
    return columns or (n_cells if n_cells <= 4 else (n_cells + 1) // 2)


# The second line is mostly digits, "±" and units, wider than mixed-case words (measured on
# the lung sample's "PD-L1 TPS 0 %: 1.92±1.37 mL, Ø 18±5 mm": about 1.2 px per char per pt)
SUBTITLE_PX_PER_CHAR_POINT = 1.2


def title_points(title: str, cell_px: float | None, px_per_char: float = PX_PER_CHAR_POINT,
                 largest: float = TITLE_POINTS) -> float:
    """The font size of a cell's title: ``largest`` (`TITLE_POINTS`), smaller where the whole
    title would not fit the cell's width otherwise (never below `MIN_TITLE_POINTS`)."""
    if not cell_px:
        return largest
    fit = (cell_px - TITLE_MARGIN_PX) / (max(len(title), 1) * px_per_char)
    return max(MIN_TITLE_POINTS, min(largest, fit))


def _canvas_width(viewer) -> float | None:
    """The canvas width in pixels, or None for a viewer without a window."""
    try:
        return float(viewer.window._qt_viewer.canvas.size[1])
    except (AttributeError, RuntimeError, IndexError, TypeError):
        return None


def show_cells(viewer, group: str, cells: Sequence[Sequence[tuple]], *,
               grid: bool = True, columns: int | None = None,
               roles: Sequence[str] | None = None) -> list[list[Any]]:
    """Display ``cells``: see `_show_cells` (its own removals of cell layers are not the
    user's deletions, which take the whole cell)."""
    _BUSY.add(viewer)
    try:
        return _show_cells(viewer, group, cells, grid=grid, columns=columns, roles=roles)
    finally:
        _BUSY.discard(viewer)


def _show_cells(viewer, group: str, cells: Sequence[Sequence[tuple]], *,
                grid: bool = True, columns: int | None = None,
                roles: Sequence[str] | None = None) -> list[list[Any]]:
    """Display ``cells`` (each a list of ``STRIDE`` layer data tuples, image first) and return
    the layers per cell. ``roles``: what each cell shows ("input", "real follow-up",
    "generated"; `viewing.style_cell`), default "input". The first cell's image ends up the
    selected layer (never a mask: napari would offer its paint tools)."""
    from .viewing import INPUT, style_cell

    for cell in cells:
        if len(cell) != STRIDE:
            raise ValueError(f"every cell needs {STRIDE} layers, got {len(cell)}")
    roles = list(roles) if roles is not None else [INPUT] * len(cells)
    existing = {_slot_of(layer): layer for layer in group_layers(viewer, group)}
    wanted = []
    shown: list[list[Any]] = []
    for i, cell in enumerate(cells):
        row = []
        for j, (data, kwargs, kind) in enumerate(cell):
            slot = f"{group}:{i}:{j}"
            kwargs = dict(kwargs)
            meta = dict(kwargs.pop("metadata", {}) or {})
            meta[METADATA_KEY] = {**(meta.get(METADATA_KEY) or {}), "group": group,
                                  "slot": slot}
            layer = existing.get(slot)
            if layer is not None and layer._type_string == kind and \
                    getattr(layer.data, "shape", None) == getattr(data, "shape", None):
                _update_layer(layer, data, meta, kwargs)
            else:
                if layer is not None:
                    viewer.layers.remove(layer)
                layer = viewer.add_layer(make_layer(data, {**kwargs, "metadata": meta}, kind))
            wanted.append(slot)
            row.append(layer)
        shown.append(row)
    for slot, layer in existing.items():
        if slot not in wanted:
            viewer.layers.remove(layer)
    _order(viewer, [layer for row in shown for layer in row])
    _watch_removals(viewer)
    cell_px = None
    if grid:
        enter_grid(viewer, group, len(cells), columns)
        width = _canvas_width(viewer)
        cell_px = width / grid_columns(len(cells), columns) if width else None
    # Titles and frames last: napari re-lays every visible overlay whenever a layer is
    # added or moved, so overlays shown during the additions cost O(layers²).
    for i, row in enumerate(shown):
        for j, layer in enumerate(row):
            # two lines per cell: the image's name at the top, its overlay's (the tumour
            # outline's name: what it outlines and its size) at the foot, in its colour
            if j == 0:
                style_cell(layer, roles[i], title_points(layer.name, cell_px))
            else:  # at the foot of the cell, right-aligned above the scale bar
                overlay = layer.name_overlay
                overlay.position = "bottom_right"
                # right-aligned: a line too long for the cell would lose its start (the
                # scenario's name), so it shrinks like the titles
                overlay.font_size = title_points(layer.name, cell_px,
                                                 SUBTITLE_PX_PER_CHAR_POINT, SUBTITLE_POINTS)
                overlay.color = (layer.metadata.get(METADATA_KEY) or {}).get(
                    "outline_colour", "white")
            if layer.name_overlay.visible != grid:
                layer.name_overlay.visible = grid
    if shown:
        viewer.layers.selection.active = shown[0][0]
    return shown


def make_layer(data, kwargs: dict, kind: str):
    """A napari layer from a layer data tuple (also options napari only takes afterwards)."""
    from napari.layers import Image, Labels

    cls = {"image": Image, "labels": Labels}[kind]
    kwargs = dict(kwargs)
    later = {k: kwargs.pop(k) for k in _SET_AFTER if k in kwargs}
    layer = cls(data, **kwargs)
    for key, value in later.items():
        setattr(layer, key, value)
    return layer


_SET_AFTER = ("contour",)  # napari takes these as properties, not constructor arguments


def _update_layer(layer, data, meta, kwargs) -> None:
    """Set what differs only: each napari setter refreshes the layer (a UI-thread cost)."""
    layer.data = data
    layer.metadata = meta
    for key, value in kwargs.items():
        if key in ("colormap",) and layer._type_string == "labels":
            continue  # the tumour colour does not change between runs
        try:
            if _same(getattr(layer, key), value):
                continue
            setattr(layer, key, value)
        except (AttributeError, ValueError, TypeError):
            pass  # an option napari only takes at construction; the old value is fine


def _same(current, wanted) -> bool:
    if isinstance(wanted, (str, bool)) or wanted is None:
        return current == wanted or getattr(current, "name", None) == wanted
    try:
        return bool(np.allclose(np.asarray(current, float), np.asarray(wanted, float)))
    except (TypeError, ValueError):
        return False


def _order(viewer, layers: list) -> None:
    """First cell's layers on top, its image just below its overlay (see module docstring)."""
    n = len(viewer.layers)
    # Target list order, bottom -> top: ... cell k image, cell k overlay, ..., cell 0 overlay.
    for position, layer in enumerate(reversed(_cellwise(layers))):
        index = viewer.layers.index(layer)
        target = n - len(layers) + position
        if index != target:
            viewer.layers.move(index, target if target < index else target + 1)


def _cellwise(layers: list) -> list:
    """[c0 image, c0 overlay, c1 image, ...] -> top-down order [c0 overlay, c0 image, ...]."""
    out = []
    for k in range(0, len(layers), STRIDE):
        out.extend(reversed(layers[k:k + STRIDE]))
    return out


def enter_grid(viewer, group: str, n_cells: int, columns: int | None = None) -> None:
    """Grid on, one cell per group cell; other layers hidden (visibility remembered).

    Only what changes is touched: napari re-lays the whole grid on every visibility change
    (its cost grows with layers x cells), so changes are made with the grid off, and the
    view is reset only when the layout itself changes (not on every re-run).
    """
    grid = grid_of(viewer)
    columns = grid_columns(n_cells, columns)
    shape = (-1, columns)
    changes = [(layer, _group_of(layer) == group) for layer in viewer.layers
               if layer.visible != (_group_of(layer) == group)]
    same_layout = grid.enabled and grid.stride == -STRIDE and \
        tuple(grid.shape) == shape
    if same_layout and not changes:
        _fit_to_group(viewer, group, refit=False)  # new data: napari re-spanned the slider
        return
    if changes:
        saved = _SAVED_VISIBILITY.setdefault(viewer, {})
        grid.enabled = False
        for layer, visible in changes:
            if not visible and _group_of(layer) is None:
                saved[id(layer)] = layer  # the user's layer: shown again by leave_grid
            layer.visible = visible
        for layer, visible in changes:  # another group's titles and legends go with it
            if not visible and _group_of(layer) not in (None, group):
                _hide_decorations(layer)
    grid.stride = -STRIDE
    grid.shape = shape
    grid.enabled = True
    _fit_to_group(viewer, group, refit=not same_layout)


def _hide_decorations(layer) -> None:
    layer.name_overlay.visible = False
    for name in ("colorbar", "bounding_box"):
        overlay = getattr(layer, name, None)
        if overlay is not None and overlay.visible:
            overlay.visible = False


def _fit_to_group(viewer, group: str, refit: bool) -> None:
    """The camera and the slice slider fit the group's cells, not every open layer: the
    user's hidden layers (a lung patient's whole CT, 40 slices, around a 16-slice crop)
    would otherwise shrink every cell and leave slider positions with empty cells. The view
    is fitted again when the layout or the cells' extent changes (a lung cohort's case after
    a breast one), not on every re-run (the user's zoom stays)."""
    layers = group_layers(viewer, group)
    if not layers:
        return
    extent = viewer.layers.get_extent(layers)
    lo, hi, step = (np.asarray(a, float) for a in (extent.world[0], extent.world[1],
                                                   extent.step))
    key = (group, tuple(np.round(lo, 3)), tuple(np.round(hi, 3)))
    fitted = _FITTED.get(viewer)
    if refit or fitted != key:
        # napari's fit takes layers of the viewer's dimensionality only (2D cells in a
        # viewer that also holds 3D layers: IndexError); those fit by napari's own rule
        same = all(layer.ndim == viewer.dims.ndim for layer in layers)
        viewer.reset_view(layers=layers) if same else viewer.reset_view()
    ranges = _full_ranges(viewer)
    n = len(lo)
    not_shown = set(viewer.dims.not_displayed)
    for k in range(n):  # the group's axes are the last n of the viewer's
        axis = len(ranges) - n + k
        if axis in not_shown and hi[k] > lo[k]:
            ranges[axis] = type(ranges[axis])(lo[k], hi[k], step[k])
    if tuple(ranges) != tuple(viewer.dims.range):
        viewer.dims.range = tuple(ranges)
    _FITTED[viewer] = key
    for axis in not_shown:  # a slice inside the cells
        r = viewer.dims.range[axis]
        point = viewer.dims.point[axis]
        if not r.start <= point <= r.stop:
            viewer.dims.set_point(axis, min(max(point, r.start), r.stop))


def _full_ranges(viewer) -> list:
    """The slider ranges napari gives every open layer (its own rule: the layers' extent)."""
    ranges = list(viewer.dims.range)
    extent = viewer.layers.extent
    lo, hi, step = extent.world[0], extent.world[1], extent.step
    n = min(len(lo), len(ranges))
    for k in range(n):
        axis = len(ranges) - n + k
        ranges[axis] = type(ranges[axis])(float(lo[len(lo) - n + k]),
                                          float(hi[len(lo) - n + k]),
                                          float(step[len(lo) - n + k]))
    return ranges


def _watch_removals(viewer) -> None:
    if viewer not in _WATCHED:
        _WATCHED.add(viewer)
        viewer.layers.events.removed.connect(
            lambda event, ref=weakref.ref(viewer): _keep_cells_whole(ref(), event.value))


def _keep_cells_whole(viewer, removed) -> None:
    """A cell is its image and its outline: when the user deletes one, the other goes too,
    so that the cells below keep their pairs (napari places every ``STRIDE`` consecutive
    layers in a cell; one layer less would put each image under the next cell's outline)."""
    if viewer is None or viewer in _BUSY:
        return
    slot = _slot_of(removed)
    group = _group_of(removed)
    if slot is None or group is None:
        return
    cell = slot.rsplit(":", 1)[0]
    partners = [layer for layer in group_layers(viewer, group)
                if (_slot_of(layer) or "").rsplit(":", 1)[0] == cell]

    def remove_partners() -> None:  # after napari (and its Qt layer list) finished the removal
        present = {_slot_of(layer) for layer in group_layers(viewer, group)}
        if all(f"{cell}:{j}" in present for j in range(STRIDE)):
            return  # a new result has filled the cell again
        for layer in partners:
            if layer in viewer.layers and _slot_of(layer) is not None:
                viewer.layers.remove(layer)

    from qtpy.QtCore import QTimer

    QTimer.singleShot(0, remove_partners)


def leave_own_grid(viewer, group: str) -> None:
    """Leave the grid if it shows ``group``'s cells (its widget closing): the user's
    layers come back; another widget's grid stays."""
    try:
        layers = group_layers(viewer, group)
        if grid_of(viewer).enabled and any(layer.visible for layer in layers):
            leave_grid(viewer)
    except (RuntimeError, AttributeError, KeyError):  # the viewer is already gone
        pass


def leave_grid(viewer) -> None:
    """Grid off; the user's layers visible again as they were."""
    grid = grid_of(viewer)
    grid.enabled = False
    grid.stride = 1
    grid.shape = (-1, -1)
    if _FITTED.pop(viewer, None) is not None and len(viewer.layers):
        full = _full_ranges(viewer)
        if len(full) == len(viewer.dims.range):
            viewer.dims.range = tuple(full)  # the slider spans every layer again
    for layer in _SAVED_VISIBILITY.pop(viewer, {}).values():
        if layer in viewer.layers:
            layer.visible = True
    for layer in viewer.layers:
        layer.name_overlay.visible = False
    from .viewing import hide_orientation

    hide_orientation(viewer)  # the letters belong to the cells
