"""``nacsim review``: the cohort inspector without a viewer — run the model over a cohort
manifest with real follow-ups and write the per-case metrics as CSV (the same engine and
columns as the napari inspector).

The cases run through `engine.cohort_runner`: one task per patient on an embedded Dask
cluster sized to the machine (or ``--workers N``, ``--scheduler``, ``--cluster slurm`` ...;
``--workers 0`` or a single case: in this process), each patient's images and record written
to ``--out`` as it finishes, so that ``--resume`` finishes an interrupted run. With
``--format dicom`` (or ``both``) each patient's generated images, their tumour SEGs and a size
report are written as DICOM in its ``dicom/`` folder (docs/dicom.md)."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import InputError
from ..science.generative.samplers import SAMPLERS


def cmd_review(args) -> int:
    from ..engine.cohort_review import describe_summary
    from ..engine.cohort_runner import ReviewJob, review_rows_summary, run_cases
    from .cohort_run import ProgressBar, run_options

    if args.csv.exists() and not (args.overwrite or args.resume):
        raise InputError(args.csv, "already exists (choose another output, --resume or "
                                   "--overwrite)")
    out = args.out if args.out is not None else args.csv.with_name(f"{args.csv.stem}_cases")
    job = ReviewJob(args.manifest, model=args.model, seed=args.seed, steps=args.steps,
                    sampler=args.sampler, device=args.device, images=not args.no_images,
                    format=args.format)
    options = run_options(args, job.runnable())
    bar = ProgressBar(len(job), "reviewing", args.quiet)
    try:
        summary = run_cases(job, out, csv_path=args.csv, overwrite=args.overwrite,
                            progress=bar.update, on_start=bar.start, **options)
    except KeyboardInterrupt:
        bar.close()
        print(f"nacsim: interrupted; finished cases are kept in {out}: run the same command "
              "with --resume to finish")
        raise
    bar.close()
    stats = review_rows_summary(summary.records)
    if not stats["n_cases"]:
        raise InputError(args.manifest, "has no patient with a follow-up scan to compare with"
                         + (f" ({summary.failed[0][0]} failed: {summary.failed[0][1]})"
                            if summary.failed else ""))
    print(describe_summary(stats))
    for case, reason in summary.skipped:
        print(f"skipped {case}: {reason}")
    for case, reason in summary.failed:
        print(f"failed {case}: {reason}")
    print("lowest SSIM: " + ", ".join(f"{r['patient']} {r['time']} ({r['ssim']:.2f})"
                                      for r in stats["lowest"] if r.get("ssim") is not None))
    reused = f", {summary.reused} patients from before" if summary.reused else ""
    print(f"wrote {stats['n_cases']} cases to {args.csv} (per patient: {out}{reused})")
    return 1 if summary.failed else 0


def add_review_command(sub) -> None:
    from .cohort_run import add_run_arguments
    from .simulate import add_format_option

    p = sub.add_parser("review", help="run the model over a cohort with real follow-ups; "
                                      "per-case metrics as CSV (the inspector, headless)")
    p.add_argument("manifest", type=Path, help="cohort manifest (cohort.json)")
    p.add_argument("--csv", type=Path, required=True, help="output table")
    p.add_argument("--out", type=Path, default=None,
                   help="folder of the per-patient records and images (default: beside the "
                        "CSV, named after it: cases_cases/ for cases.csv)")
    p.add_argument("--no-images", action="store_true",
                   help="per patient, the record only (no generated images)")
    add_format_option(p, "each patient's dicom/ folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="sampler steps (model default)")
    p.add_argument("--sampler", choices=SAMPLERS, default=None)
    p.add_argument("--model", type=Path, default=None, help="model folder (default: bundled)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (on every worker)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    add_run_arguments(p)
    p.set_defaults(func=cmd_review)

