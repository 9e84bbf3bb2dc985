"""Making the model input: a cohort patient's, or one made from the open baseline scans.

Each way is a job for the workspace's `BackgroundRunner` that returns a *case* (a dict:
patient, family, clinical values, image, tumour mask, the family's model context, a status
message); `add_case_layers` then opens the case in the viewer as the input layer and its
tumour outline. The dialogs and the "Make from open scans…" tooltip are here too. Nothing
here submits a job or notifies: jobs and layers are returned, problems raised as
`InputError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
from qtpy.QtWidgets import QFileDialog, QWidget

from ...core.errors import InputError
from ...engine.jobs import CancelToken, Progress
from ...families import get_family
from ..grid_view import make_layer
from ..layers import METADATA_KEY, contour_layer_data, layer_to_scan, scan_to_layer_data


def choose_cohort_patient(parent: QWidget) -> Optional[tuple[Any, str]]:
    """A cohort manifest and one of its patients, chosen in dialogs; None if cancelled."""
    from qtpy.QtWidgets import QInputDialog

    from ...core.cohort import load_cohort

    path, _ = QFileDialog.getOpenFileName(parent, "Cohort manifest", "",
                                          "cohort manifest (*.json)")
    if not path:
        return None
    cohort = load_cohort(path)
    ids = [p.id for p in cohort.patients]
    patient, ok = QInputDialog.getItem(parent, "Patient", f"{len(ids)} patients in "
                                       f"{Path(path).name}", ids, 0, False)
    return (cohort, patient) if ok else None


def cohort_patient_job(cohort, patient_id: str):
    """The job loading the patient's baseline model input (and clinical values)."""
    from ...engine.patients import baseline_input

    return lambda token, progress: baseline_input(cohort, patient_id)


def missing_scans(family) -> InputError:
    needed = "".join(f" and its {name} mask ({why})"
                     for name, why in family.schema.baseline_masks)
    return InputError("model input", f"open the {family.schema.baseline} "
                                     f"{'/'.join(family.schema.channels)} scans{needed} first")


def open_scans_job(family, layers: dict[str, Any]):
    """The job making the model input from open scans of the baseline visit (``layers``:
    channel or mask name -> layer), the family's way (breast: the normalised subtraction
    MIP of pre and post; lung: the CT crop around the tumour), with the patient's values.
    The layers are read here, on the UI thread; the job only computes."""
    kinds = {name: ("labels" if name in family.schema.masks else "image") for name in layers}
    visit = {name: layer_to_scan(np.asarray(layer.data),
                                 {"name": layer.name, "scale": list(layer.scale),
                                  "metadata": layer.metadata}, kinds[name])
             for name, layer in layers.items()}
    first = next(iter(layers.values()))
    ours = first.metadata.get(METADATA_KEY) or {}
    patient = ours.get("patient") or {}
    patient_id = patient.get("id") or (ours.get("provenance") or {}).get("patient") or \
        first.name.split()[0]
    base = family.schema.baseline
    names = ", ".join(f"'{layer.name}'" for layer in layers.values())

    def job(token: CancelToken, progress: Progress) -> dict:
        progress(0, 1, f"making the {family.model_input.short_name}")
        made = family.model_inputs({base: visit})[base]
        return {"patient": patient_id, "family": family.name,
                "clinical": patient.get("clinical_values") or {},
                "patient_meta": {k: v for k, v in patient.items()
                                 if k not in ("id", "clinical_values")},
                "image": made["image"], "mask": made.get("tumour"),
                "context": family.model_context(made),
                "mask_source": "from the open mask",
                "message": f"made the {family.model_input.short_name} from {names}"}

    return job


def make_input_tooltip(family, found: Optional[dict[str, Any]]) -> str:
    """What "Make from open scans…" makes, from which open layers, or what to open first."""
    channels = "/".join(family.schema.channels)
    needed = [f"the {name} mask ({why})" for name, why in family.schema.baseline_masks]
    return (f"make the {family.name} model's input ({family.model_input.what}) from the open "
            f"{family.schema.baseline} {channels} scans" +
            (": " + ", ".join(f"{k} = '{v.name}'" for k, v in found.items()) if found else
             f" (not open: open the {channels} volumes"
             f"{' and ' + ', '.join(needed) if needed else ''} first)"))


def add_case_layers(viewer, case: dict):
    """Open a model input (``case``: patient, family, clinical, image, mask) as an image
    layer that records the patient (the scenario fills from its clinical values), its
    tumour mask as an outline; returns the image layer (added last: selected)."""
    family = get_family(case["family"])
    base, what = family.schema.baseline, family.model_input.short_name
    patient = {"id": case["patient"], "clinical_values": case["clinical"],
               **(case.get("patient_meta") or {}), "family": family.name}
    meta = {"patient": patient}
    data, kwargs, kind = scan_to_layer_data(
        case["image"], name=f"{case['patient']} {base} {what} · model input",
        contrast_limits=list(family.window_presets[0].limits))
    kwargs["metadata"][METADATA_KEY].update(meta)
    if case["mask"] is not None:
        source = case.get("mask_source", "manifest")
        data_m, kwargs_m, kind_m = contour_layer_data(
            case["mask"], f"{case['patient']} {base} {what} tumour ({source})")
        kwargs_m["metadata"][METADATA_KEY].update(meta)
        viewer.add_layer(make_layer(data_m, kwargs_m, kind_m))
    return viewer.add_layer(make_layer(data, kwargs, kind))
