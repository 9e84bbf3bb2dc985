"""Training data of ImmunoDiff: lung CT crops (HU) with lobe, vessel and tumour masks.

Two kinds of patient records, cached one ``.npz`` per patient so that a training run (or a
resumed one) never redraws a phantom:

- *paired* (stage ``adapter`` and evaluation): the follow-up brought onto the baseline grid,
  then both visits cut with the same box around the baseline tumour (`lung_crops`' steps),
  plus the clinical values and the phantom's response probability. Two ways to align:
  ``family.model_inputs`` (the product path: an ANTs registration, about 25 s a patient on
  a free core and several minutes on this shared machine), or ``align="truth"``: the
  phantom's own repositioning matrix (``truth["misalignment"]``), i.e. what a perfect
  registration returns, applied with the same resampling code (`registration.apply`). The
  bundled model is trained on truth-aligned pairs to fit the CPU budget; the two agree to
  within a fraction of a voxel (measured in docs/lung-model.md).
- *unpaired* (stages ``vl``, ``base`` and ``control``): every visit of a patient cut with the
  box around the baseline tumour *without* registration. The base denoiser and the anatomy
  ControlNet learn what a lung crop looks like, not a before/after pairing, so the follow-up
  need not be aligned to the baseline; skipping the registration makes a record ~10x cheaper,
  which is how the base stage gets many more patients than the paired set (as in the paper:
  1518 unpaired CTs against 74 pairs). Each visit's own lobe/vessel masks travel with it.

Crops are stored as int16 HU (the phantom's range is -1024..3071) and masks as uint8.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

CONTEXT = ("lobes", "vessels")


def _record_path(folder: Path, index: int) -> Path:
    return folder / f"{int(index):05d}.npz"


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in values.items():
        if isinstance(v, (np.floating, np.integer, np.bool_)):
            v = v.item()
        out[k] = v
    return out


def truth_registration(rendering, fixed, moving):
    """The phantom's known post -> pre alignment as a `Registration` (world RAS mm).

    The phantom draws the follow-up as post(p) = pre(M p) in its drawing frame ((z, y, x)
    mm, equal to world RAS read backwards), so a baseline point q is at M^-1 q in the
    follow-up: fixed_to_moving = R M^-1 R with R the axis reversal."""
    from ...preprocess.registration import Registration, RegistrationSettings

    m = np.asarray(rendering.truth["misalignment"]["post"], float)
    reverse = np.eye(4)
    reverse[:3, :3] = np.eye(3)[::-1]
    matrix = reverse @ np.linalg.inv(m) @ reverse
    return Registration(matrix, tuple(fixed.shape), fixed.affine.copy(), fixed.name,
                        moving.name, "phantom truth", RegistrationSettings())


def truth_aligned_inputs(family, rendering) -> dict[str, dict[str, Any]]:
    """`lung_crops` with the phantom's own alignment instead of ANTs (see above)."""
    from ...preprocess.lung import crop_around_tumour, crop_to_box
    from ...preprocess.registration import apply

    base = family.schema.baseline
    visits = rendering.visits()
    aligned = {base: visits[base]}
    for tp, visit in visits.items():
        if tp != base:
            reg = truth_registration(rendering, visits[base]["ct"], visit["ct"])
            aligned[tp] = {name: apply(reg, scan) for name, scan in visit.items()}
    ct_crop, _ = crop_around_tumour(visits[base]["ct"], visits[base]["tumour"])
    return {tp: {("image" if name == "ct" else name): crop_to_box(scan, ct_crop)
                 for name, scan in scans.items()} for tp, scans in aligned.items()}


def paired_record(family, cohort_seed: int, index: int, *, align: str = "truth",
                  scenario: Optional[dict] = None) -> dict[str, Any]:
    """A patient's pre/post crops (+ clinical, truth); ``align``: "truth" or "ants" (the
    family's `model_inputs`). ``scenario``: render a counterfactual (same latent draws)."""
    phantom = family.make_phantom(cohort_seed, index)
    rendering = phantom.render(scenario)
    if align == "ants":
        inputs = family.model_inputs(rendering.visits())
    else:
        inputs = truth_aligned_inputs(family, rendering)
    arrays = {}
    for tp, entry in inputs.items():
        arrays[f"{tp}_image"] = np.round(entry["image"].array).astype(np.int16)
        for name in ("tumour",) + CONTEXT:
            arrays[f"{tp}_{name}"] = np.asarray(entry[name].array, np.uint8)
    meta = {"patient": phantom.id, "cohort_seed": int(cohort_seed), "index": int(index),
            "clinical": _jsonable(dict(rendering.clinical)),
            "response_probability": float(rendering.truth["response_probability"]),
            "truth": {k: rendering.truth[k] for k in ("responder", "recist",
                                                      "diameter_change_percent",
                                                      "tumour_volume_ml")},
            "align": align, "spacing": list(inputs[family.schema.baseline]["image"].spacing)}
    return {"arrays": arrays, "meta": meta}


def unpaired_record(family, cohort_seed: int, index: int) -> dict[str, Any]:
    """Each visit of a patient cut around the baseline tumour, unregistered (see above)."""
    from ...preprocess.lung import crop_around_tumour, crop_to_box

    phantom = family.make_phantom(cohort_seed, index)
    rendering = phantom.render()
    base = family.schema.baseline
    box, _ = crop_around_tumour(rendering.scans[base]["ct"], rendering.masks[base]["tumour"])
    arrays = {}
    for tp in rendering.scans:
        arrays[f"{tp}_image"] = np.round(crop_to_box(rendering.scans[tp]["ct"], box).array
                                         ).astype(np.int16)
        for name in ("tumour",) + CONTEXT:
            arrays[f"{tp}_{name}"] = np.asarray(crop_to_box(rendering.masks[tp][name], box).array,
                                                np.uint8)
    meta = {"patient": phantom.id, "cohort_seed": int(cohort_seed), "index": int(index),
            "clinical": _jsonable(dict(rendering.clinical)),
            "response_probability": float(rendering.truth["response_probability"])}
    return {"arrays": arrays, "meta": meta}


def flipped_outcome_record(family, cohort_seed: int, index: int, outcome: str, *,
                           align: str = "truth") -> dict[str, Any]:
    """`paired_record` of the patient under the other value of the yes/no ``outcome``
    (e.g. a non-responder rendered as a responder): the phantom keeps every latent draw and
    renders the forced outcome. Training an outcome-conditioned generator on both renderings
    of every patient balances the outcomes (a quarter of the patients respond) and shows the
    network the same tumour under both, which is exactly the contrast it must learn."""
    factual = family.make_phantom(cohort_seed, index).outcome().clinical[outcome]
    record = paired_record(family, cohort_seed, index, align=align,
                           scenario={outcome: not bool(factual)})
    record["meta"]["flipped_outcome"] = outcome
    return record


def write_record(folder: Path, index: int, record: dict[str, Any]) -> Path:
    """Atomically: a half-written record is never read (resumable cache)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = _record_path(folder, index)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez_compressed(tmp, meta=np.array(json.dumps(record["meta"])), **record["arrays"])
    os.replace(tmp, path)
    return path


def build_cache(folder: str | os.PathLike, family, cohort_seed: int, indices: Iterable[int], *,
                paired: bool, progress: Any = None, flip_outcome: Optional[str] = None
                ) -> Path:
    """Draw and cache the records that are not cached yet (resumable). ``flip_outcome``
    (paired only): the patients under the other value of that outcome
    (`flipped_outcome_record`)."""
    folder = Path(folder)
    if flip_outcome:
        def make(fam, seed, index):
            return flipped_outcome_record(fam, seed, index, flip_outcome)
    else:
        make = paired_record if paired else unpaired_record
    for index in indices:
        if not _record_path(folder, index).exists():
            write_record(folder, index, make(family, cohort_seed, index))
        if progress is not None:
            progress(1)
    return folder


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        arrays = {k: data[k] for k in data.files if k != "meta"}
    return {"arrays": arrays, "meta": meta}


def load_records(folder: str | os.PathLike, indices: Optional[Iterable[int]] = None
                 ) -> list[dict[str, Any]]:
    folder = Path(folder)
    if indices is None:
        # record names are digits only: a killed writer's temporary file is never read
        paths = sorted(p for p in folder.glob("*.npz") if p.stem.isdigit())
    else:
        paths = [_record_path(folder, i) for i in indices]
    return [read_record(p) for p in paths if p.exists()]
