"""Training and evaluation data of the image-to-image generative models, as plain data.

A *paired cohort* is what the generative core trains on: per patient, the model input of
every time point (aligned, normalised 2D images on one grid), the tumour masks on the same
grid, and the clinical factors. It is family-agnostic: time points and variables come from
the family's schema. Filling one needs a family's phantoms and preprocessing, which live
above this floor: `napari_nacsim.datasets.paired` (``phantom_cohort``, ``manifest_cohort``).

The train/test split is a pure function of the patient ids and a seed (never of directory
listing order), and is recorded by the training entrypoint.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Sequence, TypeVar

import numpy as np

from ...core.errors import InputError
from ...core.schema import FamilySchema

T = TypeVar("T")


@dataclasses.dataclass
class PairedCohort:
    """Arrays over patients; time-point axis in schema order."""

    family: FamilySchema
    ids: list[str]
    images: np.ndarray            # (N, T, H, W) float32 in [0, 1]
    masks: np.ndarray             # (N, T, H, W) uint8 tumour masks
    clinical: list[dict[str, Any]]
    spacing: tuple[float, float]  # mm, (y, x)
    truth: list[dict[str, Any]]   # per patient: phantom ground truth (JSON-able)
    # Counterfactual ground truth (same patient, another scenario), where prepared:
    cf_images: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    cf_masks: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    cf_clinical: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, ids: Sequence[str]) -> "PairedCohort":
        pos = [self.ids.index(i) for i in ids]
        return PairedCohort(self.family, list(ids), self.images[pos], self.masks[pos],
                            [self.clinical[p] for p in pos], self.spacing,
                            [self.truth[p] for p in pos],
                            {i: self.cf_images[i] for i in ids if i in self.cf_images},
                            {i: self.cf_masks[i] for i in ids if i in self.cf_masks},
                            {i: self.cf_clinical[i] for i in ids if i in self.cf_clinical})


def split_ids(ids: Iterable[T], test_fraction: float, seed: int, *, at_least_one: bool = True,
              field: str = "test fraction") -> tuple[list[T], list[T]]:
    """Deterministic patient-level split into (train, held out) of the breast and lung
    training alike: the ids (names or indices) sorted, never in listing order, then
    permuted by ``seed``; ``test_fraction`` of them, rounded, are held out. ``at_least_one``:
    hold out one even when the fraction rounds to none (and refuse a fraction of 0);
    otherwise a fraction of 0 holds out none (the lung training's validation share).
    ``field``: what a bad fraction is called in the message."""
    ordered = sorted(ids)
    if not (0.0 < test_fraction < 1.0 if at_least_one else 0.0 <= test_fraction < 1.0):
        raise InputError(field, f"{test_fraction} must be between 0 and 1")
    n_test = int(round(len(ordered) * test_fraction))
    n_test = max(1, n_test) if at_least_one else n_test
    perm = np.random.default_rng(seed).permutation(len(ordered))
    test = sorted(ordered[i] for i in perm[:n_test])
    train = [i for i in ordered if i not in set(test)]
    return train, test
