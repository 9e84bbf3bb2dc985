"""``nacsim review``: the cohort inspector without a viewer — run the model over a cohort
manifest with real follow-ups and write the per-case metrics as CSV (the same engine and
columns as the napari inspector)."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import InputError


def cmd_review(args) -> int:
    from ..engine.cohort_review import (cases_to_csv, describe_summary, review_cohort,
                                        summarise)
    from ..engine.whatif import load_model

    if args.csv.exists() and not args.overwrite:
        raise InputError(args.csv, "already exists (choose another output or --overwrite)")
    model = load_model(args.model) if args.model else None
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=1, desc="reviewing", unit="step")

    def progress(done: int, total: int, what: str = "") -> None:
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.set_postfix_str(what[:40], refresh=True)

    review = review_cohort(args.manifest, model=model, seed=args.seed, steps=args.steps,
                           sampler=args.sampler, progress=progress)
    cases = list(review)
    if bar is not None:
        bar.close()
    if not cases:
        raise InputError(args.manifest, "has no patient with a follow-up scan to compare with")
    cases_to_csv(cases, args.csv)
    print(describe_summary(summarise(cases)))
    for skipped in review.skipped:
        print(f"skipped {skipped.patient}: {skipped.reason}")
    worst = sorted(cases, key=lambda c: c.metrics.get("ssim") or 0.0)[:3]
    print("lowest SSIM: " + ", ".join(f"{c.patient} {c.time} ({c.metrics['ssim']:.2f})"
                                      for c in worst))
    print(f"wrote {len(cases)} cases to {args.csv}")
    return 0


def add_review_command(sub) -> None:
    p = sub.add_parser("review", help="run the model over a cohort with real follow-ups; "
                                      "per-case metrics as CSV (the inspector, headless)")
    p.add_argument("manifest", type=Path, help="cohort manifest (cohort.json)")
    p.add_argument("--csv", type=Path, required=True, help="output table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="sampler steps (model default)")
    p.add_argument("--sampler", choices=["ddim", "dpmpp", "unipc"], default=None)
    p.add_argument("--model", type=Path, default=None, help="model folder (default: bundled)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_review)
