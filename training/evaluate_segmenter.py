#!/usr/bin/env python
"""Dice of a tumour segmenter on held-out synthetic patients, per visit (time point).

Renders phantom patients of a cohort seed the model was not trained on, runs nacsim's
preprocessing (registration, MIP / crop) on every visit, segments the model input and
compares with the phantom's true tumour mask. Reported per time point: mean / median / worst
Dice over visits that have a tumour, the share of visits at Dice >= 0.85, and the tumour-size
error (predicted vs true size, and the symmetric match of `measure.match_percent`).

Dice definition: 2|P∩T| / (|P| + |T|) per visit whose true mask is not empty; a tumour the
model misses entirely scores 0. A visit with an empty true mask (the tumour vanished) has no
Dice in the means: such visits are counted apart, with how many predictions were empty too
(Dice 1 under the usual "both empty = 1" convention) and the mean false-positive area.
``--lesion-free M`` also segments the first M held-out patients rendered with no tumour at
any visit (the same anatomy, `BreastPhantom.render(tumour=False)`) and reports the
false-positive area per time point, apart from the Dice.

    python training/evaluate_segmenter.py --family breast --phantoms 16 --seed 7000 \\
        --out docs/segmentation-eval-breast.json
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
from pathlib import Path

TARGET_DICE = 0.85
# True tumour size bins for the breakdown (mm² on breast MIPs, mL on lung crops).
def _input_ndim(family: str) -> int:
    from napari_nacsim.families import get_family

    return get_family(family).segmenter_input.ndim


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evaluate_segmenter.py",
                                description=__doc__.split("\n\n")[0])
    from napari_nacsim.families import family_names

    p.add_argument("--family", choices=family_names(), required=True)
    p.add_argument("--model", type=Path, default=None, help="model folder (default: bundled)")
    p.add_argument("--trust-pickle", action="store_true")
    p.add_argument("--phantoms", type=int, default=16, help="held-out patients (default 16)")
    p.add_argument("--seed", type=int, default=7000, help="held-out cohort seed (default 7000)")
    p.add_argument("--lesion-free", type=int, default=0, metavar="M",
                   help="breast: also segment the first M held-out patients rendered with no "
                        "tumour and report false positives (default 0)")
    p.add_argument("--size", type=int, default=128, help="breast MIP size (default 128)")
    p.add_argument("--jobs", type=int, default=None, help="processes preparing cases")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    p.add_argument("--record", action="store_true",
                   help="record the Dice per time point in the model card (model.json)")
    return p


def record_in_card(folder: Path, result: dict, out: Path | None) -> None:
    """Metrics go into model.json, which holds the other files' hashes and is not hashed
    itself, so recording them does not invalidate the model."""
    from napari_nacsim.core.atomic import write_json_atomic
    from napari_nacsim.science.segmentation.model_files import CARD, verify_files

    card = verify_files(folder)
    card["metrics"] = {
        "held_out_dice_mean": {tp: s["dice_mean"] for tp, s in result["per_timepoint"].items()
                               if s["with_tumour"]},
        "held_out_dice_median": {tp: s["dice_median"]
                                 for tp, s in result["per_timepoint"].items()
                                 if s["with_tumour"]},
        "held_out_data": result["held_out"],
        "held_out_lesion_free": result["lesion_free"]["all"] if result["lesion_free"] else None,
        "command": result["command"], "date": result["date"],
        "details": str(out) if out else None,
    }
    write_json_atomic(folder / CARD, card)


def _summary(rows: list[dict]) -> dict:
    import numpy as np

    scored = [r for r in rows if r["true_size"] > 0]
    empty = [r for r in rows if r["true_size"] == 0]
    dices = np.array([r["dice"] for r in scored], dtype=float)
    size_err = np.array([100.0 * (r["predicted_size"] - r["true_size"]) / r["true_size"]
                         for r in scored], dtype=float)
    out = {
        "visits": len(rows), "with_tumour": len(scored), "tumour_vanished": len(empty),
        "dice_mean": float(dices.mean()) if len(dices) else None,
        "dice_median": float(np.median(dices)) if len(dices) else None,
        "dice_min": float(dices.min()) if len(dices) else None,
        "share_dice_at_least_0.85": float((dices >= TARGET_DICE).mean()) if len(dices) else None,
        "size_error_percent_mean": float(size_err.mean()) if len(size_err) else None,
        "size_error_percent_mean_abs": float(np.abs(size_err).mean()) if len(size_err) else None,
        "size_match_percent_median": float(np.median([r["match_percent"] for r in scored]))
        if scored else None,
        "median_true_size": float(np.median([r["true_size"] for r in scored])) if scored
        else None,
    }
    if empty:
        out["vanished_predicted_empty"] = sum(1 for r in empty if r["predicted_size"] == 0)
        out["vanished_false_positive_size_mean"] = float(np.mean([r["predicted_size"]
                                                                   for r in empty]))
    return out


def _false_positives(rows: list[dict]) -> dict:
    """Lesion-free visits: how often and how much the model marks anyway."""
    import numpy as np

    sizes = [r["predicted_size"] for r in rows]
    return {"visits": len(rows), "with_false_positive": sum(1 for v in sizes if v > 0),
            "false_positive_size_mean": float(np.mean(sizes)) if sizes else None,
            "false_positive_size_max": float(np.max(sizes)) if sizes else None}


def _by_size(rows: list[dict], edges: tuple[float, ...]) -> dict:
    """Mean Dice per true-size bin: where the misses are (visits with a tumour only)."""
    out = {}
    for low, high in zip(edges[:-1], edges[1:]):
        inside = [r for r in rows if r["true_size"] > 0 and low <= r["true_size"] < high]
        label = f"{low:g}-{high:g}" if high != float("inf") else f">={low:g}"
        out[label] = {"visits": len(inside),
                      "dice_mean": (sum(r["dice"] for r in inside) / len(inside)) if inside
                      else None,
                      "missed": sum(1 for r in inside if r["predicted_size"] == 0)}
    return out


def main(argv: list[str] | None = None) -> int:
    from napari_nacsim.cli.exits import run_command

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    return run_command("evaluate_segmenter", lambda: _run(args, argv), atomic=True)


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    from napari_nacsim.core.atomic import write_json_atomic
    from napari_nacsim.core.errors import InputError
    from napari_nacsim.core.schema import family_schema
    from napari_nacsim.science.measure import dice, format_size, match_percent, measure_tumour
    from napari_nacsim.datasets.segmentation_cases import phantom_cases
    from napari_nacsim.families import get_family

    segmenter = get_family(args.family).load_segmenter(
        args.model, trust_pickle=args.trust_pickle, device=args.device)
    training = (segmenter.model.card.get("training") or {}).get("data") or {}
    if training.get("source") == "nacsim phantoms" and training.get("seed") == args.seed:
        raise InputError("--seed", f"{args.seed} is the seed the model was trained on; "
                                   "held-out patients need another seed")
    started = time.time()
    if args.lesion_free < 0:
        raise InputError("--lesion-free", f"{args.lesion_free} must be >= 0")
    cases = phantom_cases(args.family, args.phantoms, args.seed, size=args.size,
                          jobs=args.jobs)
    free_cases = phantom_cases(args.family, args.lesion_free, args.seed, size=args.size,
                               jobs=args.jobs, lesion_free=True) if args.lesion_free else []
    prepared = time.time() - started

    rows = []
    t0 = time.time()
    for case in cases:
        mask = segmenter.segment(case.image)
        predicted, true = measure_tumour(mask), measure_tumour(case.label)
        overlap = dice(mask.array, case.label.array)  # NaN when both masks are empty
        rows.append({"case": case.case_id, "patient": case.patient_id,
                     "timepoint": case.timepoint,
                     "dice": None if overlap != overlap else overlap,
                     "true_size": true.total, "predicted_size": predicted.total,
                     "unit": true.unit, "match_percent": match_percent(predicted.total,
                                                                       true.total)})
    segment_s = time.time() - t0
    free_rows = []
    for case in free_cases:
        free_rows.append({"case": case.case_id, "timepoint": case.timepoint,
                          "predicted_size": measure_tumour(segmenter.segment(case.image)).total})

    schema = family_schema(args.family)
    per_tp = {tp: _summary([r for r in rows if r["timepoint"] == tp])
              for tp in schema.timepoint_names}
    result = {
        "command": "python training/evaluate_segmenter.py " + shlex.join(argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "family": args.family, "model": segmenter.describe(),
        "model_training_data": training,
        "held_out": {"source": "nacsim phantoms", "seed": args.seed, "patients": args.phantoms,
                     "mip_size": args.size if _input_ndim(args.family) == 2 else None,
                     "lesion_free_patients": args.lesion_free},
        "target_dice": TARGET_DICE,
        "per_timepoint": per_tp, "all": _summary(rows),
        "by_true_size": _by_size(rows, get_family(args.family).size_bins),
        "lesion_free": ({"patients": args.lesion_free, "note": "the first patients of the "
                         "held-out seed rendered with no tumour; not part of the Dice",
                         "per_timepoint": {tp: _false_positives([r for r in free_rows
                                                                 if r["timepoint"] == tp])
                                           for tp in schema.timepoint_names},
                         "all": _false_positives(free_rows), "cases": free_rows}
                        if free_rows else None),
        "meets_target": all((s["dice_mean"] or 0) >= TARGET_DICE for s in per_tp.values()
                            if s["with_tumour"]),
        "seconds": {"prepare_cases": round(prepared, 1), "segment_all": round(segment_s, 1),
                    "per_image": round(segment_s / max(1, len(rows)), 3)},
        "cases": rows,
    }
    if args.out:
        write_json_atomic(args.out, result)
    if args.record:
        try:
            record_in_card(segmenter.model.source, result, args.out)
        except InputError as err:
            raise InputError("--record", f"cannot record in the model card: {err}") from err
    unit = rows[0]["unit"] if rows else ""
    print(f"{args.family}: {len(rows)} visits of {args.phantoms} held-out patients "
          f"(seed {args.seed})")
    print("| time point | visits with tumour | mean Dice | median | min | >= 0.85 | "
          "mean abs size error | vanished |")
    print("|---|---|---|---|---|---|---|---|")
    for tp, s in per_tp.items():
        if not s["visits"]:
            continue
        print(f"| {tp} | {s['with_tumour']} | {s['dice_mean']:.3f} | {s['dice_median']:.3f} | "
              f"{s['dice_min']:.3f} | {100 * s['share_dice_at_least_0.85']:.0f} % | "
              f"{s['size_error_percent_mean_abs']:.1f} % | {s['tumour_vanished']} |")
    for label, b in result["by_true_size"].items():
        if b["visits"]:
            print(f"true size {label} {unit}: {b['visits']} visits, mean Dice "
                  f"{b['dice_mean']:.3f}, {b['missed']} missed entirely")
    if free_rows:
        for tp, fp in result["lesion_free"]["per_timepoint"].items():
            sizes = "" if fp["false_positive_size_mean"] is None else \
                (f", mean {format_size(fp['false_positive_size_mean'], unit)} "
                 f"(max {format_size(fp['false_positive_size_max'])})")
            print(f"lesion-free {tp}: {fp['with_false_positive']} of {fp['visits']} visits with "
                  f"a false positive{sizes}")
    print(f"target mean Dice >= {TARGET_DICE} at every time point: "
          f"{'met' if result['meets_target'] else 'NOT met'} ({unit} sizes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
