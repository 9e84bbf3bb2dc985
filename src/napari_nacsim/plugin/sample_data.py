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
                visible=family != "breast" and timepoint == rendering.family.baseline and
                channel == channels_shown(rendering.family.name)))
        for mask, scan in rendering.masks.get(timepoint, {}).items():
            layers.append(scan_to_layer_data(
                scan, name=f"{phantom.id} {timepoint} {mask} (synthetic)",
                visible=family != "breast" and timepoint == rendering.family.baseline and
                mask == "tumour",
                opacity=0.5))
    if family == "breast":
        layers.extend(_model_input_layers(phantom.id, rendering))
    for _, kwargs, _ in layers:
        kwargs["metadata"]["nacsim"]["patient"] = {
            "id": phantom.id, "clinical": clinical,
            "clinical_values": dict(rendering.clinical)}  # pre-fills the scenario panel
    return layers


def _model_input_layers(patient_id: str, rendering) -> list:
    """The breast model's input: the T0 subtraction MIP (no registration needed at T0) and
    its tumour-mask MIP, shown; the volumes stay hidden."""
    from ..science.preprocess.pipeline import breast_mips

    t0 = rendering.family.baseline
    mips = breast_mips({t0: {**rendering.scans[t0], **rendering.masks[t0]}})[t0]
    return [scan_to_layer_data(mips["mip"], name=f"{patient_id} {t0} MIP · model input "
                                                  "(synthetic)", contrast_limits=[0, 1]),
            scan_to_layer_data(mips["tumour"], name=f"{patient_id} {t0} MIP tumour "
                                                    "(synthetic)",
                               opacity=0.4, visible=False)]


def channels_shown(family: str) -> str:
    return {"breast": "post", "lung": "ct"}[family]


def breast_patient() -> list:
    return patient_layers("breast")


def lung_patient() -> list:
    return patient_layers("lung")
