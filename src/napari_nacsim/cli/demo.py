"""`nacsim demo`: the main job on the embedded default (a synthetic breast patient).

With a display (and no ``--out``) it opens napari with the sample patient. Without one it
runs the published breast preprocessing on that patient (registration of T1/T2 to T0,
subtraction, axial MIP, normalisation) and writes the MIPs, tumour masks, ``report.json``
and a labelled ``comparison.png``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..core.atomic import atomic_path, write_json_atomic
from ..core.errors import InputError
from ..core.scan_io import write_scan
from ..core.schema import BREAST

DEFAULT_OUT = Path("nacsim-demo")


def display_available() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run_demo(out: Path | None = None, viewer: str = "auto") -> int:
    use_viewer = viewer == "yes" or (viewer == "auto" and out is None and display_available())
    if use_viewer:
        return open_viewer()
    return write_demo(out or DEFAULT_OUT)


def open_viewer() -> int:
    import napari

    viewer = napari.Viewer(title="nacsim — synthetic breast patient")
    viewer.open_sample("nacsim", "breast")
    napari.run()
    return 0


def write_demo(out: Path) -> int:
    from ..science.measure import area_mm2, reduction_percent
    from ..science.phantoms import make_patient
    from ..science.preprocess.pipeline import breast_mips

    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    phantom = make_patient("breast", 0, 0)
    rendering = phantom.render()
    visits = {tp: {**rendering.scans[tp], **rendering.masks[tp]} for tp in rendering.scans}
    mips = breast_mips(visits)

    report = {"patient": phantom.id, "synthetic": True,
              "clinical": rendering.clinical,
              "note": "Follow-ups are the synthetic patient's own (phantom) images, registered "
                      "to T0; generated counterfactuals are added by the breast model.",
              "timepoints": {}}
    baseline_area = None
    for tp, scans in mips.items():
        write_scan(scans["mip"], out / f"{tp}_mip.nii.gz", overwrite=True)
        write_scan(scans["tumour"], out / f"{tp}_tumour_mip.nii.gz", overwrite=True)
        area = area_mm2(scans["tumour"].array, scans["tumour"].spacing)
        baseline_area = area if baseline_area is None else baseline_area
        report["timepoints"][tp] = {"tumour_area_mm2": round(area, 1),
                                    "reduction_vs_T0_percent":
                                        round(reduction_percent(baseline_area, area), 1)}
    write_json_atomic(out / "report.json", report)
    _comparison_figure(mips, report, out / "comparison.png")
    print(f"wrote the demo for synthetic patient {phantom.id} to {out}/ "
          f"(MIPs, masks, report.json, comparison.png)")
    return 0


def _comparison_figure(mips, report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tps = list(mips)
    fig, axes = plt.subplots(1, len(tps), figsize=(4 * len(tps), 4.6), dpi=110)
    for ax, tp in zip(axes, tps):
        mip, mask = mips[tp]["mip"], mips[tp]["tumour"]
        sy, sx = mip.spacing
        extent = (0, mip.shape[1] * sx, mip.shape[0] * sy, 0)
        ax.imshow(mip.array, cmap="gray", vmin=0, vmax=1, extent=extent)
        # MIPs are in LPS layout (see axial_mip): anterior up, patient's right on the left.
        if mask.array.any():
            ax.contour(mask.array > 0, levels=[0.5], colors="red",
                       linewidths=1.2, extent=(0, extent[1], 0, extent[2]), origin="upper")
        info = report["timepoints"][tp]
        delta = "" if tp == tps[0] else f", {-info['reduction_vs_T0_percent']:+.0f}% vs T0"
        ax.set_title(f"{tp}: tumour {info['tumour_area_mm2']:.0f} mm²{delta}", fontsize=10)
        ax.plot([10, 110], [extent[2] - 10] * 2, color="white", linewidth=2)  # 10 cm
        ax.set_xticks([])
        ax.set_yticks([])
        for x, y, text in ((0.02, 0.5, "R"), (0.98, 0.5, "L"), (0.5, 0.97, "A")):
            ax.text(x, y, text, color="yellow", transform=ax.transAxes, ha="center",
                    va="center", fontsize=9)
    clinical = BREAST.describe(report["clinical"])
    fig.suptitle(f"SYNTHETIC patient {report['patient']} ({clinical}) — subtraction MIPs, "
                 "tumour contour in red, 10 cm scale bar", fontsize=10)

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
