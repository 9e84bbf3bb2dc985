"""`nacsim demo`: the main job on the embedded default (a synthetic patient of a family —
by default the first with a bundled model, breast — and the bundled generative and
segmentation models).

With a display (and no ``--out``) it opens napari with the sample patient and the what-if
workspace docked. Without one (or with ``--out DIR``) it runs the same what-if loop
headless: the patient's pre-treatment model input, the family's default comparison (breast:
pCR vs non-pCR with the patient's own HR/HER2) at every follow-up, tumour masks by nnU-Net,
and writes the images, masks, ``report.json`` (sizes and deltas per scenario, plus the
phantom's real follow-ups for reference) and ``comparison.png``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..core.atomic import require_writable
from ..core.errors import InputError

DEFAULT_OUT = Path("nacsim-demo")
DEMO_MARK = "nacsim demo"


def display_available() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run_demo(out: Path | None = None, viewer: str = "auto", *, seed: int = 0,
             steps: int | None = None, family: str | None = None,
             fmt: str = "nifti") -> int:
    from ..engine import default_family
    from ..families import get_family

    chosen = get_family(family or default_family())
    if chosen.bundled_generator is None:
        raise InputError("--family", f"{chosen.name} has no bundled generative model yet")
    use_viewer = viewer == "yes" or (viewer == "auto" and out is None and display_available())
    if use_viewer:
        return open_viewer(chosen)
    return write_demo(out or DEFAULT_OUT, seed=seed, steps=steps, family=chosen.name,
                      fmt=fmt)


def open_viewer(family) -> int:
    import napari

    demo_viewer(family)
    napari.run()
    return 0


def demo_viewer(family, show: bool = True):
    """The demo's viewer: the family's sample patient and the what-if workspace, docked the
    way napari docks a plugin's widget (the Plugins menu's path). Returns (viewer, widget)."""
    import napari

    viewer = napari.Viewer(title=f"nacsim — synthetic {family.name} patient (what-if "
                                 "workspace)", show=show)
    viewer.open_sample("nacsim", family.name)  # the manifest's sample keys are family names
    _, widget = viewer.window.add_plugin_dock_widget("nacsim", "What-if workspace")
    return viewer, widget


def _check_out(out: Path) -> bool:
    """The demo may replace an earlier demo's folder, never anything else."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    if not any(out.iterdir()):
        return True
    try:
        earlier = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        earlier = {}
    if earlier.get("demo") != DEMO_MARK:
        raise InputError(out, "is not empty and is not an earlier nacsim demo; choose "
                              "another folder")
    return True


def write_demo(out: Path, *, seed: int = 0, steps: int | None = None,
               family: str | None = None, fmt: str = "nifti") -> int:
    """``fmt``: "nifti" (images and masks as NIfTI), "dicom" (DICOM series, SEGs and an SR
    in ``dicom/`` instead) or "both"; report.json and comparison.png in every case."""
    from ..engine import WhatIfRequest, WhatIfSession, default_family, load_model
    from ..engine.dicom_export import write_result_as
    from ..families import get_family
    from ..science.measure import measure_tumour

    overwrite = _check_out(out)
    require_writable(out)  # also the default folder (main checks an explicit --out)
    chosen = get_family(family or default_family())
    case = chosen.sample_case(0)
    model = load_model(family=chosen.name)
    session = WhatIfSession(model, chosen.load_segmenter())
    schema = chosen.schema
    comparison = chosen.default_comparison()
    compared = comparison.variable.name if comparison is not None else None
    clinical = {k: v for k, v in case["clinical"].items()
                if k in {v.name for v in schema.condition_variables}}
    request = WhatIfRequest(clinical=clinical, target=schema.timepoint_names[-1], seed=seed,
                            steps=steps, samples=chosen.default_samples)
    base_inputs = case["inputs"][schema.baseline]
    result = session.run(base_inputs["image"], request,
                         context=chosen.model_context(base_inputs))

    # The phantom's own follow-ups (its real scenario), measured the same way, for reference.
    real = {}
    for tp, scans in case["inputs"].items():
        size = measure_tumour(session.segmenter.segment(chosen.to_segmenter(scans["image"])))
        real[tp] = {"size": size.total, "unit": size.unit, "description": size.describe()}
    extra = {"demo": DEMO_MARK, "patient": case["patient"], "patient_clinical": case["clinical"],
             "compared": compared,
             "phantom_real_followups": {
                 "note": f"the synthetic patient's own images ({compared} = "
                         f"{case['clinical'].get(compared)}), segmented by the same model on "
                         f"the {chosen.model_input.short_name} grid of its training",
                 "sizes": real}}
    write_result_as(result, out, fmt, overwrite=overwrite, extra_report=extra)
    shown = ", ".join(f"{row['scenario'].replace(' (synthetic)', '')}: {row['size']}"
                      for row in result.table_rows()[1:])
    files = {"nifti": "images, masks", "dicom": "DICOM images, SEGs, SR in dicom/",
             "both": "images, masks; DICOM images, SEGs, SR in dicom/"}[fmt]
    print(f"wrote the what-if demo for synthetic patient {case['patient']} to {out}/ "
          f"({files}, report.json, comparison.png) in "
          f"{result.seconds['total']:.1f} s of generation + segmentation\n"
          f"baseline {result.baseline_size.describe()}; {shown}")
    return 0
