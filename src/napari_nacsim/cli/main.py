"""`nacsim` command-line entry point.

Bad input ends the program with exit status 2 and one line on stderr
(``nacsim: error: <file or field>: <problem>``), never a traceback; a failed write with
status 1 (how a command ends on failure is `exits.run_command`'s, shared with the training
scripts).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
import warnings
from pathlib import Path

from .. import __version__
from .exits import EXIT_BAD_INPUT, run_command

# Arguments naming what a command writes: each is checked for writability before the command
# starts, so that a long run does not end in a PermissionError.
OUTPUT_ARGUMENTS = ("out", "labels_out", "tumour_out", "csv")
# Commands that read scans from paths, and so take --dicom-series.
SCAN_READING_COMMANDS = ("info", "register", "mip", "crop", "segment", "measure", "simulate")


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line, like every other nacsim error."""

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _progress(desc: str):
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit="patient", file=sys.stderr, leave=False)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


# --- commands ------------------------------------------------------------------------------

def cmd_phantoms(args) -> int:
    from ..datasets.phantom_cohort import write_phantom_cohort

    start = time.perf_counter()
    manifest = write_phantom_cohort(args.family, args.patients, args.seed, args.out,
                                    overwrite=args.overwrite, jobs=args.jobs,
                                    progress=None if args.quiet else _progress(args.family))
    print(f"wrote {args.patients} synthetic {args.family} patients to {manifest} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_validate(args) -> int:
    from ..core.cohort import check_cohort_images, load_cohort

    cohort = load_cohort(args.manifest)
    if args.read_images:
        check_cohort_images(cohort)
    n_follow = sum(len(p.scans) - 1 for p in cohort.patients)
    print(f"ok: {args.manifest}: {len(cohort.patients)} {cohort.family.name} patients, "
          f"{n_follow} follow-up visits" + (", all images readable" if args.read_images else ""))
    return 0


def cmd_info(args) -> int:
    import numpy as np

    from ..core.dicom import (describe_measurements, dicom_object_kind, read_measurements,
                              read_segmentation)
    from ..core.scan_io import read_scan

    kind = dicom_object_kind(args.path) if args.path.is_file() else None
    if kind == "SR":   # a TID 1500 report (nacsim's export): its measurements
        print(f"{args.path}\n{describe_measurements(read_measurements(args.path))}")
        return 0
    scan = read_segmentation(args.path) if kind == "SEG" else read_scan(args.path)
    arr = scan.array
    finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
    value_range = f"{finite.min():g}..{finite.max():g}" if finite.size else "no finite values"
    print(f"{scan.name}\n  kind: {scan.kind}\n  shape: {scan.shape} ({'zyx' if scan.ndim == 3 else 'yx'})"
          f"\n  spacing: {tuple(round(s, 4) for s in scan.spacing)} mm\n  orientation: "
          f"{scan.orientation}\n  dtype: {arr.dtype}\n  values: {value_range}"
          f"\n  synthetic: {bool(scan.provenance.get('synthetic'))}")
    prov = scan.provenance
    if prov.get("format") == "dicom":
        print(f"  DICOM series: number {prov.get('series_number') or '?'} "
              f"'{prov.get('series_description', '')}', {prov.get('n_files')} files, UID "
              f"{prov.get('series_uid')} ({prov.get('n_series_in_folder')} in the folder)")
    if arr.dtype.kind == "f":  # NaN/Inf voxels: every processing step refuses them
        for label, count in (("NaN", np.count_nonzero(np.isnan(arr))),
                             ("Inf", np.count_nonzero(np.isinf(arr)))):
            if count:
                print(f"  {label} voxels: {count} ({100.0 * count / arr.size:.3g} % of "
                      f"{arr.size})")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(out=args.out, viewer=args.viewer, seed=args.seed, steps=args.steps,
                    family=args.family, fmt=args.format)


# --- parser --------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from ..families import family_names  # CLI choices come from the family registry

    parser = _Parser(prog="nacsim", description="Counterfactual follow-up images for cancer "
                     "treatment response (breast NAC, lung immunotherapy).")
    parser.add_argument("--version", action="version", version=f"nacsim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("phantoms", help="write a synthetic cohort (NIfTI + cohort manifest)")
    p.add_argument("family", choices=family_names())
    p.add_argument("--patients", type=int, default=20, help="number of patients (default 20)")
    p.add_argument("--seed", type=int, default=0, help="cohort seed (default 0)")
    p.add_argument("--out", type=Path, required=True, help="output folder (must be new or empty)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--jobs", type=int, default=None,
                   help="worker processes (default: up to 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_phantoms)

    p = sub.add_parser("validate", help="check a cohort manifest against the clinical schema")
    p.add_argument("manifest", type=Path)
    p.add_argument("--read-images", action="store_true",
                   help="also read every scan and mask and check their grids")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("info", help="show a scan's geometry (NIfTI, DICOM folder, 2D image, "
                                    "DICOM SEG) or a DICOM SR's measurements")
    p.add_argument("path", type=Path)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="the main job on the embedded default (synthetic patient)")
    p.add_argument("--out", type=Path, default=None,
                   help="write the demo outputs here instead of opening napari")
    p.add_argument("--viewer", choices=["auto", "yes", "no"], default="auto",
                   help="open napari (auto: when a display is available and --out is not given)")
    p.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")
    p.add_argument("--steps", type=int, default=None,
                   help="sampler steps (default: the model's default)")
    p.add_argument("--family", choices=family_names(), default=None,
                   help="the sample patient's model family (default: the first with a "
                        "bundled model)")
    from .simulate import add_format_option

    add_format_option(p)
    p.set_defaults(func=cmd_demo)

    from .preprocess import add_preprocess_commands

    add_preprocess_commands(sub)
    from .simulate import add_simulate_commands

    add_simulate_commands(sub)
    from .segment import add_segment_commands

    add_segment_commands(sub)
    from .review import add_review_command

    add_review_command(sub)
    from .batch import add_batch_command

    add_batch_command(sub)
    from .predict import add_predict_command

    add_predict_command(sub)
    for name in SCAN_READING_COMMANDS:
        sub.choices[name].add_argument(
            "--dicom-series", metavar="NUMBER|UID", default=None,
            help="for a DICOM folder holding several series: the series to read (its series "
                 "number or SeriesInstanceUID); or give one of the series' files instead of "
                 "the folder")
    return parser


class _Held(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@contextlib.contextmanager
def _held_warnings():
    """Hold back the Python warnings and log messages of libraries (torch, nibabel, ...)
    during a command: they are shown after a successful run, and dropped when it ends in a
    one-line error, which they would only bury."""
    held = _Held()
    root = logging.getLogger()
    root.addHandler(held)  # a handler on the root keeps logging's last resort (stderr) quiet
    try:
        with warnings.catch_warnings(record=True) as caught:
            yield
    finally:
        root.removeHandler(held)
    for w in caught:  # reached only on success: an exception skips this
        warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)
    for record in held.records:
        logging.getLogger(record.name).handle(record)


def _run(args) -> int:
    from ..core.atomic import require_writable
    from ..core.scan_io import dicom_series

    for dest in OUTPUT_ARGUMENTS:
        if getattr(args, dest, None) is not None:
            require_writable(getattr(args, dest))
    with dicom_series(getattr(args, "dicom_series", None)), _held_warnings():
        return int(args.func(args) or 0)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command("nacsim", lambda: _run(args), atomic=True)


if __name__ == "__main__":
    sys.exit(main())
