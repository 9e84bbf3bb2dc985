"""Cohort manifests: loading, validation against the schema, file checks."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from napari_nacsim.core.cohort import CohortManifest, check_cohort_images, load_cohort
from napari_nacsim.core.errors import InputError


def _nifti(path, shape=(4, 5, 6), spacing=(1.0, 1.0, 2.0), value=None):
    rng = np.random.default_rng(len(str(path)))
    data = rng.normal(size=shape[::-1]).astype(np.float32) if value is None else \
        np.full(shape[::-1], value, np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([*spacing, 1.0])), str(path))
    return path


def _manifest(tmp_path, patients, family="breast"):
    path = tmp_path / "cohort.json"
    path.write_text(json.dumps({"format": "nacsim-cohort", "version": 1, "family": family,
                                "patients": patients}))
    return path


def _breast_patient(tmp_path, pid="P1", **clinical):
    for tp in ("T0", "T1"):
        for ch in ("pre", "post"):
            _nifti(tmp_path / pid / f"{tp}_{ch}.nii.gz")
    return {"id": pid, "clinical": {"pCR": True, "HR": False, "HER2": True, **clinical},
            "scans": {tp: {ch: f"{pid}/{tp}_{ch}.nii.gz" for ch in ("pre", "post")}
                      for tp in ("T0", "T1")}}


def test_load_valid_cohort(tmp_path):
    manifest = _manifest(tmp_path, [_breast_patient(tmp_path, "P1"),
                                    _breast_patient(tmp_path, "P2", pCR="no")])
    cohort = load_cohort(manifest)
    assert [p.id for p in cohort.patients] == ["P1", "P2"]
    assert cohort.patients[1].clinical["pCR"] is False
    assert cohort.patients[0].scan_path("T1", "post") == tmp_path / "P1" / "T1_post.nii.gz"
    check_cohort_images(cohort)
    # Round trip through to_json keeps relative paths.
    again = cohort.to_json()
    assert again["patients"][0]["scans"]["T0"]["pre"] == "P1/T0_pre.nii.gz"


@pytest.mark.parametrize("mutate, problem", [
    (lambda p: p["clinical"].pop("HER2"), "'HER2'.*is missing"),
    (lambda p: p["clinical"].update(HR="unknown"), "'HR'.*not a yes/no"),
    (lambda p: p["scans"].update(T7={"pre": "x.nii.gz"}), "unknown time point 'T7'"),
    (lambda p: p["scans"]["T0"].pop("post"), "baseline T0 lacks the 'post' scan"),
    (lambda p: p["scans"]["T1"].update(pre="P1/missing.nii.gz"), "missing.nii.gz.*missing"),
    (lambda p: p.pop("id"), "has no \"id\""),
])
@pytest.mark.parametrize("read", [load_cohort, CohortManifest])
def test_invalid_patients(tmp_path, mutate, problem, read):
    patient = _breast_patient(tmp_path)
    mutate(patient)
    with pytest.raises(InputError, match=problem) as err:
        read(_manifest(tmp_path, [patient]))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("read", [load_cohort, CohortManifest])
def test_invalid_manifests(tmp_path, read):
    bad = tmp_path / "cohort.json"
    for text in ("{not json", '{"format": "nacsim-cohort", "patients": [{"id": '):
        bad.write_text(text)
        with pytest.raises(InputError, match="not valid JSON") as err:
            read(bad)
        assert "\n" not in str(err.value)
    for text in (json.dumps({"format": "something-else"}), "[1, 2]"):
        bad.write_text(text)
        with pytest.raises(InputError, match="not a nacsim cohort manifest"):
            read(bad)
    with pytest.raises(InputError, match="lists no patients"):
        read(_manifest(tmp_path, []))
    with pytest.raises(InputError, match="not a model family"):
        read(_manifest(tmp_path, [{"id": "x"}], family="liver"))
    p = _breast_patient(tmp_path)
    with pytest.raises(InputError, match="appears twice"):
        read(_manifest(tmp_path, [p, p]))


def test_a_streamed_manifest_gives_the_cohort_patient_by_patient(tmp_path):
    """`CohortManifest` (a cohort run's reader): the patients, values and fields of
    `load_cohort`, each time it is iterated; a manifest edited since is refused."""
    p1, p2 = _breast_patient(tmp_path, "P1"), _breast_patient(tmp_path, "P2", pCR="no")
    p2["scans"].pop("T1")
    p1["extra"] = {"phantom": {"volume": 12.5, "seeds": [1, 2]}}
    path = tmp_path / "cohort.json"
    path.write_text(json.dumps({"format": "nacsim-cohort", "version": 1, "site": {"a": 0.5},
                                "patients": [p1, p2], "family": "breast", "notes": [1.25]}))
    cohort, streamed = load_cohort(path), CohortManifest(path)
    assert (streamed.family, streamed.root, streamed.meta) == (cohort.family, cohort.root,
                                                               cohort.meta)
    assert streamed.meta == {"site": {"a": 0.5}, "notes": [1.25]}
    assert len(streamed.patients) == 2 and streamed.with_followup == 1
    assert list(streamed.patients) == cohort.patients == list(streamed.patients)
    assert type(list(streamed.patients)[0].extra["phantom"]["volume"]) is float
    path.write_text(path.read_text() + " ")
    with pytest.raises(InputError, match="changed since it was read"):
        list(streamed.patients)


def test_mismatched_grids_between_channels(tmp_path):
    patient = _breast_patient(tmp_path)
    _nifti(tmp_path / "P1" / "T1_post.nii.gz", shape=(4, 5, 7))
    cohort = load_cohort(_manifest(tmp_path, [patient]))
    with pytest.raises(InputError, match=r"T1_post.nii.gz: shape \(4, 5, 7\) does not match"):
        check_cohort_images(cohort)
    _nifti(tmp_path / "P1" / "T1_post.nii.gz", spacing=(1.0, 1.0, 3.0))
    with pytest.raises(InputError, match="spacing .* does not match"):
        check_cohort_images(cohort)
    _nifti(tmp_path / "P1" / "T1_post.nii.gz", value=5.0)
    with pytest.raises(InputError, match="constant"):
        check_cohort_images(cohort)
