"""Per-patient preprocessing pipelines: raw visits -> what the models (and the paper) use.

Breast (NAC paper): follow-ups are affinely registered to the baseline with ANTs, then each
visit becomes a normalised subtraction MIP (follow-ups on the baseline's intensity scale)
and its tumour mask becomes the mask's footprint on that MIP.

Lung (ImmunoDiff): the post-treatment CT is registered to the pre-treatment CT; both, and
their masks, are cut with the same fixed-size box around the baseline tumour.
"""

from __future__ import annotations

from typing import Mapping

from ...core.errors import InputError
from ...core.scan import Scan
from ...core.schema import BREAST, LUNG, FamilySchema
from .breast import axial_mip, breast_model_input, resize_square, subtraction_mip
from .lung import crop_around_tumour, crop_to_box
from .registration import apply, register_affine

Visit = Mapping[str, Scan]  # channel or mask name -> scan, all on one grid


def align_visit(baseline: Visit, visit: Visit, channel: str) -> dict[str, Scan]:
    """Register ``visit[channel]`` to ``baseline[channel]`` and carry every scan and mask of
    the visit onto the baseline grid with that one transform (labels stay labels)."""
    registration = register_affine(baseline[channel], visit[channel])
    return {name: apply(registration, scan) for name, scan in visit.items()}


def _aligned_visits(visits: Mapping[str, Visit], schema: FamilySchema,
                    channel: str) -> dict[str, Visit]:
    base = schema.baseline
    if base not in visits:
        raise InputError(f"{schema.name} visits", f"the baseline {base} is missing")
    aligned: dict[str, Visit] = {base: dict(visits[base])}
    for tp in schema.timepoint_names[1:]:
        if tp in visits:
            aligned[tp] = align_visit(visits[base], visits[tp], channel)
    return aligned


def breast_mips(visits: Mapping[str, Visit], *, size: int | None = None,
                register_on: str = "pre") -> dict[str, dict[str, Scan]]:
    """Time point -> {"mip": normalised subtraction MIP, "tumour": mask MIP (if a mask is
    given)}. Registration uses the pre-contrast series (its contrast does not change with
    treatment); the same transform moves the post-contrast series and the mask."""
    aligned = _aligned_visits(visits, BREAST, register_on)
    base = aligned[BREAST.baseline]
    reference = subtraction_mip(base["pre"], base["post"])
    out: dict[str, dict[str, Scan]] = {}
    for tp, scans in aligned.items():
        entry = {"mip": breast_model_input(scans["pre"], scans["post"], reference=reference,
                                           size=size)}
        if "tumour" in scans:
            mask = axial_mip(scans["tumour"])
            if size is not None:
                mask = resize_square(mask, size)
            entry["tumour"] = mask
        out[tp] = entry
    return out


def lung_crops(visits: Mapping[str, Visit], **crop_options) -> dict[str, dict[str, Scan]]:
    """Time point -> {"ct": crop in HU, mask name -> crop}, all cut with the box centred on
    the baseline tumour (so tumour change is visible in place)."""
    aligned = _aligned_visits(visits, LUNG, "ct")
    base = aligned[LUNG.baseline]
    if "tumour" not in base:
        raise InputError("lung visits", f"the baseline {LUNG.baseline} has no tumour mask")
    ct_crop, _ = crop_around_tumour(base["ct"], base["tumour"], **crop_options)
    return {tp: {name: crop_to_box(scan, ct_crop) for name, scan in scans.items()}
            for tp, scans in aligned.items()}
