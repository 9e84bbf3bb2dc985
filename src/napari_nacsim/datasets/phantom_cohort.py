"""Write a family's phantom patients to disk as a cohort: NIfTI scans and masks plus a
cohort manifest; and find the phantom behind a patient of such a cohort again.

The whole cohort folder is built under a temporary name and renamed into place at the end,
so an interrupted run never leaves a half-written cohort behind. Worker processes are
handed the family's name and look it up (built-in families only, as for every spawned
worker: a family registered at run time is unknown to a fresh process).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .. import __version__
from ..core.atomic import atomic_directory
from ..core.cohort import Cohort, Patient
from ..core.errors import InputError
from ..core.scan_io import write_scan
from ..families import get_family
from ..science.phantoms import PhantomPatient, Rendering
from .parallel import map_jobs

MANIFEST_NAME = "cohort.json"
MAX_PATIENTS = 10_000


def write_rendering(rendering: Rendering, folder: Path) -> tuple[dict, dict]:
    """Write one rendering's scans and masks into ``folder``; returns the (scans, masks)
    path tables of a manifest entry."""
    scans: dict[str, dict[str, Path]] = {}
    masks: dict[str, dict[str, Path]] = {}
    for table, out in ((rendering.scans, scans), (rendering.masks, masks)):
        for timepoint, named in table.items():
            for name, scan in named.items():
                path = folder / f"{timepoint}_{name}.nii.gz"
                write_scan(scan, path)
                out.setdefault(timepoint, {})[name] = path
    return scans, masks


def _write_patient(family: str, seed: int, index: int, folder: Path) -> Patient:
    """Render one patient and write its files (a worker-process job)."""
    phantom = get_family(family).make_phantom(seed, index)
    rendering = phantom.render()
    scans, masks = write_rendering(rendering, folder / phantom.id)
    return Patient(id=phantom.id, clinical=dict(phantom.clinical), scans=scans, masks=masks,
                   extra={"phantom": {"cohort_seed": seed, "index": index,
                                      "truth": rendering.truth}})


def write_phantom_cohort(family: str, n_patients: int, seed: int, out_dir: str | os.PathLike,
                         *, overwrite: bool = False, jobs: int | None = None,
                         progress: Callable[[int, int], None] | None = None) -> Path:
    """Generate ``n_patients`` synthetic patients of ``family`` into ``out_dir``; returns the
    manifest path. Deterministic for ``seed`` whatever ``jobs`` (each patient has its own
    random streams); ``jobs`` worker processes (default: up to 2, the size of a laptop/CI
    machine) render and compress patients in parallel."""
    schema = get_family(family).schema  # an unknown family: one line naming the known ones
    if not 1 <= n_patients <= MAX_PATIENTS:
        raise InputError("--patients", f"{n_patients} is not in 1..{MAX_PATIENTS}")
    if seed < 0:
        raise InputError("--seed", f"{seed} must be >= 0")
    if jobs is not None and jobs < 1:
        raise InputError("--jobs", f"{jobs} must be >= 1")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise InputError(out_dir, "folder is not empty (choose a new folder or allow overwrite)")
    with atomic_directory(out_dir) as staging:
        patients = map_jobs(_write_patient,
                            [(family, seed, index, staging) for index in range(n_patients)],
                            jobs, progress)
        cohort = Cohort(family=schema, patients=patients, root=staging, meta={
            "synthetic": True,
            "description": f"Synthetic {schema.title.lower()} cohort (nacsim phantoms)",
            "generator": {"name": "nacsim phantoms", "version": __version__, "family": family,
                          "seed": seed, "n_patients": n_patients},
        })
        cohort.save(staging / MANIFEST_NAME)
    return out_dir / MANIFEST_NAME


def phantom_of(cohort: Cohort, patient: Patient) -> PhantomPatient:
    """The generator behind a synthetic patient, to render its counterfactual scenarios."""
    info = patient.extra.get("phantom")
    if not info:
        raise InputError(f"patient {patient.id}", "is not a nacsim phantom (no counterfactual "
                                                   "ground truth available)")
    return get_family(cohort.family.name).make_phantom(int(info["cohort_seed"]),
                                                       int(info["index"]))
