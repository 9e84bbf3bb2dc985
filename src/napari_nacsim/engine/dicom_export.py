"""A what-if run as DICOM: image series, tumour SEGs and a TID 1500 size report.

`write_result_dicom` turns a `WhatIfResult` into the items of `core.dicom.write_dicom_export`:

- the **input** on the model grid (``T0_input``), its nnU-Net mask and size;
- every **generated follow-up** of every scenario (``T2_pCR``): the image (the mean of the
  samples when several were drawn), its mask and size, the change against the input in
  percent (size and longest diameter) and the RECIST 1.1 category of the longest diameter's
  change (of the mean diameter when several samples were drawn);
- with several samples, also **each sample** as an image series of its own
  (``T2_pCR_sample1``; no SEG: only the majority mask of the samples is kept).

`write_scans_dicom` writes images without masks (``nacsim simulate``, which does not
segment); `write_review_dicom` one patient's cases of the cohort review (``nacsim review
--format dicom``); `write_result_as` a what-if run in the format asked (``nacsim demo``,
``nacsim batch`` and the workspace's Save). What the family knows (CT values or not, the
display window) is handed to the core writer as arguments; every text a PACS shows says
SYNTHETIC and names the model hash, seed and scenario. docs/dicom.md describes the objects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..core.dicom import ExportItem, LesionMeasurement, SeriesText, study_of, \
    write_dicom_export
from ..core.scan import Scan
from ..families import ModelFamily
from ..science.measure import TumourSize, measure_tumour, recist_category, size_change
from .results import slug
from .session import SYNTHETIC, FollowUp, WhatIfResult

DICOM_FOLDER = "dicom"   # where the CLI puts the export inside its output folder
FORMATS = ("nifti", "dicom", "both")


def wants(fmt: str, what: str) -> bool:
    """Whether ``--format fmt`` writes ``what`` ("nifti" or "dicom")."""
    return fmt == what or fmt == "both"


def check_exportable(scan: Scan) -> None:
    """Refuse now (`InputError` naming the attribute) an input whose DICOM header lacks
    what a derived series needs, before any generation runs."""
    study_of(scan)


def modality_of(family: ModelFamily) -> str:
    """"CT" for a family whose values are Hounsfield units (CT images), else "OT"
    (secondary capture)."""
    return "CT" if family.model_input.value_unit == "HU" else "OT"


def write_result_dicom(result: WhatIfResult, out: str | os.PathLike, *,
                       overwrite: bool = False, samples: bool = True) -> dict[str, Any]:
    """Write ``result`` as a DICOM export folder ``out``; returns its index."""
    family = result.family
    base = result.schema.baseline
    model = result.model
    algorithm, version = _segmenter(result.segmenter)
    phantom = bool(result.baseline.provenance.get("synthetic"))
    base_size = result.baseline_size
    items = [ExportItem(
        key=f"{base}_input", image=result.baseline, mask=result.baseline_mask,
        text=_input_text(result.baseline, base, family, phantom),
        measurement=LesionMeasurement(
            tracking=f"{base} input tumour", time_point=base, size=base_size.total,
            diameter_mm=base_size.diameter))]
    for arm in result.arms:
        for tp, follow in arm.followups.items():
            stem = f"{tp}_{slug(arm.label)}"
            several = len(follow.samples) > 1
            what = f"mean of {len(follow.samples)} samples" if several else "one sample"
            items.append(ExportItem(
                key=stem, image=follow.image, mask=follow.mask,
                text=_followup_text(follow, model, what),
                measurement=_measurement(follow)))
            if samples and several:
                for k, (scan, size) in enumerate(zip(follow.samples, follow.sizes)):
                    items.append(ExportItem(
                        key=f"{stem}_sample{k + 1}", image=scan,
                        text=_followup_text(
                            follow, model, f"sample {k + 1} of {len(follow.samples)}, "
                                           f"tumour {size.describe()}",
                            seed=scan.provenance.get("seed"))))
    return write_dicom_export(out, items, reference=result.baseline,
                              modality=modality_of(family),
                              display_range=family.model_input.display_range,
                              algorithm=algorithm, algorithm_version=version,
                              overwrite=overwrite)


def write_scans_dicom(family: ModelFamily, reference: Scan,
                      scans: Sequence[tuple[str, Scan, str]], out: str | os.PathLike, *,
                      overwrite: bool = False) -> dict[str, Any]:
    """Images without masks as a DICOM export folder: ``scans`` holds (key, scan, title);
    a scan whose provenance says synthetic is labelled so (text and burned-in label)."""
    items = []
    for key, scan, title in scans:
        prov = scan.provenance
        if prov.get("role") == "generated follow-up":
            text = _generated_text(title, prov, prov.get("seed"))
        else:
            text = _input_text(scan, family.schema.baseline, family,
                               bool(prov.get("synthetic")))
        items.append(ExportItem(key=key, image=scan, text=text))
    return write_dicom_export(out, items, reference=reference, modality=modality_of(family),
                              display_range=family.model_input.display_range,
                              overwrite=overwrite)


def write_review_dicom(cases: Sequence[Any], family: ModelFamily, out: str | os.PathLike, *,
                       segmenter: Optional[Mapping[str, Any]] = None,
                       overwrite: bool = False) -> dict[str, Any]:
    """One patient's cases of the cohort review (`engine.cohort_review.CaseReview`, one per
    follow-up time) as a DICOM export folder ``out``; returns its index.

    Written: the input on the model grid (``T0_input``) and, per follow-up time, the
    follow-up generated under the patient's own scenario (``T1_generated``) and, where the
    review generated one (phantoms), the counterfactual (``T1_counterfactual``), each with
    its tumour SEG and its sizes in the SR (change against the input, RECIST). Not written:
    the real follow-up (the patient's own scan, often of another study: it is in the
    patient's PACS already) and the difference map (a signed analysis map, not an image of
    the patient: NIfTI only)."""
    first = cases[0]
    base, baseline = first.baseline_time, first.images.baseline
    base_size = measure_tumour(first.images.baseline_mask)
    phantom = bool(baseline.provenance.get("synthetic"))
    items = [ExportItem(
        key=f"{base}_input", image=baseline, mask=first.images.baseline_mask,
        text=_input_text(baseline, base, family, phantom),
        measurement=LesionMeasurement(tracking=f"{base} input tumour", time_point=base,
                                      size=base_size.total, diameter_mm=base_size.diameter))]
    for case in cases:
        shown = [("generated", case.images.generated, case.images.generated_mask,
                  case.scenario_text, "the patient's scenario")]
        if case.images.counterfactual is not None:
            shown.append(("counterfactual", case.images.counterfactual,
                          case.images.counterfactual_mask,
                          case.provenance.get("counterfactual_text") or "counterfactual",
                          "counterfactual scenario"))
        for part, image, mask, scenario, what in shown:
            title = f"{case.time} · {scenario} {SYNTHETIC}"
            items.append(ExportItem(
                key=f"{case.time}_{part}", image=image, mask=mask,
                text=_generated_text(title, image.provenance, image.provenance.get("seed"),
                                     f"{what}, cohort review"),
                measurement=_against_baseline(f"{title} tumour", case.time,
                                              measure_tumour(mask), base_size)))
    algorithm, version = _segmenter(segmenter or {})
    return write_dicom_export(out, items, reference=baseline, modality=modality_of(family),
                              display_range=family.model_input.display_range,
                              algorithm=algorithm, algorithm_version=version,
                              overwrite=overwrite)


# --- texts ----------------------------------------------------------------------------------

def _input_text(scan: Scan, base: str, family: ModelFamily, phantom: bool) -> SeriesText:
    what = f"{base} {family.model_input.short_name} on the model grid"
    if phantom:
        return SeriesText(
            description=f"nacsim SYNTHETIC phantom {what}",
            comments=(f"SYNTHETIC phantom patient {scan.provenance.get('patient', '')}: "
                      f"the pre-treatment input, rendered by nacsim, not acquired"),
            derivation=f"nacsim phantom ({family.name}); {_history(scan)}",
            synthetic=True)
    return SeriesText(
        description=f"nacsim {what}",
        comments=(f"the pre-treatment input of the what-if run, on the model grid "
                  f"({family.model_input.what}); derived from the measured image"),
        derivation=f"nacsim: {_history(scan)}", synthetic=False)


def _followup_text(follow: FollowUp, model: Mapping[str, Any], what: str,
                   seed: Optional[int] = None) -> SeriesText:
    first = follow.samples[0].provenance
    prov = {**first, "model_hash": model.get("model_hash") or first.get("model_hash")}
    seeds = [s.provenance.get("seed") for s in follow.samples]
    if seed is None:
        seed = seeds[0] if len(seeds) == 1 else ", ".join(map(str, seeds))
    return _generated_text(follow.title, prov, seed, what)


def _generated_text(title: str, prov: Mapping[str, Any], seed: Any,
                    what: str = "") -> SeriesText:
    scene = title.replace(f" {SYNTHETIC}", "")
    model_hash = str(prov.get("model_hash") or "unknown")
    scenario = prov.get("scenario_text") or prov.get("scenario") or scene
    return SeriesText(
        description=f"SYNTHETIC {scene}" + (f" ({what.split(',')[0]})" if what else ""),
        comments=(f"SYNTHETIC counterfactual follow-up generated by nacsim, not a "
                  f"measurement and not acquired: {scene}" + (f"; {what}" if what else "")),
        derivation=(f"generated by nacsim from the pre-treatment input; model sha256 "
                    f"{model_hash}; scenario {scenario}; seed {seed}; steps "
                    f"{prov.get('steps')}; sampler {prov.get('sampler')}; guidance "
                    f"{prov.get('guidance_scale')}"),
        synthetic=True)


def _history(scan: Scan) -> str:
    steps = [h.get("step") for h in scan.provenance.get("history", []) if h.get("step")]
    return "steps: " + (", ".join(steps) if steps else "none")


def _measurement(follow: FollowUp) -> LesionMeasurement:
    change = follow.change
    diameter = follow.diameter_change
    has_baseline = follow.baseline_diameter > 0
    finite = (lambda v: float(v) if np.isfinite(v) else None)
    return LesionMeasurement(
        tracking=f"{follow.title} tumour", time_point=follow.time, size=follow.size_mean,
        diameter_mm=follow.diameter_mean,
        size_change_percent=finite(change.percent),
        diameter_change_percent=finite(diameter.percent) if has_baseline else None,
        response=recist_category(diameter.percent) if has_baseline else None)


def _against_baseline(tracking: str, time_point: str, size: TumourSize,
                      base: TumourSize) -> LesionMeasurement:
    """One generated image's sizes against the input's (as `_measurement` for a what-if
    run's follow-up, for a single image)."""
    finite = (lambda v: float(v) if np.isfinite(v) else None)
    has_baseline = base.diameter > 0
    diameter = size_change(base.diameter, size.diameter, "mm").percent
    return LesionMeasurement(
        tracking=tracking, time_point=time_point, size=size.total,
        diameter_mm=size.diameter,
        size_change_percent=finite(size_change(base, size).percent),
        diameter_change_percent=finite(diameter) if has_baseline else None,
        response=recist_category(diameter) if has_baseline else None)


def _segmenter(described: Mapping[str, Any]) -> tuple[str, str]:
    """The algorithm name and version the SEG and SR name: an nnU-Net segmenter (its
    description names a trainer) as "nnU-Net <model>" with nnunetv2's version; any other
    by the name it gives."""
    name = str(described.get("name") or "unknown segmenter")
    if "trainer" not in described:
        return name, "unknown"
    try:
        from importlib.metadata import version

        nnunet = version("nnunetv2")
    except Exception:  # noqa: BLE001 - metadata missing: the version stays unknown
        nnunet = "unknown"
    return f"nnU-Net {name}", nnunet


def write_result_as(result: WhatIfResult, out: str | os.PathLike, fmt: str, *,
                    overwrite: bool = False, figure: bool = True,
                    extra_report: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """``--format fmt`` of a what-if run's results folder ``out``: "nifti"
    (`results.write_result`), "dicom" (`write_result_as_dicom`: no NIfTI images) or "both"
    (the NIfTI folder with the DICOM export in ``dicom/``); returns the report. ``nacsim
    demo``, ``nacsim batch`` and the workspace's Save write through it. Atomic in every
    format: a DICOM export that fails leaves no NIfTI folder without it."""
    from ..core.atomic import atomic_directory
    from .results import write_result

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    if not wants(fmt, "dicom"):
        return write_result(result, out, overwrite=overwrite, figure=figure,
                            extra_report=extra_report)
    if not wants(fmt, "nifti"):
        return write_result_as_dicom(result, out, overwrite=overwrite, figure=figure,
                                     extra_report=extra_report)
    out = Path(out)
    _refuse_occupied(out, overwrite)
    check_exportable(result.baseline)   # before anything is written
    extra = {**dict(extra_report or {}), "dicom_files": dicom_files()}
    with atomic_directory(out) as staging:
        # the NIfTI folder replaces the (empty) staging folder, then gets the DICOM export
        report = write_result(result, staging, overwrite=True, figure=figure,
                              extra_report=extra)
        write_result_dicom(result, staging / DICOM_FOLDER)
    return report


def write_result_as_dicom(result: WhatIfResult, out: str | os.PathLike, *,
                          overwrite: bool = False, figure: bool = True,
                          extra_report: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """``--format dicom``: the folder ``out`` with ``report.json``, ``comparison.png``
    (unless not ``figure``) and the DICOM export in ``dicom/`` (no NIfTI images), written
    atomically; returns the report."""
    from ..core.atomic import atomic_directory, write_json_atomic
    from .results import comparison_figure

    out = Path(out)
    _refuse_occupied(out, overwrite)
    check_exportable(result.baseline)
    report = {**result.to_report(), **dict(extra_report or {})}
    with atomic_directory(out) as staging:
        write_result_dicom(result, staging / DICOM_FOLDER)
        report["files"] = dicom_files()
        if figure:
            comparison_figure(result, staging / "comparison.png")
            report["files"] = {"comparison": "comparison.png", **report["files"]}
        write_json_atomic(staging / "report.json", report)
    return report


def _refuse_occupied(out: Path, overwrite: bool) -> None:
    """The results folder's own check (`results.write_result`): never into a file, never
    over a folder with files unless overwriting."""
    from ..core.errors import InputError

    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(out, "is not empty (choose another folder or allow overwriting)")


def dicom_files() -> dict[str, str]:
    """What a report lists for the DICOM export (paths inside the output folder)."""
    return {"dicom": DICOM_FOLDER, "dicom_index": f"{DICOM_FOLDER}/dicom_index.json"}
