"""Which open layer is the model's input, whether it fits the model, and who it shows.

`InputChoice` keeps the Input combo listing the viewer's image layers (not the workspace's
own cells) and picks one when the current choice goes. The functions answer for a layer
and a model (`ModelEntry`): whether it fits as it is, why not and what to do instead, the
baseline scans of a visit it could be made from, the status line and the header, and the
`Scan` a run takes. Nothing here runs a job: answers are returned, problems raised as
`InputError` (the one warning: a field of view assumed for a layer without spacing).
"""

from __future__ import annotations

import html
import re
from typing import Any, Optional

import numpy as np
from qtpy.QtWidgets import QComboBox

from ...core.errors import InputError
from ...families import family_names
from ..layers import METADATA_KEY, layer_to_scan
from .model_list import ModelEntry

MODEL_INPUT = "model input"  # in the name of a layer that is a model input (sample data)


def _ours(layer) -> dict:
    return layer.metadata.get(METADATA_KEY) or {}


class InputChoice:
    """The Input combo over the viewer's image layers (see module docstring)."""

    def __init__(self, viewer, combo: QComboBox):
        self.viewer = viewer
        self.combo = combo

    def candidates(self) -> list:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image) and
                _ours(layer).get("group") is None]

    def refresh(self, model: Optional[ModelEntry]) -> bool:
        """List the image layers again; where the chosen one is gone, prefer a layer that is
        the model's input (sample data say so in the name), then one that fits, then the
        layer the user has selected (a sample opens its shown image selected). Returns
        whether the choice changed (the combo's signal is not sent)."""
        current = self.combo.currentText()
        layers = self.candidates()
        names = [layer.name for layer in layers]
        self.combo.blockSignals(True)
        self.combo.clear()
        self.combo.addItems(names)
        if current in names:
            self.combo.setCurrentIndex(names.index(current))
        else:
            fitting = [i for i, layer in enumerate(layers) if input_fits(layer, model)]
            named = [i for i in fitting if MODEL_INPUT in names[i].lower()]
            active = self.viewer.layers.selection.active
            selected = [i for i, layer in enumerate(layers) if layer is active]
            pick = (named or fitting or selected or [0])[0]
            if names:
                self.combo.setCurrentIndex(pick)
        self.combo.blockSignals(False)
        return self.combo.currentText() != current

    def layer(self):
        name = self.combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def select(self, name: str) -> None:
        self.combo.setCurrentIndex(self.combo.findText(name))

    def select_in_viewer(self) -> None:
        """The input image is the selected layer (not a mask: napari would show its paint
        tools)."""
        layer = self.layer()
        if layer is not None:
            self.viewer.layers.selection.active = layer


def layer_family(layer) -> Optional[str]:
    """The family of the patient a layer shows, where its record says (sample data,
    cohort patients, inputs made here); None for a plain image."""
    family = (_ours(layer).get("patient") or {}).get("family")
    return family if isinstance(family, str) and family in family_names() else None


def input_fits(layer, model: Optional[ModelEntry]) -> bool:
    """Whether a layer can be the model's input as it is: its dimensionality, and its shape
    where the family does not resample (a lung crop)."""
    if layer is None or model is None or layer.rgb:
        return False
    spec = model.family.model_input
    if layer.ndim != spec.ndim:
        return False
    return spec.resampled or tuple(layer.data.shape) == model.grid


def visit_layers(layers, family) -> Optional[dict[str, Any]]:
    """The open layers of the baseline visit the family makes its model input from, by
    name: each of its channels (e.g. "pre", "post") among the image layers of the
    family's scan dimensionality, its masks (e.g. "tumour") among the label layers;
    None when a channel is missing."""
    from napari.layers import Image, Labels

    schema = family.schema
    ours = [layer for layer in layers  # a visit's scans are volumes
            if _ours(layer).get("group") is None and
            layer.ndim == 3 and  # never another family's patient ("pre ct" is no DCE)
            layer_family(layer) in (None, family.name)]
    others = [t for t in schema.timepoint_names if t != schema.baseline]

    def pick(names: tuple[str, ...], cls) -> dict[str, Any]:
        found = {}
        for name in names:
            word = re.compile(rf"(^|[^a-z0-9]){re.escape(name.lower())}([^a-z0-9]|$)")
            matches = [layer for layer in ours if isinstance(layer, cls) and
                       word.search(layer.name.lower()) and MODEL_INPUT not in
                       layer.name.lower()]
            at_base = [layer for layer in matches if schema.baseline.lower() in
                       layer.name.lower().split()]
            not_later = [layer for layer in matches if not any(
                t.lower() in layer.name.lower().split() for t in others)]
            chosen = (at_base or not_later)[:1]
            if chosen:
                found[name] = chosen[0]
        return found

    channels = pick(schema.channels, Image)
    if len(channels) != len(schema.channels):
        return None
    masks = pick(schema.masks, Labels)
    if any(name not in masks for name, _ in schema.baseline_masks):
        return None  # e.g. the lung crop is cut around the tumour: its mask must be open
    return {**channels, **masks}


def is_visit_scan(layer, found: Optional[dict[str, Any]]) -> bool:
    """Whether ``layer`` is one of the open baseline scans (``found``, `visit_layers`) the
    model input is made from (a sample's CT or DCE volume), rather than a model input."""
    return layer is not None and found is not None and \
        any(layer is scan for scan in found.values())


def wrong_input_reason(layer, model: ModelEntry, open_layers, make_button: str) -> str:
    """Why a layer cannot be the input, and every way to make one: from the open scans
    (among ``open_layers``; pressing ``make_button``), with the command line (`nacsim mip`,
    `nacsim crop`: the family's `how_to_make`), or from a cohort."""
    family = model.family
    spec = family.model_input
    what = f"is {layer.ndim}D" if layer.ndim != spec.ndim else \
        f"has shape {tuple(layer.data.shape)}"
    ways = f"{spec.how_to_make[:1].upper()}{spec.how_to_make[1:]}"
    if visit_layers(open_layers, family) is not None:
        ways = (f"Press '{make_button}' (the open "
                f"{family.schema.baseline} {'/'.join(family.schema.channels)} scans), "
                f"or {spec.how_to_make}")
    return f"{what}; the {family.name} model takes {spec.what}. {ways}."


def ready_status(layer, model: ModelEntry, open_layers, make_button: str) -> str:
    """What the workspace waits for: nothing, another layer, or an input image."""
    if input_fits(layer, model):
        return "Ready: change the scenario (or press Generate) to compare."
    if layer is not None:
        return f"layer '{layer.name}' " + wrong_input_reason(layer, model, open_layers,
                                                             make_button)
    return (f"Ready. Open the pre-treatment image: the {model.family.name} model "
            f"takes {model.family.model_input.what}.")


def header_html(layer, model: Optional[ModelEntry], scenario: str) -> str:
    """Who and what is shown: the patient, the input's time point and kind, the recorded
    clinical values, the scenario; a phantom patient is said once to be synthetic."""
    if layer is None or model is None:
        return "<b>No input image open</b>"
    ours = _ours(layer)
    patient = ours.get("patient") or {}
    provenance = ours.get("provenance") or {}
    family = model.family
    phantom = bool(patient.get("phantom") or provenance.get("phantom"))
    who = patient.get("id") or provenance.get("patient")
    side = patient.get("side") or provenance.get("laterality")
    time = provenance.get("timepoint") or family.schema.baseline
    title = (f"Phantom patient {who}" if phantom and who else f"Patient {who}" if who
             else html.escape(layer.name))
    parts = [f"<b>{html.escape(str(title))}</b>"]
    if side:
        parts.append(html.escape(str(side)))
    if input_fits(layer, model):
        parts.append(f"input: {html.escape(str(time))} "
                     f"{html.escape(family.model_input.short_name)}")
    else:  # the layer chosen, as it is: not what the model expects
        shape = "×".join(str(n) for n in layer.data.shape)
        parts.append(f"layer: {html.escape(layer.name)} ({layer.ndim}D, {shape}), "
                     f"<i>not the {html.escape(family.name)} model's input</i>")
    text = " · ".join(parts)
    recorded = patient.get("clinical")
    if recorded:
        text += f"<br>recorded: {html.escape(str(recorded))}"
    if scenario:
        text += f"<br>scenario: {html.escape(scenario)}"
    if phantom:
        text += ("<br><i>A phantom: every image of this patient is synthetic "
                 "(simulated), not a real patient.</i>")
    return text


def input_scan(layer, model: ModelEntry, open_layers, make_button: str):
    """The `Scan` a run takes from the input layer; an `InputError` naming the layer where
    it cannot be the model's input."""
    if layer is None:
        raise InputError("input", "no image layer is open; open a scan or a sample patient")
    if model is None:
        raise InputError("model", "no model is listed; add a model folder")
    if layer.rgb:
        raise InputError(f"layer '{layer.name}'", "is an RGB image; the model takes a "
                                                  "grey-level subtraction MIP")
    if not input_fits(layer, model):
        raise InputError(f"layer '{layer.name}'",
                         wrong_input_reason(layer, model, open_layers, make_button))
    scan = layer_to_scan(np.asarray(layer.data),
                         {"name": layer.name, "scale": list(layer.scale),
                          "metadata": layer.metadata}, "image")
    if not _ours(layer).get("spacing_mm") and np.allclose(layer.scale, 1.0):
        scan = assume_model_field_of_view(scan, layer.name, model.card)
    return scan


def assume_model_field_of_view(scan, name: str, card: dict):
    """A layer without voxel spacing (a plain array or PNG): take the model's field of
    view (its card's spacing at its image size), say so, and record it."""
    from napari.utils.notifications import show_warning

    from ...core.scan import Scan, affine_from_spacing

    fov = [s * card["image_size"] for s in card["spacing_mm"]]
    spacing = [f / n for f, n in zip(fov, scan.shape)]
    show_warning(f"layer '{name}': no voxel spacing (scale 1); assuming the model's "
                 f"{fov[0]:g} x {fov[1]:g} mm field of view ({spacing[0]:.2f} mm pixels) "
                 "for tumour sizes")
    return Scan(array=scan.array, affine=affine_from_spacing(spacing), kind=scan.kind,
                provenance={**scan.provenance, "spacing_known": False,
                            "spacing_assumed_mm": spacing})
