"""The grid cells of both widgets: what a result looks like in napari's grid.

A cell is ``[image layer data, tumour outline data]``; each function returns the cells, their
roles (`viewing.INPUT`, `REAL`, `GENERATED`: title colour and frame) and their short labels
(the cursor read-out). `whatif_cells` draws a `WhatIfResult` (the workspace), `case_cells`
a `CaseReview` (the inspector). Plain functions of the result and the window: nothing here
touches a viewer or computes a size; generated layers are named "... (synthetic)" by
`scan_to_layer_data` (their provenance says so).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np

from ..core.scan import IMAGE, Scan
from ..science.measure import format_diameter, format_size
from .layers import contour_layer_data, scan_to_layer_data
from .viewing import GENERATED, INPUT, REAL

if TYPE_CHECKING:  # the results these functions draw
    from ..engine.cohort_review import CaseReview
    from ..engine.session import WhatIfResult

Cells = tuple[list[list[tuple]], list[str], list[str]]


def image_cell(scan, name: str, window=(0.0, 1.0), **kwargs) -> tuple:
    kwargs.setdefault("contrast_limits", list(window))  # every cell the same contrast
    return scan_to_layer_data(scan, name=name, **kwargs)


def show_colour_bar(layer) -> None:
    """A colour legend in the cell's lower left corner (the lower right holds the scale bar
    and the orientation letters)."""
    layer.colorbar.visible = True
    layer.colorbar.position = "bottom_left"
    layer.colorbar.size = (14, 90)
    layer.colorbar.font_size = 8


# --- the what-if workspace ------------------------------------------------------------------

def whatif_cells(result: WhatIfResult, window: tuple[float, float]) -> Cells:
    """The grid cells (image + tumour outline each), their roles and short labels (the
    cursor read-out). One sample: the input, then each scenario, in one row. Several:
    one row per scenario — the input, the mean, the SD map (on the body, with a colour
    bar; its unit on the second line). Each cell has two title lines: the image (what
    and when), then its outline (the tumour's size and longest diameter); the scenario
    values every cell shares are in the header."""
    family, base = result.family, result.schema.baseline
    n = result.request.samples
    size = result.baseline_size
    input_size = (f"{format_size(size.total, size.unit)}, Ø {format_diameter(size.diameter)}"
                  if size.found else "no tumour found")

    def outline(mask, title, colour="red"):
        return contour_layer_data(mask, title, colour)

    def input_cell(row: int = 0, row_of: Optional[str] = None):
        suffix = f" · {row_of} row" if row_of else ""
        return [image_cell(result.baseline, f"{base} input{suffix}", window),
                outline(result.baseline_mask, f"input{f' ({row + 1})' if row else ''}: "
                                              f"{input_size}")]

    cells, roles, labels = [], [], []
    if n == 1:
        cells.append(input_cell())
        roles.append(INPUT)
        labels.append("input")
        for arm, follow in result.shown():
            title = f"{follow.time} · {arm.label} · generated (synthetic)"
            cells.append([image_cell(follow.image, title, window),
                          outline(follow.mask, f"{arm.label}: {cell_size(follow)}")])
            roles.append(GENERATED)
            labels.append(arm.label)
        return cells, roles, labels
    body = family.body_mask(result.baseline)
    maps = [on_body(f.spread, body) for _, f in result.shown()]
    sd_max = max([float(np.nanpercentile(m.array, 99.5)) for m in maps] + [1e-6])
    unit = family.model_input.value_unit
    for row, ((arm, follow), sd) in enumerate(zip(result.shown(), maps)):
        cells.append(input_cell(row, None if row == 0 else arm.label))
        roles.append(INPUT)
        labels.append("input" if row == 0 else f"input ({arm.label} row)")
        mean = f"{follow.time} · {arm.label} · mean of {n} (synthetic)"
        cells.append([image_cell(follow.image, mean, window),
                      outline(follow.mask, f"{arm.label}: {cell_size(follow)}")])
        roles.append(GENERATED)
        labels.append(f"{arm.label} mean")
        sd_title = f"{follow.time} · {arm.label} · SD of {n} (synthetic)"
        cells.append([image_cell(sd, sd_title, colormap="magma",
                                 contrast_limits=[0.0, sd_max]),
                      outline(follow.mask, f"{arm.label} SD, {unit}", "cyan")])
        roles.append(GENERATED)
        labels.append(f"{arm.label} SD")
    return cells, roles, labels


def short_title(title: str) -> str:
    """A follow-up's title without its "(synthetic)" (the status line, after "Done")."""
    return title.replace(" (synthetic)", "")


def cell_size(follow) -> str:
    """``"64 mm², Ø 12.6 mm"``, with ± over samples; "no tumour found"."""
    if follow.n_found == 0:
        return "no tumour found"
    several = len(follow.samples) > 1
    size = format_size(follow.size_mean) + (
        f"±{format_size(follow.size_sd, scale=follow.size_mean)}" if several else "")
    diameter = format_diameter(follow.diameter_mean, "") + (
        f"±{format_diameter(follow.diameter_sd, '')}" if several else "")
    return f"{size} {follow.unit}, Ø {diameter} mm"


def on_body(spread: Scan, body: Optional[np.ndarray]) -> Scan:
    """The SD map shown on the body only (0 outside); the saved map is the full one."""
    if body is None or body.shape != spread.shape:
        return spread
    array = np.where(body, spread.array, 0.0).astype(np.float32)
    return Scan(array=array, affine=spread.affine, kind=IMAGE,
                provenance={**spread.provenance, "display": "restricted to the body"})


# --- the failure-case inspector -------------------------------------------------------------

def difference_colormap():
    """Blue-black-red: black where generated and real agree, so the map does not glare in a
    dark viewer; blue where the generated image is darker, red where it is brighter."""
    from napari.utils.colormaps import Colormap

    # A short name: napari lists every colormap ever registered in the process in every image
    # layer's colormap box, so a long one widens the layer controls of all later viewers (and
    # takes that width from the compare canvas). The legend is the colour bar: signed ticks
    # under the cell's title "generated − real".
    return Colormap(colors=[[0.3, 0.6, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0], [1.0, 0.35, 0.2, 1.0]],
                    controls=[0.0, 0.5, 1.0], name="blue-black-red")


def case_cells(case: CaseReview, window: tuple[float, float] = (0.0, 1.0)) -> Cells:
    """The grid cells of a case ([image, tumour outline] each), their roles and short labels:
    the input, the real follow-up, the generated follow-up, the difference; with ground
    truth also the generated counterfactual and the phantom rendered under it. Each cell's
    second line (its outline's name) says under which scenario it was generated or
    rendered."""
    im = case.images
    t0, tp = case.baseline_time, case.time
    diff = np.asarray(im.difference.array)
    limit = float(np.percentile(np.abs(diff), 99.5)) if diff.size else 0.0
    limit = max(limit, 0.05)  # symmetric: black = no difference
    same = {"contrast_limits": list(window)}  # real and generated on one window
    scenario = case.scenario_text
    cells = [
        [scan_to_layer_data(im.baseline, name=f"{case.patient} {t0} input", **same),
         contour_layer_data(im.baseline_mask, "input tumour")],
        [scan_to_layer_data(im.real, name=f"{tp} real follow-up", **same),
         contour_layer_data(im.real_mask, f"recorded: {scenario}")],
        [scan_to_layer_data(im.generated, name=f"{tp} generated", **same),
         contour_layer_data(im.generated_mask, f"under {scenario}")],
        [scan_to_layer_data(im.difference, name=f"{tp} generated − real",
                            colormap=difference_colormap(), contrast_limits=[-limit, limit]),
         contour_layer_data(im.generated_mask, "generated tumour", "yellow")],
    ]
    roles = [INPUT, REAL, GENERATED, GENERATED]
    labels = ["input", "real", "generated", "generated − real"]
    if im.counterfactual is not None:
        cf_text = case.provenance.get("counterfactual_text", "the other scenario")
        cells.append([scan_to_layer_data(im.counterfactual, name=f"{tp} counterfactual",
                                         **same),
                      contour_layer_data(im.counterfactual_mask, f"under {cf_text}")])
        roles.append(GENERATED)
        labels.append("counterfactual")
        if im.counterfactual_truth is not None:
            cells.append([scan_to_layer_data(im.counterfactual_truth,
                                             name=f"{tp} phantom ground truth", **same),
                          contour_layer_data(im.counterfactual_truth_mask,
                                             f"phantom under {cf_text}")])
            roles.append(REAL)
            labels.append("truth")
    return cells, roles, labels
