"""``nacsim predict``: ImmunoDiff's response probability and survival risk for one patient
(a CT crop with its lobe and vessel masks and clinical values), a sample patient, or every
patient of a cohort manifest. Needs a lung model with bundled prediction heads
(``<model>/prediction_heads``, made by ``training/evaluate_prediction.py --bundle``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..core.errors import InputError


def _clinical(text: str, family) -> dict:
    """``age=64,sex=male,...`` -> validated clinical values (every model variable)."""
    values = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise InputError(f"--clinical {text!r}", f"{part!r} is not NAME=VALUE")
        values[name.strip()] = value.strip()
    values = family.schema.validate_clinical(values, subject="--clinical", partial=True)
    missing = [v.name for v in family.schema.condition_variables
               if v.derive is None and values.get(v.name) is None]
    if missing:
        raise InputError(f"--clinical field '{missing[0]}'", "is missing (the model is "
                                                             "conditioned on every value)")
    return values


def _row(patient: str, clinical: dict, predictions: dict) -> dict:
    return {"patient": patient, **{f"predicted_{k}": v["value"] for k, v in predictions.items()},
            "clinical": clinical}


def cmd_predict(args) -> int:
    from ..core.atomic import write_json_atomic
    from ..engine import load_model, sample_case
    from ..engine.whatif import model_grid
    from ..science.prediction.predict import has_heads, heads_folder

    chosen = [x is not None for x in (args.input, args.sample, args.manifest)]
    if sum(chosen) != 1:
        raise InputError("predict", "give exactly one of --input FILE, --sample N or "
                                    "--manifest COHORT.json")
    if args.input is not None and not args.clinical:
        raise InputError("--clinical", "is needed with --input (e.g. age=64,sex=male,...)")
    if args.out is not None and args.out.exists() and not args.overwrite:
        raise InputError(args.out, "already exists (choose another output or --overwrite)")
    image = None
    if args.input is not None:
        from ..core.scan_io import read_scan

        image = read_scan(args.input)
    model = load_model(args.model, family="lung", device=args.device)
    family = model.family
    if family.name != "lung":
        raise InputError(model.path, f"is a {family.name} model; predictions need the lung "
                                     "model (ImmunoDiff)")
    if not has_heads(model.path):
        raise InputError(heads_folder(model.path), "not found: this lung model has no "
                                                   "prediction heads (train them with "
                                                   "training/evaluate_prediction.py --bundle)")
    rows = []
    segmenter = []

    def mask_of(grid):
        """The baseline tumour mask (the heads use its measured size), by the family's
        segmenter, loaded once."""
        if not segmenter:
            segmenter.append(family.load_segmenter(device=args.device))
        return segmenter[0].segment(family.to_segmenter(grid))

    if args.input is not None:
        from .simulate import _read_context

        context = _read_context(args.context or [], family)
        clinical = _clinical(args.clinical, family)
        grid = model_grid(model, image)
        rows.append(_row(str(args.input), clinical,
                         family.predictions(model, grid, clinical,
                                            family.require_context(context, grid.shape),
                                            baseline_mask=mask_of(grid))))
    elif args.sample is not None:
        sample = sample_case(args.sample, family=family.name, size=model.image_size)
        inputs = sample["inputs"][family.schema.baseline]
        clinical = {v.name: sample["clinical"][v.name]
                    for v in family.schema.condition_variables if v.derive is None}
        grid = model_grid(model, inputs["image"])
        rows.append(_row(sample["patient"], clinical,
                         family.predictions(model, grid, clinical,
                                            family.model_context(inputs),
                                            baseline_mask=mask_of(grid))))
    else:
        from ..core.cohort import load_cohort, load_timepoint

        cohort = load_cohort(args.manifest)
        if cohort.family.name != family.name:
            raise InputError(args.manifest, f"is a {cohort.family.name} cohort; predictions "
                                            "need a lung cohort")
        base = family.schema.baseline
        for patient in cohort.patients:
            variables = [v for v in family.schema.condition_variables if v.derive is None]
            missing = [v.name for v in variables if patient.clinical.get(v.name) is None]
            if missing or base not in patient.scans:
                why = f"no {missing[0]} value" if missing else f"no {base} scan"
                print(f"skipped {patient.id}: {why}")
                continue
            clinical = {v.name: patient.clinical[v.name] for v in variables}
            prepared = family.model_inputs({base: load_timepoint(patient, base,
                                                                 family.schema)})[base]
            grid = model_grid(model, prepared["image"])
            rows.append(_row(patient.id, clinical,
                             family.predictions(model, grid, clinical,
                                                family.model_context(prepared),
                                                baseline_mask=mask_of(grid))))
        if not rows:
            raise InputError(args.manifest, "has no patient with a baseline scan and every "
                                            "clinical value")
    for row in rows:
        print(f"{row['patient']}: P(response) {row['predicted_response_probability']:.2f}, "
              f"risk {row['predicted_survival_risk']:.2f}× cohort")
    if args.out is not None:
        payload = {"synthetic_model": True, "model": str(model.path),
                   "model_hash": model.model_hash, "predictions": rows,
                   "meaning": {"predicted_response_probability": "probability of RECIST "
                               "response (CR/PR) at 6 weeks",
                               "predicted_survival_risk": "hazard of death relative to the "
                               "heads' training cohort's median patient"}}
        if args.out.suffix == ".csv":
            with open(args.out, "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["patient", "predicted_response_probability",
                                 "predicted_survival_risk", "clinical"])
                for row in rows:
                    writer.writerow([row["patient"], row["predicted_response_probability"],
                                     row["predicted_survival_risk"],
                                     json.dumps(row["clinical"], default=str)])
        else:
            write_json_atomic(args.out, payload)
        print(f"wrote {len(rows)} prediction(s) to {args.out}")
    return 0


def add_predict_command(sub) -> None:
    p = sub.add_parser("predict", help="lung: predicted response probability and survival "
                                       "risk (ImmunoDiff's heads) for a patient or a cohort")
    p.add_argument("--input", type=Path, help="pre-treatment CT crop (`nacsim crop`), NIfTI")
    p.add_argument("--context", action="append", metavar="NAME=FILE",
                   help="lobes=FILE and vessels=FILE: the crops of the lobe and vessel masks")
    p.add_argument("--clinical", help="with --input: age=64,sex=male,race=White,CEA=3.1,"
                                      "ANC=4.2,ALC=1.6,AEC=0.2,AMC=0.5,PD_L1=60")
    p.add_argument("--sample", type=int, help="synthetic sample patient N instead")
    p.add_argument("--manifest", type=Path, help="a lung cohort manifest (cohort.json)")
    p.add_argument("--model", type=Path, default=None,
                   help="lung model folder with prediction_heads/ (default: bundled)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--out", type=Path, default=None, help="write .json or .csv")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_predict)
