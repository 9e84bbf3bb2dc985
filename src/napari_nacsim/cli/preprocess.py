"""`nacsim register | mip | crop`: the published preprocessing steps on single scans."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import InputError
from ..core.scan_io import read_scan, write_scan


def cmd_register(args) -> int:
    from ..science.preprocess.registration import apply, register_affine

    fixed, moving = read_scan(args.fixed), read_scan(args.moving)
    if (args.labels is None) != (args.labels_out is None):
        raise InputError("--labels", "--labels and --labels-out go together")
    registration = register_affine(fixed, moving)
    write_scan(apply(registration, moving), args.out, overwrite=args.overwrite)
    if args.labels:
        labels = read_scan(args.labels, kind="labels")
        write_scan(apply(registration, labels, labels=True), args.labels_out,
                   overwrite=args.overwrite)
    print(f"registered {args.moving} to {args.fixed}: wrote {args.out}"
          + (f" and {args.labels_out}" if args.labels else ""))
    return 0


def cmd_mip(args) -> int:
    from ..science.preprocess.breast import breast_model_input, subtraction_mip

    reference = None
    if (args.reference_pre is None) != (args.reference_post is None):
        raise InputError("--reference-pre", "--reference-pre and --reference-post go together")
    if args.reference_pre is not None:
        reference = subtraction_mip(read_scan(args.reference_pre), read_scan(args.reference_post))
    mip = breast_model_input(read_scan(args.pre), read_scan(args.post), reference=reference)
    write_scan(mip, args.out, overwrite=args.overwrite)
    print(f"wrote the subtraction MIP of {args.post} to {args.out}")
    return 0


def cmd_crop(args) -> int:
    from ..science.preprocess.lung import crop_around_tumour, hu_window

    ct, tumour = read_scan(args.ct), read_scan(args.tumour, kind="labels")
    ct_crop, tumour_crop = crop_around_tumour(ct, tumour)
    write_scan(hu_window(ct_crop) if args.window else ct_crop, args.out, overwrite=args.overwrite)
    if args.tumour_out:
        write_scan(tumour_crop, args.tumour_out, overwrite=args.overwrite)
    for mask_in, mask_out in args.mask or []:  # e.g. lobes and vessels: the same box
        from ..science.preprocess.lung import crop_to_box

        write_scan(crop_to_box(read_scan(mask_in, kind="labels"), ct_crop), mask_out,
                   overwrite=args.overwrite)
    print(f"wrote the tumour crop of {args.ct} to {args.out}")
    return 0


def add_preprocess_commands(sub) -> None:
    p = sub.add_parser("register", help="affine-register a follow-up scan to its baseline (ANTs)")
    p.add_argument("--fixed", type=Path, required=True, help="baseline scan")
    p.add_argument("--moving", type=Path, required=True, help="follow-up scan to align")
    p.add_argument("--out", type=Path, required=True, help="aligned follow-up (.nii.gz)")
    p.add_argument("--labels", type=Path, help="a mask in the follow-up's frame to carry along")
    p.add_argument("--labels-out", type=Path, help="where to write the aligned mask")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("mip", help="breast model input: subtraction, axial MIP, normalisation")
    p.add_argument("--pre", type=Path, required=True, help="pre-contrast volume")
    p.add_argument("--post", type=Path, required=True, help="first post-contrast volume")
    p.add_argument("--reference-pre", type=Path,
                   help="baseline pre-contrast: normalise a follow-up with the baseline's scale")
    p.add_argument("--reference-post", type=Path, help="baseline post-contrast")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_mip)

    p = sub.add_parser("crop", help="lung model input: fixed-size crop around the tumour")
    p.add_argument("--ct", type=Path, required=True)
    p.add_argument("--tumour", type=Path, required=True, help="tumour mask on the CT's grid")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tumour-out", type=Path, help="also write the cropped tumour mask")
    p.add_argument("--mask", nargs=2, action="append", metavar=("MASK", "OUT"),
                   help="another mask on the CT's grid cut with the same box (repeat; the "
                        "lung model needs the lobe and vessel masks)")
    p.add_argument("--window", action="store_true", help="apply the lung HU window (-> 0..1)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_crop)
