"""``nacsim simulate``: generated follow-up images of one case under clinical scenarios."""

from __future__ import annotations

import sys
from pathlib import Path

from ..core.errors import InputError
from ..science.generative.samplers import SAMPLERS


def cmd_simulate(args) -> int:
    from ..core.atomic import write_json_atomic
    from ..core.scan_io import read_scan, write_scan
    from ..engine import load_model, parse_scenario, sample_case, simulate

    if (args.input is None) == (args.sample is None):
        raise InputError("simulate", "give exactly one of --input FILE or --sample N")
    from ..engine.dicom_export import check_exportable, wants

    # read the user's image first: a bad file is refused before seconds of model loading
    image = read_scan(args.input) if args.input is not None else None
    if wants(args.format, "dicom"):
        if image is not None:
            check_exportable(image)   # a DICOM input without what a derived series needs
        folder = Path(args.out) / "dicom"
        if folder.exists() and any(folder.iterdir()) and not args.overwrite:
            raise InputError(folder, "is not empty (choose another --out or --overwrite)")
    model = load_model(args.model, family=args.family, device=args.device)
    family = model.family
    if args.family is not None and args.family != family.name:
        raise InputError(args.model, f"is a {family.name} model, not a {args.family} one")
    if args.input is not None:
        case = {"input": str(args.input)}
        clinical = {}
        context = _read_context(args.context or [], family)
    else:
        sample = sample_case(args.sample, family=family.name, size=model.image_size)
        image = sample["inputs"][family.schema.baseline]["image"]
        context = family.model_context(sample["inputs"][family.schema.baseline])
        case = {"sample_patient": sample["patient"], "cohort_seed": 0}
        clinical = sample["clinical"]
    if args.scenario:
        scenarios = [parse_scenario(t, family) for t in args.scenario]
    elif clinical:
        scenarios = default_scenarios(family, clinical)
    else:
        raise InputError("--scenario", "at least one scenario is needed with --input, e.g. "
                                       f"--scenario {example_scenario(family)}")
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=1, desc="generating", unit="step", file=sys.stderr, leave=False)

    def progress(done, total):
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    generated = simulate(model, image, scenarios, seed=args.seed, steps=args.steps,
                         sampler=args.sampler, guidance_scale=args.guidance,
                         progress=progress, context=context)
    if bar is not None:
        bar.close()
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    written, dicom = [], []
    nifti = wants(args.format, "nifti")
    for k, (scenario, scan) in enumerate(zip(scenarios, generated)):
        flags = "_".join(f"{name}{'pos' if v is True else 'neg' if v is False else v}"
                         for name, v in scenario.items() if name != "time")
        stem = f"synthetic_{k + 1:02d}_{scenario['time']}_{flags}"
        if nifti:
            write_scan(scan, out / f"{stem}.nii.gz", overwrite=args.overwrite)
        written.append({"file": f"{stem}.nii.gz" if nifti else None, "scenario": scenario})
        dicom.append((stem, scan, scan.provenance.get("scenario_text") or stem))
    if args.sample is not None:  # the sample's input, for side-by-side viewing
        if nifti:
            write_scan(image, out / f"input_{family.schema.baseline}.nii.gz",
                       overwrite=args.overwrite)
        dicom.insert(0, (f"input_{family.schema.baseline}", image, "input"))
    if wants(args.format, "dicom"):
        from ..engine.dicom_export import DICOM_FOLDER, write_scans_dicom

        write_scans_dicom(family, image, dicom, out / DICOM_FOLDER, overwrite=args.overwrite)
        for entry, (stem, _, _) in zip(written, dicom[-len(written):]):
            entry["dicom_series"] = f"{DICOM_FOLDER}/{stem}"
    write_json_atomic(out / "simulation.json", {
        "synthetic": True, "case": case, "model": str(model.path),
        "model_hash": model.model_hash, "seed": args.seed, "sampler": generated[0].provenance["sampler"],
        "steps": generated[0].provenance["steps"],
        "guidance_scale": generated[0].provenance["guidance_scale"],
        "device": model.device, "format": args.format, "outputs": written})
    where = {"nifti": "NIfTI", "dicom": "DICOM series in dicom/",
             "both": "NIfTI and DICOM series in dicom/"}[args.format]
    print(f"wrote {len(written)} SYNTHETIC images to {out} as {where} (model "
          f"{model.model_hash[:12]}, seed {args.seed})")
    return 0


def _read_context(items: list[str], family) -> dict:
    """``--context NAME=FILE`` -> name -> label map (the family's extra model inputs)."""
    from ..core.scan_io import read_scan

    context = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or name not in family.context_inputs:
            known = ", ".join(family.context_inputs) or "none"
            raise InputError(f"--context {item!r}", f"expected NAME=FILE with NAME one of the "
                                                    f"{family.name} model's inputs ({known})")
        context[name] = read_scan(Path(path), kind="labels")
    return context


def default_scenarios(family, clinical) -> list[dict]:
    """A sample patient's scenarios: its own clinical values under each arm of the family's
    default comparison (breast: pCR and non-pCR), at every follow-up time."""
    from ..science.generative.conditioning import TIME_FACTOR, normalise_scenario

    own = {v.name: clinical[v.name] for v in family.schema.condition_variables
           if v.derive is None and v.name in clinical}
    comparison = family.default_comparison()
    arms = [{comparison.variable.name: value} for value in comparison.values] \
        if comparison is not None else [{}]
    return [normalise_scenario(family.schema, {TIME_FACTOR: tp, **own, **arm})
            for tp in family.followup_times for arm in arms]


def example_scenario(family) -> str:
    """``time=T2,pCR=yes,HR=+,HER2=-``: a scenario in the syntax of --scenario."""
    from ..core.schema import BINARY, CATEGORICAL

    parts = [f"time={family.followup_times[-1]}"]
    for var in family.schema.condition_variables:
        if var.derive is not None:
            continue
        if var.kind == BINARY:
            parts.append(f"{var.name}=yes")
        elif var.kind == CATEGORICAL:
            parts.append(f"{var.name}={var.categories[0]}")
        else:
            lo, hi = var.normal or var.plausible or (0.0, 1.0)
            parts.append(f"{var.name}={(lo + hi) / 2:g}")
    return ",".join(parts)


def add_simulate_commands(sub) -> None:
    from ..families import family_names

    p = sub.add_parser("simulate", help="generate follow-up images under clinical scenarios "
                                        "(synthetic, labelled as such)")
    p.add_argument("--family", choices=family_names(), default=None,
                   help="model family (default: the model's; without --model, the first "
                        "family with a bundled model)")
    p.add_argument("--input", type=Path, help="pre-treatment model input (breast: the 2D "
                                              "MIP of `nacsim mip`; lung: the CT crop of "
                                              "`nacsim crop`), NIfTI")
    p.add_argument("--context", action="append", metavar="NAME=FILE",
                   help="an extra model input of --input on its grid (lung: lobes=FILE and "
                        "vessels=FILE, the crops of the lobe and vessel masks)")
    p.add_argument("--sample", type=int, help="use synthetic sample patient N instead")
    p.add_argument("--scenario", action="append",
                   help="e.g. time=T2,pCR=yes,HR=+,HER2=- (repeat for several; default for "
                        "--sample: pCR and non-pCR at every follow-up)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="sampler steps (model default)")
    p.add_argument("--sampler", choices=SAMPLERS, default=None,
                   help="(ddpm: the long ancestral sampler)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (1 = none; default: the model's, "
                        "from its model card)")
    p.add_argument("--model", type=Path, default=None, help="model folder (default: bundled)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--out", type=Path, required=True)
    add_format_option(p)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_simulate)


def add_format_option(p, where: str = "OUT/dicom/") -> None:
    """``--format nifti|dicom|both`` (docs/dicom.md); ``where``: the DICOM folder."""
    p.add_argument("--format", choices=["nifti", "dicom", "both"], default="nifti",
                   help="image format: NIfTI files with provenance sidecars (default), "
                        "DICOM series (with tumour SEGs and a TID 1500 size report where "
                        f"masks are made) in {where}, or both; see docs/dicom.md")
