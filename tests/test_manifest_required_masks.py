"""A lung visit without its baseline tumour mask fails when the manifest is loaded, naming
the manifest file, the patient and the field (issue 24, item 12) — not later, deep in the
preprocessing, as "lung visits: the baseline pre has no tumour mask"."""

from __future__ import annotations

import json

import pytest

from napari_nacsim.core.cohort import FORMAT, VERSION, load_cohort
from napari_nacsim.core.errors import InputError

CLINICAL = {"age": 64, "sex": "female", "race": "white", "CEA": 3.0, "ANC": 4.0, "ALC": 1.5,
            "AEC": 0.2, "AMC": 0.5, "PD_L1": 50.0}


def manifest(tmp_path, masks: dict) -> str:
    for name in ("pre_ct.nii.gz", "pre_tumour.nii.gz"):
        (tmp_path / name).write_bytes(b"")  # listed files exist (not read on loading)
    path = tmp_path / "lung_cohort.json"
    path.write_text(json.dumps({
        "format": FORMAT, "version": VERSION, "family": "lung",
        "patients": [{"id": "LU0042", "clinical": CLINICAL,
                      "scans": {"pre": {"ct": "pre_ct.nii.gz"}}, "masks": masks}]}))
    return str(path)


def test_missing_baseline_tumour_mask_names_manifest_patient_and_field(tmp_path):
    with pytest.raises(InputError) as caught:
        load_cohort(manifest(tmp_path, {}))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("lung_cohort.json: patient LU0042: ")
    assert '"masks".pre.tumour is missing' in message
    # another mask of the visit does not stand in for the tumour
    with pytest.raises(InputError, match=r'"masks"\.pre\.tumour'):
        load_cohort(manifest(tmp_path, {"pre": {"lobes": "pre_tumour.nii.gz"}}))


def test_with_the_mask_it_loads(tmp_path):
    cohort = load_cohort(manifest(tmp_path, {"pre": {"tumour": "pre_tumour.nii.gz"}}))
    assert cohort.patients[0].mask_path("pre") is not None
