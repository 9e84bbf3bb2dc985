"""napari sample data: one synthetic patient per family, every time point and mask.

A family whose model input is a 2D image derived from the volumes (breast: the subtraction
MIP) brings that model input too, shown, with the volumes hidden; a family whose model
input is a volume (lung: the CT) shows its baseline volume and tumour mask.
"""

from __future__ import annotations

from ..families import get_family
from .layers import scan_to_layer_data

SAMPLE_SEED = 0  # the sample patients are patient #1 of the seed-0 cohorts


def patient_layers(family: str, index: int = 0, seed: int = SAMPLE_SEED) -> list:
    chosen = get_family(family)
    phantom = chosen.make_phantom(seed, index)
    rendering = phantom.render()
    schema = chosen.schema
    clinical = schema.describe(rendering.clinical)
    derived_input = chosen.model_input.ndim == 2
    layers = []
    for timepoint in schema.timepoint_names:
        baseline = timepoint == schema.baseline
        for channel, scan in rendering.scans.get(timepoint, {}).items():
            layers.append(scan_to_layer_data(
                scan, name=f"{phantom.id} {timepoint} {channel} (synthetic)",
                visible=not derived_input and baseline and channel == chosen.sample_channel))
        for mask, scan in rendering.masks.get(timepoint, {}).items():
            layers.append(scan_to_layer_data(
                scan, name=f"{phantom.id} {timepoint} {mask} (synthetic)",
                visible=not derived_input and baseline and mask == "tumour",
                opacity=0.5))
    if derived_input:
        layers.extend(_model_input_layers(chosen, phantom.id, rendering))
    for _, kwargs, _ in layers:
        kwargs["metadata"]["nacsim"]["patient"] = {
            "id": phantom.id, "clinical": clinical,
            "clinical_values": dict(rendering.clinical)}  # pre-fills the scenario panel
    return layers


def _model_input_layers(family, patient_id: str, rendering) -> list:
    """The model's input at the baseline (no registration needed there) and its tumour
    mask, the input shown."""
    from ..families import rendering_visits

    base = family.schema.baseline
    entry = family.model_inputs({base: rendering_visits(rendering)[base]})[base]
    what = family.model_input.short_name
    layers = [scan_to_layer_data(entry["image"], name=f"{patient_id} {base} {what} · model "
                                                      "input (synthetic)",
                                 contrast_limits=list(family.model_input.display_range))]
    if "tumour" in entry:
        layers.append(scan_to_layer_data(entry["tumour"], name=f"{patient_id} {base} {what} "
                                                               "tumour (synthetic)",
                                         opacity=0.4, visible=False))
    return layers


# One function per sample of the napari manifest (npe2 manifests are static files).
def breast_patient() -> list:
    from ..families.breast import BreastFamily

    return patient_layers(BreastFamily.name)


def lung_patient() -> list:
    from ..families.lung import LungFamily

    return patient_layers(LungFamily.name)
