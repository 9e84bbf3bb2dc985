"""`nacsim segment | measure`: tumour masks with nnU-Net, and tumour sizes from masks."""

from __future__ import annotations

import json
from pathlib import Path

from ..core.errors import InputError
from ..core.scan import LABELS
from ..core.scan_io import read_scan, write_scan


def _size_lines(mask, args, label: str) -> tuple[list[str], dict]:
    from ..science.measure import (format_change_percent, match_percent, measure_tumour,
                                   size_change)

    size = measure_tumour(mask)
    lines = [f"{label}: {size.describe()}"]
    payload: dict = {"size": size.to_json()}
    if args.baseline_mask is not None:
        baseline = read_scan(args.baseline_mask, kind=LABELS)
        if baseline.ndim != mask.ndim:
            raise InputError(args.baseline_mask, f"is {baseline.ndim}D but the mask is "
                                                 f"{mask.ndim}D")
        base_size = measure_tumour(baseline)
        change = size_change(base_size, size)
        lines.append(f"baseline: {base_size.describe()}")
        lines.append(f"change vs baseline: {change.describe()}")
        if base_size.found:
            lines.append(f"size reduction vs baseline (NAC 'size'): "
                         f"{format_change_percent(change.reduction_percent, sign=False)}")
        payload["baseline"] = base_size.to_json()
        payload["change"] = change.to_json()
    real_path = getattr(args, "real_mask", None)
    if real_path is not None:
        real = measure_tumour(read_scan(real_path, kind=LABELS))
        if real.unit != size.unit:
            raise InputError(real_path, f"size is in {real.unit}, the mask's in {size.unit}")
        match = match_percent(size.total, real.total)
        lines.append(f"real follow-up: {real.describe()}")
        lines.append(f"match with the real follow-up: {match:.1f} % "
                     "(100 x smaller / larger size)")
        payload["real"] = real.to_json()
        payload["match_percent"] = match
    return lines, payload


def cmd_segment(args) -> int:
    from ..families import get_family

    image = read_scan(args.image)
    segmenter = get_family(args.family).load_segmenter(args.model, trust_pickle=args.trust_pickle,
                                                       device=args.device)
    mask = segmenter.segment(image)
    write_scan(mask, args.out, overwrite=args.overwrite,
               extra={"segmentation_model": segmenter.describe()})
    lines, payload = _size_lines(mask, args, "tumour")
    if not image.provenance.get("spacing_known", True):
        lines.append("note: the image file has no voxel size; sizes assume 1 mm pixels")
    resampled = mask.provenance["history"][-1].get("resampled")  # see segmenter.segment
    if resampled:
        lines.append(f"note: {resampled}")
    if image.provenance.get("synthetic"):
        lines.append("note: the image is synthetic; this is not a measurement of a patient")
    payload.update({"image": str(args.image), "mask": str(args.out),
                    "model": segmenter.describe()})
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(f"wrote the tumour mask of {args.image} to {args.out} "
              f"(model: {segmenter.name}, {segmenter.device})")
        print("\n".join(lines))
    return 0


def cmd_measure(args) -> int:
    mask = read_scan(args.mask, kind=LABELS)
    lines, payload = _size_lines(mask, args, "tumour")
    if args.json:
        print(json.dumps({"mask": str(args.mask), **payload}, indent=2))
    else:
        print("\n".join(lines))
    return 0


def add_segment_commands(sub) -> None:
    from ..families import family_names

    p = sub.add_parser("segment", help="tumour mask of a MIP (breast) or CT crop (lung) with "
                                       "nnU-Net, and its size")
    p.add_argument("image", type=Path, help="breast subtraction MIP (2D) or lung CT crop in HU "
                                            "(3D), e.g. from `nacsim mip` / `nacsim crop`")
    p.add_argument("--family", choices=family_names(), required=True)
    p.add_argument("--model", type=Path, default=None,
                   help="model folder: nacsim format or an nnU-Net results folder "
                        "(default: the bundled model)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow full unpickling of an nnU-Net checkpoint that cannot be read as "
                        "plain weights (can run code hidden in the file: trusted files only)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--out", type=Path, required=True, help="mask to write (.nii.gz)")
    p.add_argument("--baseline-mask", type=Path, default=None,
                   help="baseline tumour mask: also print the change vs baseline")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("measure", help="tumour size of a mask (mm² on 2D, mL on 3D), change "
                                       "vs baseline, match with the real follow-up")
    p.add_argument("mask", type=Path)
    p.add_argument("--baseline-mask", type=Path, default=None,
                   help="baseline mask: change in absolute units and percent, NAC 'size'")
    p.add_argument("--real-mask", type=Path, default=None,
                   help="real follow-up mask (MASK being the generated one): NAC 'match'")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_measure)
