"""Evaluate the lung model's response on held-out phantoms through the public API.

    python training/evaluate_lung_response.py --patients 60 --samples 8 \
        --out artifacts/lung_response_eval

What a researcher would do: `engine.load_model` + the bundled segmenter in a
`WhatIfSession`; per patient of a cohort seed the model never saw (default 1; training used
0, the heads 2), the truth-aligned pre-treatment crop and its masks (`immunodiff.data`), and
one request with the patient's own clinical values and ``--samples`` samples. Each sample's
response is drawn from the heads' P(response) (abduction: u from the sample's seed) and its
crop generated for it; the session segments every generated crop with the bundled nnU-Net
(the measure the product shows). Reported (``results.json`` + ``results.md``):

- **share vs the phantom's probability** over (patient, scenario), scenarios = factual,
  PD-L1 0 % and PD-L1 80 % (all else fixed): calibration error over 5 bins of p (the
  share's mean against p's mean per bin, weighted by the bin's count), mean share against
  mean probability per PD-L1 stratum, Spearman, and the Spearman a *perfect sampler* reaches
  with the same counts (shares drawn Binomial(samples, p) / samples, 200 repetitions).
  The shares under PD-L1 0 and 80 % come from the same session draws (`choose_outcome` with
  the family's predictions: what `WhatIfSession.run` draws), without generating images.
- **direction**: share(PD-L1 80 %) >= share(0 %) for every patient, and the fraction of
  patients whose share rises among those whose phantom probability rises by >= 0.15.
- **the image obeys its outcome**: the RECIST category measured on each generated crop
  (segmenter, longest diameter vs the baseline's) agrees with the outcome drawn (responder
  <=> CR/PR); the responders' measured diameter change against the phantom's own change
  under a response for the same patient (mean; share of complete responses).
- **image quality** (factual): SSIM (3D, lung window) of each sample against the true
  follow-up, beside the copied pre-treatment crop; adjacent-slice |difference| (HU)
  generated vs real; MMD² generated vs real.
- **implicit mode** (a model without the outcome input, e.g. `lung_tiny_implicit` or v3):
  the share is the RECIST-measured responders among the generated samples, and the two
  PD-L1 scenarios are generated as arms of the same request (3× the generation).
- **heads**: the heads' P(response) against the phantom's p (mean absolute difference,
  Spearman), Brier score of the heads against the phantom's actual responses.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_lung import mmd2, ssim3d, z_step  # noqa: E402  (one definition of each)

STRATA = (("<1 %", 0.0, 1.0), ("1-49 %", 1.0, 50.0), (">=50 %", 50.0, 101.0))
RESPONSE = ("CR", "PR")  # RECIST categories that count as a response


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="model folder (default: bundled)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cohort-seed", type=int, default=1)
    p.add_argument("--patients", type=int, default=60)
    p.add_argument("--first", type=int, default=0, help="first patient index")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pdl1", default="0,80", help="the two PD-L1 values of the direction test")
    return p


def calibration_error(p: np.ndarray, share: np.ndarray, bins: int = 5) -> float:
    """Expected calibration error of the shares against p: equal-width bins of p, the
    |mean share - mean p| of each bin weighted by its count (as scikit-learn's
    `calibration_curve` bins, which gives the per-bin means but not the weighting)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    err = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            err += sel.mean() * abs(share[sel].mean() - p[sel].mean())
    return float(err)


def perfect_sampler_spearman(p: np.ndarray, samples: int, reps: int = 200,
                             seed: int = 0) -> float:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(seed)
    return float(np.mean([spearmanr(rng.binomial(samples, p) / samples, p).statistic
                          for _ in range(reps)]))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import torch
    from scipy.stats import spearmanr

    from napari_nacsim.engine import WhatIfRequest, WhatIfSession, load_model
    from napari_nacsim.families import get_family
    from napari_nacsim.science.generative.immunodiff.data import truth_aligned_inputs
    from napari_nacsim.science.generative.card import outcome_inputs
    from napari_nacsim.science.generative.outcome import choose_outcome

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    family = get_family("lung")
    schema = family.schema
    model = load_model(args.model, family="lung", device="cpu")
    session = WhatIfSession(model, family.load_segmenter(device="cpu"))
    low, high = (float(v) for v in args.pdl1.split(","))
    implicit = "responder" not in outcome_inputs(model.card["config"])
    args.out.mkdir(parents=True, exist_ok=True)
    rows, generated, real = [], [], []
    started = time.perf_counter()
    for index in range(args.first, args.first + args.patients):
        phantom = family.make_phantom(args.cohort_seed, index)
        rendering = phantom.render()
        inputs = truth_aligned_inputs(family, rendering)
        pre, post = inputs[schema.baseline], inputs["post"]
        context = {name: pre[name] for name in family.context_inputs}
        clinical = {k: v for k, v in rendering.clinical.items()
                    if schema.variable(k).conditions_model}
        if implicit:
            # the paper's mode: the response is whatever the diffusion renders, so the two
            # PD-L1 scenarios are generated too (arms share each sample's starting noise)
            request = WhatIfRequest(clinical=clinical, target="post", compare="PD_L1",
                                    compare_values=(clinical["PD_L1"], low, high),
                                    samples=args.samples, seed=args.seed)
        else:
            request = WhatIfRequest(clinical=clinical, target="post", compare=None,
                                    samples=args.samples, seed=args.seed)
        result = session.run(pre["image"], request, context=context)
        arm = result.arms[0]
        follow = arm.followups["post"]
        recist = follow.recist_per_sample()
        if implicit:
            p_head = None
            drawn = [category in RESPONSE for category in recist]
        else:
            p_head = arm.predictions["response_probability"]["value"]
            drawn = [bool(d[0].value) for d in follow.outcomes]
        base_d = result.baseline_size.diameter
        changes = [100.0 * (s.diameter - base_d) / base_d if base_d > 0 else float("nan")
                   for s in follow.sizes]
        crops = [np.asarray(s.array) for s in follow.samples]
        truth_post = np.asarray(post["image"].array)
        generated.append(crops[0])
        real.append(truth_post)
        if_responding = phantom.outcome({"responder": True})
        row = {"patient": phantom.id, "index": index, "pd_l1": clinical["PD_L1"],
               "p_phantom": float(rendering.truth["response_probability"]),
               "responder_actual": bool(rendering.truth["responder"]),
               "p_head": p_head, "drawn": drawn, "recist": recist,
               "diameter_change": changes,
               "phantom_change_if_responding": if_responding.diameter_change_percent,
               "phantom_recist_if_responding": if_responding.recist,
               "ssim": [ssim3d(c, truth_post) for c in crops],
               "ssim_copy": ssim3d(np.asarray(pre["image"].array), truth_post),
               "z_step": [z_step(c) for c in crops], "z_step_real": z_step(truth_post),
               "scenarios": {}}
        # the direction test: PD-L1 low / high, all else fixed, the same samples' u
        for k, value in enumerate((low, high)):
            if implicit:
                measured = result.arms[1 + k].followups["post"].recist_per_sample()
                row["scenarios"][f"{value:g}"] = {
                    "p_head": None,
                    "share": float(np.mean([c in RESPONSE for c in measured])),
                    "p_phantom": float(phantom.outcome({"PD_L1": value}).response_probability)}
                continue
            scen = {**clinical, "PD_L1": value}
            scen = schema.validate_clinical({k: v for k, v in scen.items()
                                             if schema.variable(k).derive is None},
                                            subject="scenario", partial=True)
            predicted = family.predictions(model, result.baseline, scen, session._context,
                                           baseline_mask=result.baseline_mask)
            p = family.outcome_probability("responder", predicted)
            share = float(np.mean([choose_outcome("responder", args.seed + k, p).value
                                   for k in range(args.samples)]))
            row["scenarios"][f"{value:g}"] = {
                "p_head": p, "share": share,
                "p_phantom": float(phantom.outcome({"PD_L1": value}).response_probability)}
        rows.append(row)
        print(f"{len(rows)}/{args.patients} {phantom.id} p {row['p_phantom']:.2f} head "
              f"{p_head:.2f} drawn {sum(drawn)}/{len(drawn)} recist {recist} "
              f"ssim {np.mean(row['ssim']):.3f} ({time.perf_counter() - started:.0f} s)",
              flush=True)
        (args.out / "rows.json").write_text(json.dumps(rows, indent=1))

    result = summarise(rows, args, generated, real, spearmanr)
    result["model"] = {"path": str(model.path), "model_hash": model.model_hash}
    result["seconds"] = round(time.perf_counter() - started, 1)
    (args.out / "results.json").write_text(json.dumps(result, indent=1, default=float))
    (args.out / "results.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def summarise(rows, args, generated, real, spearmanr) -> dict:
    s = args.samples
    # (patient, scenario) pairs: factual + the two PD-L1 values
    p_all, share_all, pdl1_all = [], [], []
    for r in rows:
        p_all.append(r["p_phantom"])
        share_all.append(float(np.mean(r["drawn"])))
        pdl1_all.append(r["pd_l1"])
        for value, sc in r["scenarios"].items():
            p_all.append(sc["p_phantom"])
            share_all.append(sc["share"])
            pdl1_all.append(float(value))
    p_all, share_all, pdl1_all = map(np.asarray, (p_all, share_all, pdl1_all))
    strata = {}
    for name, lo, hi in STRATA:
        sel = (pdl1_all >= lo) & (pdl1_all < hi)
        if sel.any():
            strata[name] = {"n": int(sel.sum()), "mean_share": float(share_all[sel].mean()),
                            "mean_probability": float(p_all[sel].mean()),
                            "difference_points": float(100 * (share_all[sel].mean()
                                                              - p_all[sel].mean()))}
    low, high = (f"{float(v):g}" for v in args.pdl1.split(","))
    never_lower = all(r["scenarios"][high]["share"] >= r["scenarios"][low]["share"]
                      for r in rows)
    rising = [r["scenarios"][high]["share"] > r["scenarios"][low]["share"] for r in rows
              if r["scenarios"][high]["p_phantom"] - r["scenarios"][low]["p_phantom"] >= 0.15]
    implicit = rows[0]["p_head"] is None
    agree, resp_changes, cr = [], [], []
    for r in rows:
        for drawn, category, change in zip(r["drawn"], r["recist"], r["diameter_change"]):
            agree.append(drawn == (category in RESPONSE))
            if drawn:
                resp_changes.append(change)
                cr.append(category == "CR")
    phantom_resp = [r["phantom_change_if_responding"] for r in rows]
    heads_p = np.array([np.nan if implicit else r["p_head"] for r in rows], float)
    phantom_p = np.array([r["p_phantom"] for r in rows])
    actual = np.array([r["responder_actual"] for r in rows], float)
    z_gen = float(np.mean([np.mean(r["z_step"]) for r in rows]))
    z_real = float(np.mean([r["z_step_real"] for r in rows]))
    return {
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "cohort_seed": args.cohort_seed, "patients": len(rows), "samples": s,
        "seed": args.seed,
        "share_vs_probability": {
            "pairs": int(len(p_all)),
            "calibration_error_5_bins": calibration_error(p_all, share_all),
            "spearman": float(spearmanr(share_all, p_all).statistic),
            "spearman_perfect_sampler": perfect_sampler_spearman(p_all, s),
            "strata": strata},
        "direction": {"never_lower": bool(never_lower),
                      "patients_probability_rises_0_15": len(rising),
                      "share_rises_fraction": float(np.mean(rising)) if rising else None},
        "image_obeys_outcome": {
            # implicit: the outcome *is* the measured category, so agreement is not a test
            "samples": len(agree), "recist_agrees_with_drawn": None if implicit
            else float(np.mean(agree)),
            "responders_mean_diameter_change": float(np.nanmean(resp_changes))
            if resp_changes else None,
            "phantom_mean_change_if_responding": float(np.mean(phantom_resp)),
            "responders_complete_share": float(np.mean(cr)) if cr else None,
            "phantom_complete_share_of_responders": float(np.mean(
                [r["phantom_recist_if_responding"] == "CR" for r in rows]))},
        "image_quality": {
            "ssim_factual": float(np.mean([np.mean(r["ssim"]) for r in rows])),
            "ssim_copy_pre": float(np.mean([r["ssim_copy"] for r in rows])),
            "z_step_generated": z_gen, "z_step_real": z_real,
            "z_step_ratio": z_gen / z_real,
            "mmd2_generated": mmd2(generated, real) if len(rows) > 2 else None},
        "mode": "implicit (the share is what the diffusion renders)" if implicit else
                "outcome input (drawn from the heads' P(response), rendered for it)",
        "heads": None if implicit else {
            "mean_abs_difference_vs_phantom_p": float(np.mean(np.abs(heads_p - phantom_p))),
            "spearman_vs_phantom_p": float(spearmanr(heads_p, phantom_p).statistic)
            if len(rows) > 2 else None,
            "brier_vs_actual": float(np.mean((heads_p - actual) ** 2)),
            "phantom_brier_vs_actual": float(np.mean((phantom_p - actual) ** 2))},
    }


def _fmt(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown(result) -> str:
    sv, d, io, iq, h = (result[k] for k in ("share_vs_probability", "direction",
                                             "image_obeys_outcome", "image_quality", "heads"))
    lines = [f"Cohort seed {result['cohort_seed']}, {result['patients']} patients, "
             f"{result['samples']} samples each (seeds {result['seed']}.."
             f"{result['seed'] + result['samples'] - 1}); model {result['model']['model_hash'][:12]}; "
             f"mode: {result['mode']}",
             "",
             "| measure | value | target |", "|---|---|---|",
             f"| calibration error (5 bins), share vs phantom p | "
             f"{sv['calibration_error_5_bins']:.3f} | <= 0.05 |",
             f"| Spearman share vs p (perfect sampler) | {sv['spearman']:.3f} "
             f"({sv['spearman_perfect_sampler']:.3f}) | >= 90 % of the perfect sampler |",
             f"| share never lower at PD-L1 80 % than 0 % | {d['never_lower']} | yes |",
             f"| share rises where p rises >= 0.15 | {d['share_rises_fraction']} of "
             f"{d['patients_probability_rises_0_15']} | >= 0.9 |",
             f"| RECIST on generated crop agrees with drawn outcome | "
             f"{_fmt(io['recist_agrees_with_drawn'])} ({io['samples']} samples) | >= 0.9 |",
             f"| responders' diameter change, generated vs phantom | "
             f"{io['responders_mean_diameter_change']} vs "
             f"{io['phantom_mean_change_if_responding']:.1f} % | within 5 points |",
             f"| complete responses among responders, generated vs phantom | "
             f"{io['responders_complete_share']} vs "
             f"{io['phantom_complete_share_of_responders']:.2f} | as often |",
             f"| SSIM factual (copy of pre-treatment crop) | {iq['ssim_factual']:.3f} "
             f"({iq['ssim_copy_pre']:.3f}) | >= the copy |",
             f"| adjacent-slice HU generated / real | {iq['z_step_generated']:.1f} / "
             f"{iq['z_step_real']:.1f} | within 10 % |",
             f"| MMD² generated vs real | {iq['mmd2_generated']} | reported |",
             ] + ([] if h is None else [
             f"| heads: mean abs(P - phantom p), Spearman | "
             f"{h['mean_abs_difference_vs_phantom_p']:.3f}, {h['spearman_vs_phantom_p']} | |",
             f"| heads Brier vs actual (phantom p's Brier) | {h['brier_vs_actual']:.3f} "
             f"({h['phantom_brier_vs_actual']:.3f}) | |"]) + [
             "", "| PD-L1 stratum | n | mean share | mean p | difference (points) |",
             "|---|---|---|---|---|"]
    for name, st in sv["strata"].items():
        lines.append(f"| {name} | {st['n']} | {st['mean_share']:.3f} | "
                     f"{st['mean_probability']:.3f} | {st['difference_points']:+.1f} |")
    lines += ["", f"Command: `{result['command']}` ({result['seconds']} s)"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
