"""Tiny phantom cohorts for the cohort-review tests: few patients, one follow-up (T1) each,
so a review takes seconds on one core (each follow-up costs one ANTs registration, and one
more for the counterfactual ground truth)."""

from __future__ import annotations

import json
from pathlib import Path

from napari_nacsim.datasets.phantom_cohort import write_phantom_cohort


def tiny_cohort(folder: Path, n_patients: int = 2, seed: int = 5, *, keep=("T0", "T1"),
                baseline_only: tuple[int, ...] = ()) -> Path:
    """A breast phantom cohort whose patients have only the ``keep`` visits (patients at
    ``baseline_only`` indices: only T0). Returns the manifest path."""
    manifest = write_phantom_cohort("breast", n_patients, seed, folder, jobs=1)
    payload = json.loads(manifest.read_text())
    for i, patient in enumerate(payload["patients"]):
        visits = ("T0",) if i in baseline_only else keep
        for section in ("scans", "masks"):
            patient[section] = {tp: v for tp, v in patient[section].items() if tp in visits}
    manifest.write_text(json.dumps(payload, indent=1))
    return manifest


def without_truth(manifest: Path, name: str = "no_truth.json") -> Path:
    """The same cohort as if it were real data: no phantom ground truth."""
    payload = json.loads(manifest.read_text())
    for patient in payload["patients"]:
        patient.pop("extra", None)
    out = manifest.with_name(name)
    out.write_text(json.dumps(payload, indent=1))
    return out
