"""``nacsim simulate``: generated follow-up images of one case under clinical scenarios."""

from __future__ import annotations

import sys
from pathlib import Path

from ..core.errors import InputError


def cmd_simulate(args) -> int:
    from ..core.atomic import write_json_atomic
    from ..core.scan_io import read_scan, write_scan
    from ..engine import load_model, parse_scenario, sample_case, simulate

    if (args.input is None) == (args.sample is None):
        raise InputError("simulate", "give exactly one of --input FILE or --sample N")
    model = load_model(args.model, device=args.device)
    if args.input is not None:
        image = read_scan(args.input)
        case = {"input": str(args.input)}
        clinical = {}
    else:
        sample = sample_case(args.sample, size=model.image_size)
        image = sample["mips"]["T0"]["mip"]
        case = {"sample_patient": sample["patient"], "cohort_seed": 0}
        clinical = sample["clinical"]
    texts = args.scenario or []
    if not texts:
        if not clinical:
            raise InputError("--scenario", "at least one scenario is needed with --input, "
                                           "e.g. --scenario time=T2,pCR=yes,HR=+,HER2=-")
        # A sample patient: its own factors, pCR and non-pCR at every follow-up time.
        texts = [f"time={t},pCR={p},HR={clinical['HR']},HER2={clinical['HER2']}"
                 for t in model.family.timepoint_names[1:] for p in ("yes", "no")]
    scenarios = [parse_scenario(t, model.family) for t in texts]
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
                         progress=progress)
    if bar is not None:
        bar.close()
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    written = []
    for k, (scenario, scan) in enumerate(zip(scenarios, generated)):
        flags = "_".join(f"{name}{'pos' if v is True else 'neg' if v is False else v}"
                         for name, v in scenario.items() if name != "time")
        path = out / f"synthetic_{k + 1:02d}_{scenario['time']}_{flags}.nii.gz"
        write_scan(scan, path, overwrite=args.overwrite)
        written.append({"file": path.name, "scenario": scenario})
    if args.sample is not None:  # the sample's input, for side-by-side viewing
        write_scan(image, out / "input_T0.nii.gz", overwrite=args.overwrite)
    write_json_atomic(out / "simulation.json", {
        "synthetic": True, "case": case, "model": str(model.path),
        "model_hash": model.model_hash, "seed": args.seed, "sampler": generated[0].provenance["sampler"],
        "steps": generated[0].provenance["steps"],
        "guidance_scale": generated[0].provenance["guidance_scale"],
        "device": model.device, "outputs": written})
    print(f"wrote {len(written)} SYNTHETIC images to {out} (model {model.model_hash[:12]}, "
          f"seed {args.seed})")
    return 0


def add_simulate_commands(sub) -> None:
    p = sub.add_parser("simulate", help="generate follow-up images under clinical scenarios "
                                        "(synthetic, labelled as such)")
    p.add_argument("--input", type=Path, help="pre-treatment model input (2D MIP, NIfTI)")
    p.add_argument("--sample", type=int, help="use synthetic sample patient N instead")
    p.add_argument("--scenario", action="append",
                   help="e.g. time=T2,pCR=yes,HR=+,HER2=- (repeat for several; default for "
                        "--sample: pCR and non-pCR at every follow-up)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="sampler steps (model default)")
    p.add_argument("--sampler", choices=["ddim", "dpmpp", "unipc"], default=None)
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (1 = none; default: the model's, "
                        "from its model card)")
    p.add_argument("--model", type=Path, default=None, help="model folder (default: bundled)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_simulate)
