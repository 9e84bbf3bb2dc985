"""``nacsim batch``: what-if runs over a whole cohort — every patient x the requested
scenarios x samples — a results folder per case (images, masks, report.json,
comparison.png: `engine.results.write_result`; with ``--format dicom`` or ``both`` the
images, SEGs and size report as DICOM in the case's ``dicom/``, docs/dicom.md) and one CSV
of sizes, changes and RECIST.

The cohort is a manifest, or a phantom cohort written first (``--phantoms FAMILY``). The cases
run through `engine.cohort_runner` like `nacsim review`'s (Dask: --workers, --scheduler,
--cluster; --resume)."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import InputError
from ..science.generative.samplers import SAMPLERS


def cmd_batch(args) -> int:
    from ..engine.cohort_runner import BatchJob, run_cases
    from .cohort_run import ProgressBar, run_options

    if (args.manifest is None) == (args.phantoms is None):
        raise InputError("batch", "give a cohort manifest or --phantoms FAMILY, not both")
    manifest = args.manifest
    if args.phantoms is not None:
        manifest = _phantom_cohort(args)
    job = BatchJob(manifest, args.scenario or (), model=args.model, seed=args.seed,
                   steps=args.steps, sampler=args.sampler, samples=args.samples,
                   device=args.device, figure=not args.no_figure, format=args.format)
    options = run_options(args, job.runnable())
    csv_path = args.csv if args.csv is not None else args.out / "batch.csv"
    bar = ProgressBar(len(job), "what-if runs", args.quiet)
    try:
        summary = run_cases(job, args.out, csv_path=csv_path, overwrite=args.overwrite,
                            progress=bar.update, on_start=bar.start, **options)
    except KeyboardInterrupt:
        bar.close()
        print(f"nacsim: interrupted; finished cases are kept in {args.out}: run the same "
              "command with --resume to finish")
        raise
    bar.close()
    for case, reason in summary.failed:
        print(f"failed {case}: {reason}")
    n_done = summary.total - len(summary.failed)
    reused = f" ({summary.reused} from before)" if summary.reused else ""
    print(f"wrote {n_done} SYNTHETIC what-if runs{reused} to {args.out / 'cases'} and their "
          f"table to {csv_path} in {summary.seconds:.1f} s"
          + (f"; {len(summary.failed)} failed (see {args.out / 'failed.csv'})"
             if summary.failed else ""))
    return 1 if summary.failed else 0


def _phantom_cohort(args) -> Path:
    """The phantom cohort under ``out/phantoms`` (written once; a resumed run reuses it when
    it was made with the same family, size and seed)."""
    import json

    from ..datasets.phantom_cohort import write_phantom_cohort

    folder = args.out / "phantoms"
    manifest = folder / "cohort.json"
    wanted = {"family": args.phantoms, "patients": args.patients, "seed": args.cohort_seed}
    stamp = folder / "batch-phantoms.json"
    if manifest.exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return manifest
    if folder.exists() and any(folder.iterdir()) and not args.overwrite:
        raise InputError(folder, "holds another phantom cohort (--overwrite to replace it)")
    manifest = write_phantom_cohort(args.phantoms, args.patients, args.cohort_seed, folder,
                                    overwrite=True, jobs=1)
    from ..core.atomic import write_json_atomic

    write_json_atomic(stamp, wanted)
    return manifest


def add_batch_command(sub) -> None:
    from ..families import family_names
    from .cohort_run import add_run_arguments
    from .simulate import add_format_option

    p = sub.add_parser("batch", help="what-if runs over a cohort: every patient x scenarios x "
                                     "samples, a results folder each plus one CSV "
                                     "(synthetic, labelled as such)")
    p.add_argument("manifest", type=Path, nargs="?", default=None,
                   help="cohort manifest (cohort.json); or --phantoms")
    p.add_argument("--phantoms", choices=family_names(), default=None,
                   help="run over a synthetic phantom cohort of this family instead "
                        "(written to OUT/phantoms)")
    p.add_argument("--patients", type=int, default=10, help="--phantoms: patients (default 10)")
    p.add_argument("--cohort-seed", type=int, default=0, help="--phantoms: cohort seed")
    p.add_argument("--scenario", action="append", default=None, metavar="NAME=VALUE,...",
                   help="values set over each patient's own, e.g. pCR=yes or PD-L1=50 "
                        "(repeat: one case per scenario; default: the family's comparison, "
                        "e.g. pCR vs non-pCR, under the patient's own values)")
    p.add_argument("--samples", type=int, default=None,
                   help="samples per scenario (default: the family's; breast 1, lung 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="sampler steps (model default)")
    p.add_argument("--sampler", choices=SAMPLERS, default=None)
    p.add_argument("--model", type=Path, default=None, help="model folder (default: bundled)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (on every worker)")
    p.add_argument("--no-figure", action="store_true",
                   help="no comparison.png per case (faster)")
    p.add_argument("--out", type=Path, required=True,
                   help="results folder: cases/<patient>/<scenario>/ and batch.csv")
    p.add_argument("--csv", type=Path, default=None, help="the table (default OUT/batch.csv)")
    add_format_option(p, "each case's dicom/ folder")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    add_run_arguments(p)
    p.set_defaults(func=cmd_batch)
