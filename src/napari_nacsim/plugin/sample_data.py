"""napari sample data: one synthetic patient per family, every time point and mask."""

from __future__ import annotations

from ..science.phantoms import make_patient
from .layers import scan_to_layer_data

SAMPLE_SEED = 0  # the sample patients are patient #1 of the seed-0 cohorts


def patient_layers(family: str, index: int = 0, seed: int = SAMPLE_SEED) -> list:
    phantom = make_patient(family, seed, index)
    rendering = phantom.render()
    clinical = rendering.family.describe(rendering.clinical)
    layers = []
    for timepoint in rendering.family.timepoint_names:
        for channel, scan in rendering.scans.get(timepoint, {}).items():
            layers.append(scan_to_layer_data(
                scan, name=f"{phantom.id} {timepoint} {channel} (synthetic)",
                visible=timepoint == rendering.family.baseline and channel == channels_shown(
                    rendering.family.name)))
        for mask, scan in rendering.masks.get(timepoint, {}).items():
            layers.append(scan_to_layer_data(
                scan, name=f"{phantom.id} {timepoint} {mask} (synthetic)",
                visible=timepoint == rendering.family.baseline and mask == "tumour",
                opacity=0.5))
    for _, kwargs, _ in layers:
        kwargs["metadata"]["nacsim"]["patient"] = {"id": phantom.id, "clinical": clinical}
    return layers


def channels_shown(family: str) -> str:
    return {"breast": "post", "lung": "ct"}[family]


def breast_patient() -> list:
    return patient_layers("breast")


def lung_patient() -> list:
    return patient_layers("lung")
