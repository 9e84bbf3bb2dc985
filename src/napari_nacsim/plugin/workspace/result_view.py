"""A what-if result in the viewer: the workspace's group of grid cells and its viewing aids.

`ResultView` is given the viewer, the linked window of the image cells (`WindowPresets.link`)
and where the cursor read-out is shown. It shows a `WhatIfResult` as `cells.whatif_cells`
(updated in place by `grid_view.show_cells`): the image cells on one window, the SD maps
on another with a colour bar, the read-out, the tumour outlines on or off, the orientation
letters and scale bar, and for volumes the slice of the input's tumour.
"""

from __future__ import annotations

from typing import Callable, Optional

from ...engine.session import WhatIfResult
from ..cells import show_colour_bar, whatif_cells
from ..grid_view import group_layers, leave_own_grid, show_cells
from ..viewing import ContrastLink, CursorReadout, show_orientation, show_scale_bar

GROUP = "whatif"


class ResultView:
    def __init__(self, viewer, window_link: ContrastLink, show_text: Callable[[str], None]):
        self.viewer = viewer
        # linked viewing of the cells: one window for the images, one for the SD maps
        self.window_link = window_link
        self.sd_link = ContrastLink()
        self.readout = CursorReadout(viewer, show_text)
        self._sliced_for: Optional[int] = None  # the input whose tumour slice is shown

    def layers(self) -> list:
        return group_layers(self.viewer, GROUP)

    def show(self, result: WhatIfResult, window: tuple[float, float], grid: bool,
             outlines: bool) -> None:
        """Show ``result`` on ``window`` (side by side where ``grid``)."""
        cells, roles, labels = whatif_cells(result, window)
        several = result.request.samples > 1
        for link in (self.window_link, self.sd_link):  # slots change content in place
            link.set_layers([])
        shown = show_cells(self.viewer, GROUP, cells, grid=grid, roles=roles,
                           columns=3 if several else None)
        images = [row[0] for row in shown]
        sd_maps = [layer for layer, label in zip(images, labels) if label.endswith(" SD")]
        self.window_link.set_layers([layer for layer in images if layer not in sd_maps])
        self.sd_link.set_layers(sd_maps)
        for layer in sd_maps:  # a legend for the SD colours (the unit at the cell's foot)
            show_colour_bar(layer)
        self.readout.set_cells(list(zip(labels, images)), result.family.model_input.value_unit)
        self.show_outlines(outlines)
        if grid:
            show_orientation(self.viewer, result.family.orientation)
            show_scale_bar(self.viewer)
        self._show_tumour_slice(result, images[0])

    def show_outlines(self, on: bool) -> None:
        """One switch for every tumour outline (opacity, not visibility: a hidden layer
        would leave its grid cell and shift the others)."""
        opacity = 1.0 if on else 0.0
        for layer in self.layers():
            if layer._type_string == "labels" and layer.opacity != opacity:
                layer.opacity = opacity

    def _show_tumour_slice(self, result: WhatIfResult, layer) -> None:
        """3D cells: go to the slice where the input's tumour is largest (the family's
        `display_slice`) when the input is new or the current slice misses the cells."""
        index = result.family.display_slice(result.baseline_mask)
        if index is None or layer.ndim != 3:
            return
        dims = self.viewer.dims
        axis = dims.ndim - 3  # the slice axis of the (z, y, x) cells in world coordinates
        lo, hi = layer.extent.world[:, 0]
        current = dims.point[axis]
        key = id(result.baseline)
        if self._sliced_for == key and lo <= current <= hi:
            return
        self._sliced_for = key
        world = layer.data_to_world([index, 0, 0])[0]
        dims.set_point(axis, float(world))

    def close(self) -> None:
        """The viewing aids go and the grid is left: never the user's layers left hidden."""
        for link in (self.window_link, self.sd_link):
            link.close()
        try:
            self.readout.close()
        except (RuntimeError, AttributeError):  # the viewer is already gone
            pass
        leave_own_grid(self.viewer, GROUP)
