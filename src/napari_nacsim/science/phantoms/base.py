"""What every phantom family provides: a patient that renders itself under a scenario."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Protocol

import numpy as np

from ...core.scan import Scan
from ...core.schema import FamilySchema
from .shapes import Grid


@dataclasses.dataclass
class Rendering:
    """One patient drawn under one scenario: scans and masks per time point + ground truth."""

    patient_id: str
    family: FamilySchema
    clinical: dict[str, Any]                 # the scenario that was rendered (validated)
    scans: dict[str, dict[str, Scan]]        # time point -> channel -> scan
    masks: dict[str, dict[str, Scan]]        # time point -> mask name -> labels scan
    truth: dict[str, Any]                    # JSON-able: sizes, reductions, transforms, ...

    def visits(self) -> dict[str, dict[str, Scan]]:
        """The rendering as a patient's visits, what a family's preprocessing takes: time
        point -> its scans and masks by name (a time point without masks has scans only)."""
        return {tp: {**self.scans[tp], **self.masks.get(tp, {})} for tp in self.scans}


class PhantomPatient(Protocol):
    id: str
    family: FamilySchema
    clinical: dict[str, Any]   # the factual clinical values, outcomes included
    cohort_seed: int
    index: int

    def render(self, scenario: Mapping[str, Any] | None = None) -> Rendering:
        """Draw the patient; ``scenario`` overrides some clinical values (counterfactual)."""
        ...


def patient_seed(cohort_seed: int, index: int, stream: str) -> np.random.Generator:
    """Independent random stream per (cohort, patient, purpose); a patient does not depend
    on how many patients the cohort has, nor on which scenario is rendered."""
    key = [int(cohort_seed), int(index)] + [ord(c) for c in stream]
    return np.random.default_rng(np.random.SeedSequence(key))


def grid_affine(grid: Grid) -> np.ndarray:
    """Affine of a phantom as stored on disk: LPS, the storage order of DICOM.

    Phantoms are drawn in RAS index order (+y anterior, +x patient's right) and stored
    flipped in y and x (`phantom_scan`), so that napari, which shows row 0 at the top,
    displays axial slices the radiological way: anterior up, patient's right on the left.
    The physical positions are the same either way; the grid is centred on the origin.
    """
    sz, sy, sx = grid.spacing
    nz, ny, nx = grid.shape
    affine = np.diag([-sx, -sy, sz, 1.0])
    affine[:3, 3] = ((nx - 1) * sx / 2, (ny - 1) * sy / 2, -(nz - 1) * sz / 2)
    return affine


def phantom_scan(array: np.ndarray, grid: Grid, *, kind: str = "image", **provenance) -> Scan:
    """Wrap a phantom volume (drawn in RAS index order) as a `Scan` in LPS storage order,
    marked synthetic with its generator provenance."""
    stored = np.ascontiguousarray(array[:, ::-1, ::-1])
    return Scan(array=stored, affine=grid_affine(grid), kind=kind,
                provenance={"synthetic": True, "generator": "nacsim phantom", **provenance})

