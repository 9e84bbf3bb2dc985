"""napari sample data: one phantom patient per family (synthetic data, named "(phantom)").

Only what the what-if comparison needs opens: the family's model input at the baseline and
its tumour mask. A family whose model input is a 2D image derived from the volumes (breast:
the subtraction MIP) brings just that image (no hidden volumes: they would put a slice
slider under the 2D image); its volumes of every visit are a sample of their own (e.g. to
make the model input from them in the workspace). A family whose model input is a volume
(lung: the CT) shows its baseline volume and tumour mask, the other scans hidden.

The image opens last, so it is the selected layer (a selected mask would offer napari's
paint tools).
"""

from __future__ import annotations

from ..families import get_family
from .layers import scan_to_layer_data
from .reader_choice import remember_our_reader

SAMPLE_SEED = 0  # the sample patients are patient #1 of the seed-0 cohorts
PHANTOM = "(phantom)"  # every layer of a sample: simulated data, not a real patient


def patient_layers(family: str, index: int = 0, seed: int = SAMPLE_SEED, *,
                   volumes: bool | None = None) -> list:
    """The layers of a phantom patient. ``volumes``: the scans of every visit (default:
    only when they are the model's input, i.e. a 3D model input)."""
    remember_our_reader()
    chosen = get_family(family)
    phantom = chosen.make_phantom(seed, index)
    rendering = phantom.render()
    schema = chosen.schema
    clinical = schema.describe(rendering.clinical)
    derived_input = chosen.model_input.ndim == 2
    if volumes is None:
        volumes = not derived_input
    layers = []
    if volumes:
        layers = _volume_layers(chosen, phantom.id, rendering)
    if derived_input and not volumes:
        layers.extend(_model_input_layers(chosen, phantom.id, rendering))
    for _, kwargs, _ in layers:
        kwargs["metadata"]["nacsim"]["patient"] = {
            "id": phantom.id, "family": chosen.name, "clinical": clinical, "phantom": True,
            "clinical_values": dict(rendering.clinical)}  # pre-fills the scenario panel
    return layers


def _volume_layers(family, patient_id: str, rendering) -> list:
    """Every visit's scans and masks; the baseline's sample channel and tumour shown, the
    shown image last (selected)."""
    schema = family.schema
    images, masks = [], []
    for timepoint in schema.timepoint_names:
        baseline = timepoint == schema.baseline
        for channel, scan in rendering.scans.get(timepoint, {}).items():
            shown = baseline and channel == family.sample_channel
            window = {} if family.model_input.ndim != scan.ndim else \
                {"contrast_limits": list(family.window_presets[0].limits)}  # e.g. lung CT
            entry = scan_to_layer_data(scan, name=f"{patient_id} {timepoint} {channel} {PHANTOM}",
                                       visible=shown, **window)
            images.append((shown, entry))
        for mask, scan in rendering.masks.get(timepoint, {}).items():
            masks.append(scan_to_layer_data(
                scan, name=f"{patient_id} {timepoint} {mask} {PHANTOM}",
                visible=baseline and mask == "tumour", opacity=0.5))
    ordered = [e for shown, e in images if not shown] + masks + [e for shown, e in images if shown]
    return ordered


def _model_input_layers(family, patient_id: str, rendering) -> list:
    """The model's input at the baseline (no registration needed there) and its tumour
    mask (hidden), the input last."""
    base = family.schema.baseline
    entry = family.model_inputs({base: rendering.visits()[base]})[base]
    what = family.model_input.short_name
    layers = []
    if "tumour" in entry:
        layers.append(scan_to_layer_data(entry["tumour"], name=f"{patient_id} {base} {what} "
                                                               f"tumour {PHANTOM}",
                                         opacity=0.4, visible=False))
    layers.append(scan_to_layer_data(entry["image"], name=f"{patient_id} {base} {what} · model "
                                                         f"input {PHANTOM}",
                                     contrast_limits=list(family.window_presets[0].limits)))
    return layers


# One function per sample of the napari manifest (npe2 manifests are static files).
def breast_patient() -> list:
    from ..families.breast import BreastFamily

    return patient_layers(BreastFamily.name)


def breast_patient_volumes() -> list:
    from ..families.breast import BreastFamily

    return patient_layers(BreastFamily.name, volumes=True)


def lung_patient() -> list:
    from ..families.lung import LungFamily

    return patient_layers(LungFamily.name)
