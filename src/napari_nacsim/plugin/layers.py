"""Conversion between `Scan` and napari layer data tuples ``(data, kwargs, layer_type)``."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..core.errors import InputError
from ..core.scan import IMAGE, LABELS, Scan, affine_from_spacing

METADATA_KEY = "nacsim"
_LABEL_NAME = re.compile(r"(mask|label|seg|tumou?r|lobe|vessel)", re.IGNORECASE)


OUTLINE_UPSAMPLING = 4   # contour outlines drawn on a grid this much finer: 1/4 pixel thick
MM = "mm"


def is_generated(scan: Scan) -> bool:
    """Made by a generative model (a follow-up, its mean, SD or a difference with it), as
    opposed to measured or phantom data: its provenance names the model."""
    return bool(scan.provenance.get("synthetic") and scan.provenance.get("model_hash"))


def layer_name(scan: Scan, name: str | None = None) -> str:
    """The layer name; "(synthetic)" marks generated images. A name given by a widget is
    marked only for generated images (a phantom patient's input is said to be synthetic once,
    in the widget's header); a file's name for any synthetic data (its sidecar says so)."""
    base = name or (scan.source.name.split(".")[0] if scan.source else "scan")
    synthetic = is_generated(scan) if name else bool(scan.provenance.get("synthetic"))
    return f"{base} (synthetic)" if synthetic and "synthetic" not in base else base


def scan_to_layer_data(scan: Scan, name: str | None = None, **kwargs: Any) -> tuple:
    """Layer data whose ``scale`` is the voxel spacing and whose metadata keeps the geometry,
    orientation, source path and provenance."""
    meta = {
        "source": str(scan.source) if scan.source else None,
        "affine": scan.affine.tolist(),
        "orientation": scan.orientation,
        "spacing_mm": list(scan.spacing),
        "synthetic": bool(scan.provenance.get("synthetic")),
        "provenance": scan.provenance,
    }
    layer_kwargs = {"name": layer_name(scan, name), "scale": list(scan.spacing),
                    "units": [MM] * scan.ndim,  # world = mm: the scale bar reads mm
                    "metadata": {METADATA_KEY: meta}, **kwargs}
    if scan.kind == IMAGE:
        finite = scan.array[np.isfinite(scan.array)] if scan.array.dtype.kind == "f" else scan.array
        if finite.size:
            lo, hi = np.percentile(finite, [0.5, 99.5])
            if hi > lo:
                layer_kwargs.setdefault("contrast_limits", [float(lo), float(hi)])
        layer_kwargs.setdefault("colormap", "gray")
    return scan.array, layer_kwargs, "labels" if scan.kind == LABELS else "image"


def contour_layer_data(mask: Scan, name: str, colour: str = "red") -> tuple:
    """A tumour mask as a thin outline: a Labels layer drawn as a contour on a grid
    `OUTLINE_UPSAMPLING` times finer in the image plane (napari's contours are one data
    pixel thick; on the model grid that hides the rim of the tumour they outline), smoothed
    by linear interpolation, placed exactly over the image. The mask at its own resolution
    stays in the metadata's provenance (what is saved and measured is the engine's)."""
    from napari.utils.colormaps import DirectLabelColormap
    from scipy import ndimage

    data, kwargs, kind = scan_to_layer_data(mask, name=name)
    # the name as given: the cell's second line (its image's title says "synthetic"; the
    # metadata of a generated image's mask says so too)
    kwargs["name"] = name
    k = OUTLINE_UPSAMPLING
    binary = np.asarray(data) > 0
    factors = (1,) * (binary.ndim - 2) + (k, k)
    fine = ndimage.zoom(binary.astype(np.float32), factors, order=1, mode="nearest",
                        grid_mode=True) >= 0.5
    spacing = [float(s) for s in mask.spacing]
    scale = spacing[:-2] + [s / k for s in spacing[-2:]]
    # pixel i of the mask covers i*s ± s/2; fine pixel j's centre is at -s/2 + (j + 1/2)*s/k
    translate = [0.0] * (binary.ndim - 2) + [-s / 2 + s / (2 * k) for s in spacing[-2:]]
    kwargs.update(contour=1, opacity=1.0, blending="translucent", scale=scale,
                  translate=translate,
                  colormap=DirectLabelColormap(color_dict={None: "transparent", 1: colour}))
    kwargs["metadata"][METADATA_KEY].update(outline_upsampling=k, outline_colour=colour)
    return fine.astype(np.uint8), kwargs, kind


def guess_kind(scan: Scan) -> str:
    """Sidecar-less files: integer images named like masks are label layers."""
    if scan.kind == LABELS:
        return LABELS
    if scan.source and np.issubdtype(scan.array.dtype, np.integer) and \
            _LABEL_NAME.search(scan.source.name):
        return LABELS
    return IMAGE


def layer_to_scan(data: Any, meta: dict[str, Any], kind: str) -> Scan:
    """Rebuild a `Scan` from a layer's data and napari's writer ``meta`` dict."""
    array = np.asarray(data)
    name = meta.get("name") or "layer"
    if array.ndim not in (2, 3):
        raise InputError(f"layer '{name}'", f"is {array.ndim}D; nacsim writes 2D images and "
                                            "3D volumes")
    ours = (meta.get("metadata") or {}).get(METADATA_KEY) or {}
    scale = meta.get("scale")
    scale = list(scale)[-array.ndim:] if scale is not None else [1.0] * array.ndim
    affine = ours.get("affine")
    stored_spacing = ours.get("spacing_mm")
    if affine is None or stored_spacing is None or len(stored_spacing) != array.ndim or \
            not np.allclose(stored_spacing, scale, rtol=1e-4):
        # No stored geometry, or the user rescaled the layer: the layer's scale wins.
        affine = affine_from_spacing(scale)
    provenance = dict(ours.get("provenance") or {})
    if ours.get("source"):
        provenance.setdefault("derived_from", ours["source"])
    provenance.setdefault("layer_name", name)
    return Scan(array=array, affine=np.asarray(affine, float), kind=kind, provenance=provenance)
