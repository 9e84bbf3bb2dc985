"""Training and evaluation data of the image-to-image generative models.

A *paired cohort* is what the generative core trains on: per patient, the model input of
every time point (aligned, normalised 2D images on one grid), the tumour masks on the same
grid, and the clinical factors. It is family-agnostic: time points and variables come from
the family's schema, and `phantom_cohort` fills it from a family's synthetic phantom
patients with the family's preprocessing (`ModelFamily.model_inputs`; breast: registration
and subtraction MIPs), which can be slow, so prepared patients are cached as one ``.npz``
per patient and reused.

The train/test split is a pure function of the patient ids and a seed (never of directory
listing order), and is recorded by the training entrypoint.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ...core.errors import InputError
from ...core.schema import FamilySchema


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


def split_ids(ids: Sequence[str], test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic patient-level split: sorted ids, permuted by ``seed``."""
    ordered = sorted(ids)
    if not 0.0 < test_fraction < 1.0:
        raise InputError("test fraction", f"{test_fraction} must be between 0 and 1")
    n_test = max(1, int(round(len(ordered) * test_fraction)))
    perm = np.random.default_rng(seed).permutation(len(ordered))
    test = sorted(ordered[i] for i in perm[:n_test])
    train = [i for i in ordered if i not in set(test)]
    return train, test


def counterfactual_of(family: Any, clinical: dict[str, Any]) -> dict[str, Any]:
    """The scenario a patient did *not* have (breast: pCR flipped): the family says which
    (`ModelFamily.counterfactual`)."""
    from ...families import get_family

    return get_family(family).counterfactual(clinical)


# --- phantom cohorts ------------------------------------------------------------------------

def _input_arrays(family: Any, rendering, size: int
                  ) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """A rendering's model inputs and tumour masks on the model grid, in schema order."""
    from ...families import rendering_visits

    inputs = family.model_inputs(rendering_visits(rendering))
    grid = (size,) * family.model_input.ndim
    images, masks = [], []
    spacing = None
    for tp in family.schema.timepoint_names:
        image = family.resample(inputs[tp]["image"], grid)
        mask = family.resample(inputs[tp]["tumour"], grid)
        images.append(np.asarray(image.array, np.float32))
        masks.append((mask.array > 0).astype(np.uint8))
        spacing = tuple(float(s) for s in image.spacing)
    return np.stack(images), np.stack(masks), spacing


def prepare_phantom_patient(family: Any, cohort_seed: int, index: int, size: int,
                            counterfactual: bool, cache_dir: Path) -> Path:
    """Render + preprocess one phantom patient (and optionally its counterfactual); cached."""
    import json

    from ...core.atomic import atomic_path
    from ...families import get_family

    family = get_family(family)
    name = f"{family.name}_s{cohort_seed}_i{index:04d}_{size}{'_cf' if counterfactual else ''}"
    path = Path(cache_dir) / f"{name}.npz"
    if path.exists():
        return path
    patient = family.make_phantom(cohort_seed, index)
    rendering = patient.render()
    images, masks, spacing = _input_arrays(family, rendering, size)
    payload = dict(images=images, masks=masks, spacing=np.array(spacing), id=patient.id,
                   clinical=json.dumps(rendering.clinical), truth=json.dumps(rendering.truth))
    if counterfactual:
        cf = patient.render(family.counterfactual(rendering.clinical))
        cf_images, cf_masks, _ = _input_arrays(family, cf, size)
        payload.update(cf_images=cf_images, cf_masks=cf_masks,
                       cf_clinical=json.dumps(cf.clinical), cf_truth=json.dumps(cf.truth))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **payload)
    return path


def _prepare_one(args):
    return prepare_phantom_patient(*args)


def phantom_ids(family: Any, cohort_seed: int, n_patients: int) -> list[str]:
    """The patient ids of the first ``n_patients`` phantoms of a cohort (cheap: drawing a
    phantom's parameters renders nothing)."""
    from ...families import get_family

    family = get_family(family)
    return [family.make_phantom(cohort_seed, i).id for i in range(n_patients)]


def phantom_cohort(family: Any, cohort_seed: int, n_patients: int, size: int, *,
                   cache_dir: Path, counterfactual_ids: Sequence[str] = (), jobs: int = 1,
                   progress: Callable[[int, int], None] | None = None) -> PairedCohort:
    """Prepare (or read from cache) ``n_patients`` synthetic patients of ``family`` (a
    registered family or its name) on a model grid of ``size`` pixels per side.
    ``jobs`` > 1 prepares in worker processes (built-in families only: a family registered
    at run time is unknown to a fresh worker)."""
    import json

    from ...families import get_family

    family = get_family(family)
    ids = phantom_ids(family, cohort_seed, n_patients)
    tasks = [(family.name, cohort_seed, i, size, ids[i] in set(counterfactual_ids),
              Path(cache_dir)) for i in range(n_patients)]
    paths: list[Path] = []
    if jobs > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(jobs) as pool:
            for k, path in enumerate(pool.imap(_prepare_one, tasks)):
                paths.append(path)
                if progress:
                    progress(k + 1, len(tasks))
    else:
        for k, task in enumerate(tasks):
            paths.append(prepare_phantom_patient(family, *task[1:]))
            if progress:
                progress(k + 1, len(tasks))
    images, masks, clinical, truth = [], [], [], []
    cf_images, cf_masks, cf_clinical = {}, {}, {}
    spacing = None
    for pid, path in zip(ids, paths):
        with np.load(path) as z:
            images.append(z["images"])
            masks.append(z["masks"])
            clinical.append(json.loads(str(z["clinical"])))
            truth.append(json.loads(str(z["truth"])))
            spacing = tuple(float(s) for s in z["spacing"])
            if "cf_images" in z.files:
                cf_images[pid] = z["cf_images"]
                cf_masks[pid] = z["cf_masks"]
                cf_clinical[pid] = json.loads(str(z["cf_clinical"]))
                truth[-1]["counterfactual_truth"] = json.loads(str(z["cf_truth"]))
    return PairedCohort(family.schema, ids, np.stack(images), np.stack(masks), clinical,
                        spacing, truth, cf_images, cf_masks, cf_clinical)


def manifest_cohort(manifest: Any, size: int, *, counterfactual: bool = True,
                    progress: Callable[[int, int], None] | None = None
                    ) -> tuple[PairedCohort, list[tuple[str, str]]]:
    """A cohort manifest as a paired cohort on a model grid of ``size`` (every time point of
    the schema needed; the family's preprocessing), plus ``(patient, reason)`` for the
    patients left out. Phantom patients (``extra.phantom`` in the manifest) also get their
    counterfactual ground truth when ``counterfactual``."""
    from ...core.cohort import Cohort, load_cohort, load_timepoint
    from ...families import get_family
    from ..phantoms.cohort import phantom_of

    cohort = manifest if isinstance(manifest, Cohort) else load_cohort(manifest)
    family = get_family(cohort.family)
    schema = family.schema
    grid = (size,) * family.model_input.ndim
    conditions = [v.name for v in schema.condition_variables if v.derive is None]

    def arrays(inputs):
        images = [family.resample(inputs[tp]["image"], grid) for tp in schema.timepoint_names]
        masks = [family.resample(inputs[tp]["tumour"], grid) for tp in schema.timepoint_names]
        return (np.stack([np.asarray(i.array, np.float32) for i in images]),
                np.stack([(m.array > 0).astype(np.uint8) for m in masks]),
                tuple(float(s) for s in images[0].spacing))

    ids, images, masks, clinical, truth, skipped = [], [], [], [], [], []
    cf_images, cf_masks, cf_clinical = {}, {}, {}
    spacing = None
    for k, patient in enumerate(cohort.patients):
        missing = [tp for tp in schema.timepoint_names if tp not in patient.scans or
                   patient.mask_path(tp) is None]
        absent = [n for n in conditions if n not in patient.clinical]
        if missing or absent:
            what = f"no {missing[0]} scan with a tumour mask" if missing else \
                f"no {absent[0]} value"
            skipped.append((patient.id, what))
            continue
        visits = {tp: load_timepoint(patient, tp, schema) for tp in schema.timepoint_names}
        imgs, msks, spacing = arrays(family.model_inputs(visits))
        ids.append(patient.id)
        images.append(imgs)
        masks.append(msks)
        clinical.append(dict(patient.clinical))
        truth.append(dict((patient.extra.get("phantom") or {}).get("truth") or {}))
        if counterfactual and patient.extra.get("phantom"):
            scenario = family.counterfactual(patient.clinical)
            cf = family.counterfactual_truth(phantom_of(cohort, patient), scenario)
            cf_images[patient.id], cf_masks[patient.id], _ = arrays(cf)
            cf_clinical[patient.id] = scenario
        if progress:
            progress(k + 1, len(cohort.patients))
    if not ids:
        raise InputError(getattr(cohort, "root", "cohort"), "no patient has every time point "
                                                            "with a tumour mask")
    return (PairedCohort(schema, ids, np.stack(images), np.stack(masks), clinical, spacing,
                         truth, cf_images, cf_masks, cf_clinical), skipped)
