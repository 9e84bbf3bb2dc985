"""Why the lung table's baseline longest diameter differs from the phantom's (issue 24, item 13).

For each patient of an unseen phantom cohort, the baseline tumour is measured five ways:

  phantom    the phantom's own number: longest axial (in-plane) diameter on the whole CT
  truth_ax   the phantom's mask cut to the model's crop, longest axial diameter
  truth_3d   the same mask, the 3D maximum Feret diameter (what `measure_tumour` reported)
  seg_3d     the segmenter's mask of the crop, 3D Feret (what the workspace's table showed)
  seg_ax     the segmenter's mask, axial: the segmentation alone, at the phantom's definition

so that (truth_3d - truth_ax) is the definition (3D against axial), (truth_ax - phantom) the
crop's edge, and (seg_ax - truth_ax) the segmentation. Prints one row per patient and a
summary; ``--json`` writes the rows.

    python benchmarks/lung_diameter_definition.py --patients 24 --cohort-seed 7001
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def measure(patients: int, cohort_seed: int, segment: bool = True) -> list[dict]:
    from scipy import ndimage

    from napari_nacsim.families import get_family
    from napari_nacsim.science.measure import axial_longest_diameter_mm, longest_diameter_mm
    from napari_nacsim.science.phantoms.lung import longest_axial_diameter_mm

    family = get_family("lung")
    segmenter = family.load_segmenter() if segment else None
    rows = []
    for index in range(patients):
        case = family.sample_case(index, cohort_seed=cohort_seed)
        crop, truth_mask = case["inputs"]["pre"]["image"], case["inputs"]["pre"]["tumour"]
        spacing = crop.spacing
        truth = np.asarray(truth_mask.array) > 0
        mask = (np.asarray(segmenter.segment(family.to_segmenter(crop)).array) > 0
                if segmenter is not None else truth)  # without: the definition alone
        labelled_truth = ndimage.label(truth, np.ones((3, 3, 3)))[0]
        labelled_seg = ndimage.label(mask, np.ones((3, 3, 3)))[0]
        edge = bool(truth[0].any() or truth[-1].any() or truth[:, 0].any() or
                    truth[:, -1].any() or truth[:, :, 0].any() or truth[:, :, -1].any())
        rows.append({
            "patient": case["patient"],
            "phantom": float(case["truth"]["longest_diameter_mm"]["pre"]),
            "truth_ax": longest_axial_diameter_mm(truth, spacing),
            "truth_3d": longest_diameter_mm(labelled_truth, spacing),
            "seg_ax": longest_axial_diameter_mm(mask, spacing) if mask.any() else 0.0,
            "seg_3d": longest_diameter_mm(labelled_seg, spacing),
            "truth_axF": axial_longest_diameter_mm(labelled_truth, spacing),
            "seg_axF": axial_longest_diameter_mm(labelled_seg, spacing),
            "touches_crop_edge": edge,
            "slices_with_tumour": int(truth.any(axis=(1, 2)).sum()),
            "spacing_mm": [float(s) for s in spacing],
        })
    return rows


def summarise(rows: list[dict]) -> dict:
    def stats(key: str, ref: str = "phantom") -> dict:
        d = np.array([r[key] - r[ref] for r in rows])
        return {"mean_abs_mm": float(np.abs(d).mean()), "mean_mm": float(d.mean()),
                "within_3mm_percent": float(100 * (np.abs(d) <= 3).mean()),
                "over_9mm": int((np.abs(d) > 9).sum())}
    return {"n": len(rows),
            "table_as_shown (seg_3d - phantom)": stats("seg_3d"),
            "definition (truth_3d - truth_ax)": stats("truth_3d", "truth_ax"),
            "crop edge (truth_ax - phantom)": stats("truth_ax"),
            "segmentation (seg_ax - truth_ax)": stats("seg_ax", "truth_ax"),
            "axial segmentation vs phantom (seg_ax - phantom)": stats("seg_ax"),
            "axial Feret of the segmentation vs phantom (seg_axF - phantom)": stats("seg_axF"),
            "axial Feret of the truth mask vs phantom (truth_axF - phantom)": stats("truth_axF"),
            "tumours touching the crop edge": sum(r["touches_crop_edge"] for r in rows)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=24)
    parser.add_argument("--cohort-seed", type=int, default=7001)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-segmenter", action="store_true",
                        help="the definition and the crop only (seg_* = the truth mask)")
    args = parser.parse_args(argv)
    rows = measure(args.patients, args.cohort_seed, segment=not args.no_segmenter)
    for r in rows:
        print(f"{r['patient']}: phantom {r['phantom']:5.1f}  truth ax {r['truth_ax']:5.1f} "
              f"3d {r['truth_3d']:5.1f}  seg ax {r['seg_ax']:5.1f} 3d {r['seg_3d']:5.1f}  "
              f"edge {r['touches_crop_edge']}  slices {r['slices_with_tumour']}")
    summary = summarise(rows)
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
