"""Evaluate a NAC model on held-out patients: by default those of its training split; or
every patient of another synthetic cohort (``--cohort-seed S --patients N``, a seed the
training never used); or the patients of a cohort manifest (``--cohort cohort.json``).

    python training/evaluate_nac.py --out artifacts/eval/dpmpp20 --sampler dpmpp --steps 20
    python training/evaluate_nac.py --cohort-seed 9100 --patients 48 --out artifacts/eval/s9100

Per target time (T1, T2) and pCR group: PSNR, SSIM (scikit-image, data range 1), tumour size
reduction vs T0 of generated and real follow-ups, and the match between generated and real
follow-up tumour size; in how many patients the T1 tumour under pCR is smaller than under
non-pCR; the mean intensity outside the tumour of generated, real and T0 MIPs. Factual scenarios are compared with the patient's real follow-up;
counterfactual ones (pCR flipped) with the phantom's ground-truth rendering of that scenario.
The pix2pix-style baseline is scored the same way.

Tumour size = area of the tumour mask, measured identically on real and generated images by
the bundled nnU-Net model (``--sizer nnunet``, the default, as the paper) or by the small
U-Net segmenter trained with the baseline (``--sizer unet``, `baseline.train_segmenter`). Match definitions (100 = perfect; over- and under-estimates both
lower it):
- ``match`` (per patient, then averaged): 100 * min(gen, real) / max(gen, real); 100 when
  both are empty.
- ``group match``: the same on the group's mean sizes (the paper reports group-level
  percentages).
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

import numpy as np


def match(gen: float, real: float) -> float:
    """The NAC paper's "match" as nacsim defines it (`science.measure.match_percent`)."""
    from napari_nacsim.science.measure import match_percent

    return match_percent(gen, real)


def make_sizer(kind: str, baseline_dir: Path, spacing, family):
    """(N, H, W) [0, 1] images -> (N, H, W) tumour masks."""
    from napari_nacsim.science.generative.baseline import load_net, segment

    if kind == "unet":
        net, _ = load_net(baseline_dir / "segmenter.safetensors")
        return lambda images: segment(net, images)
    from napari_nacsim.core.scan import Scan, affine_from_spacing
    segmenter = family.load_segmenter()
    affine = affine_from_spacing(spacing)
    return lambda images: np.stack([
        (segmenter.segment(Scan(array=np.ascontiguousarray(im, np.float32), affine=affine)).array
         > 0).astype(np.uint8) for im in images])


def main(argv: list[str] | None = None) -> int:
    import platform

    import torch
    from scipy import ndimage

    from napari_nacsim.engine import load_model
    from napari_nacsim.science.measure import image_agreement
    from napari_nacsim.science.generative.baseline import load_net, pix2pix_predict
    from napari_nacsim.datasets.paired import manifest_cohort, phantom_cohort, phantom_ids
    from napari_nacsim.science.generative.sampling import generate

    p = argparse.ArgumentParser(description="evaluate a NAC model on held-out phantoms")
    p.add_argument("--model", type=Path, default=None, help="model folder (default: bundled)")
    p.add_argument("--baseline", type=Path, default=Path("artifacts/eval"),
                   help="folder with pix2pix.safetensors and segmenter.safetensors")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sampler", default="dpmpp")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (default: the model's)")
    p.add_argument("--samples", type=int, default=1,
                   help="samples per scenario (seeds seed, seed+1, ...), as the workspace's "
                        "Samples: image metrics on their mean image, size = mean of the "
                        "samples' sizes (default 1: a single sample, the paper's protocol)")
    p.add_argument("--cache", type=Path, default=Path("artifacts/breast_cache"))
    p.add_argument("--limit", type=int, default=None, help="first N test patients only")
    p.add_argument("--extra-patients", type=int, default=0, metavar="N",
                   help="also evaluate N more patients of the same synthetic cohort, after "
                        "the ones the split covers (never seen in training; prepared and "
                        "cached on first use, about 20 s each): larger pCR groups")
    held = p.add_mutually_exclusive_group()
    held.add_argument("--cohort-seed", type=int, default=None, metavar="S",
                      help="evaluate the first --patients patients of the synthetic cohort S "
                           "(must differ from the training cohort's seed)")
    held.add_argument("--cohort", type=Path, default=None, metavar="MANIFEST",
                      help="evaluate the patients of a cohort manifest (every time point with "
                           "a tumour mask; counterfactual rows for phantom patients only)")
    p.add_argument("--patients", type=int, default=48, help="with --cohort-seed (default 48)")
    p.add_argument("--sizer", choices=["nnunet", "unet"], default="nnunet",
                   help="tumour segmenter measuring sizes (default: the bundled nnU-Net)")
    args = p.parse_args(argv)
    if args.samples < 1:
        p.error("--samples must be at least 1")

    model = load_model(args.model, device="cpu")
    if args.guidance is None:
        args.guidance = model.default_guidance
    split = model.card["data"]["split"]
    size = model.image_size
    extra: list[str] = []
    source = {"kind": "training split", "cohort_seed": split["cohort_seed"]}
    if args.cohort is not None:
        cohort, skipped = manifest_cohort(args.cohort, size)
        for pid, reason in skipped:
            print(f"{pid} skipped: {reason}", file=sys.stderr)
        held_out = cohort.ids
        source = {"kind": "cohort manifest", "manifest": str(args.cohort),
                  "skipped": [{"patient": p, "reason": r} for p, r in skipped]}
    elif args.cohort_seed is not None:
        if args.cohort_seed == split["cohort_seed"]:
            p.error(f"--cohort-seed {args.cohort_seed} is the training cohort's seed; its "
                    "patients are not held out (use another seed)")
        if args.patients < 1:
            p.error("--patients must be at least 1")
        held_out = phantom_ids(model.family, args.cohort_seed, args.patients)
        cohort = phantom_cohort(model.family, args.cohort_seed, args.patients, size,
                                cache_dir=args.cache, counterfactual_ids=held_out)
        source = {"kind": "unseen synthetic cohort", "cohort_seed": args.cohort_seed,
                  "patients": args.patients}
    else:
        n_all = split["patients"] + max(0, args.extra_patients)
        extra = phantom_ids(model.family, split["cohort_seed"], n_all)[split["patients"]:]
        held_out = split["test"] + extra
        cohort = phantom_cohort(model.family, split["cohort_seed"], n_all, size,
                                cache_dir=args.cache, counterfactual_ids=held_out)
    test = cohort.subset(held_out[: args.limit])
    pix2pix, _ = load_net(args.baseline / "pix2pix.safetensors")
    sizer = make_sizer(args.sizer, args.baseline, cohort.spacing, model.family)
    pixel_mm2 = float(np.prod(cohort.spacing))
    times = test.family.timepoint_names
    rows = []
    started = time.time()
    gen_seconds = 0.0
    for i, pid in enumerate(test.ids):
        clinical = test.clinical[i]
        arms = [("factual", clinical, test.images[i], test.masks[i])]
        if pid in test.cf_clinical:  # ground truth of the counterfactual (phantoms only)
            arms.append(("counterfactual", test.cf_clinical[pid], test.cf_images[pid],
                         test.cf_masks[pid]))
        entries = []  # (kind, time index, clinical, reference image, reference gt mask)
        for kind, cl, imgs, msks in arms:
            for t in range(1, len(times)):
                entries.append((kind, t, cl, imgs[t], msks[t]))
        scenarios = [{"time": times[t], **{v.name: cl[v.name] for v in test.family.condition_variables}}
                     for _, t, cl, _, _ in entries]
        t0 = test.images[i, 0]
        g0 = time.perf_counter()
        samples = np.stack([generate(model.network, torch.from_numpy(t0)[None, None], scenarios,
                                     seed=args.seed + k, steps=args.steps, sampler=args.sampler,
                                     guidance_scale=args.guidance).numpy()[:, 0]
                            for k in range(args.samples)])      # (samples, n, H, W)
        nac = samples.mean(0)
        gen_seconds += time.perf_counter() - g0
        codes = [[float(t)] + [float(cl[v.name]) for v in test.family.condition_variables]
                 for _, t, cl, _, _ in entries]
        base = pix2pix_predict(pix2pix, test, t0, codes)
        refs = np.stack([e[3] for e in entries])
        n = len(entries)
        # Intensity outside the tumour: everything but the union of the T0 and target truth
        # masks, grown by 3 pixels (the tumour bed is where the images should differ).
        outside = [~ndimage.binary_dilation((test.masks[i, 0] > 0) | (e[4] > 0), iterations=3)
                   for e in entries]
        seg = sizer(np.concatenate([t0[None], refs, base, *samples]))
        areas = seg.sum(axis=(1, 2)) * pixel_mm2
        size_t0, size_ref, size_base = areas[0], areas[1:1 + n], areas[1 + n:1 + 2 * n]
        size_nac = areas[1 + 2 * n:].reshape(args.samples, n).mean(0)
        for method, images, sizes in (("nac", nac, size_nac), ("pix2pix", base, size_base)):
            for k, (kind, t, cl, ref, gt) in enumerate(entries):
                rows.append({
                    "patient": pid, "method": method, "kind": kind, "time": times[t],
                    "pCR": bool(cl["pCR"]),
                    **image_agreement(images[k], ref),
                    "size_t0_mm2": float(size_t0), "size_generated_mm2": float(sizes[k]),
                    "size_real_mm2": float(size_ref[k]),
                    "size_truth_mm2": float(gt.sum() * pixel_mm2),
                    "size_truth_t0_mm2": float(test.masks[i, 0].sum() * pixel_mm2),
                    "match": match(float(sizes[k]), float(size_ref[k])),
                    "outside_mean_generated": _mean_or_nan(images[k][outside[k]]),
                    "outside_mean_real": _mean_or_nan(ref[outside[k]]),
                    "outside_mean_t0": _mean_or_nan(t0[outside[k]]),
                })
        print(f"{pid} done ({time.time() - started:.0f} s)", flush=True)

    summary = summarise(rows)
    pooled = summarise_pooled(rows, times[-1])
    ordering = outcome_ordering(rows, times[1] if len(times) > 2 else times[-1])
    intensity = outside_intensity(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python training/evaluate_nac.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    result = {"command": command, "model_hash": model.model_hash, "sampler": args.sampler,
              "steps": args.steps, "seed": args.seed, "guidance": args.guidance,
              "samples": args.samples,
              "sizer": args.sizer,
              "held_out": source,
              "n_test_patients": len(test.ids), "extra_patients": len(extra), "machine": platform.platform(),
              "generation_seconds_total": round(gen_seconds, 1),
              "summary": summary, "pooled": pooled, "ordering": ordering,
              "outside_intensity": intensity, "rows": rows}
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    table = (markdown(summary) + "\n\n" + markdown_pooled(pooled) + "\n\n"
             + markdown_extra(ordering, intensity))
    (args.out / "results.md").write_text(f"`{command}`\n\n{table}\n")
    print(table)
    return 0


def _size_stats(rs) -> dict:
    """Group-level size statistics of rows: reductions vs T0 (generated, real, truth) and
    the group match on the mean sizes."""
    mean = lambda key: float(np.mean([r[key] for r in rs]))  # noqa: E731
    t0, gen, real = mean("size_t0_mm2"), mean("size_generated_mm2"), mean("size_real_mm2")
    return {"reduction_generated": 100 * (1 - gen / t0) if t0 else float("nan"),
            "reduction_real": 100 * (1 - real / t0) if t0 else float("nan"),
            "reduction_truth": 100 * (1 - mean("size_truth_mm2") / mean("size_truth_t0_mm2")),
            "group_match": match(gen, real)}


def summarise(rows):
    groups = {}
    for r in rows:
        groups.setdefault((r["method"], r["kind"], r["time"], r["pCR"]), []).append(r)
    out = []
    for (method, kind, t, pcr), rs in sorted(groups.items()):
        mean = lambda key: float(np.mean([r[key] for r in rs]))  # noqa: E731
        out.append({"method": method, "kind": kind, "time": t,
                    "group": "pCR" if pcr else "non-pCR", "n": len(rs),
                    "psnr": mean("psnr"), "ssim": mean("ssim"), "match": mean("match"),
                    **_size_stats(rs)})
    return out


def summarise_pooled(rows, time_point):
    """Per method and outcome group at ``time_point``, factual and counterfactual scenarios
    pooled (the issue's T2 size-reduction target), plus image metrics over all rows."""
    out = []
    for method in sorted({r["method"] for r in rows}):
        mine = [r for r in rows if r["method"] == method]
        entry = {"method": method, "n_images": len(mine),
                 "psnr": float(np.mean([r["psnr"] for r in mine])),
                 "ssim": float(np.mean([r["ssim"] for r in mine])),
                 "match": float(np.mean([r["match"] for r in mine])), "groups": []}
        for pcr in (True, False):
            rs = [r for r in mine if r["time"] == time_point and r["pCR"] == pcr]
            if not rs:
                continue
            entry["groups"].append({"group": "pCR" if pcr else "non-pCR", "n": len(rs),
                                    **_size_stats(rs)})
        out.append(entry)
    return {"time": time_point, "methods": out}


def _mean_or_nan(values) -> float:
    return float(values.mean()) if values.size else float("nan")


def outcome_ordering(rows, time_point):
    """Per method: in how many patients the tumour generated at ``time_point`` under pCR is
    smaller than the one under non-pCR (patients with both scenarios: the factual one and
    its counterfactual), against the same count on the real / ground-truth follow-ups."""
    out = {}
    for method in sorted({r["method"] for r in rows}):
        by_patient = {}
        for r in rows:
            if r["method"] == method and r["time"] == time_point:
                by_patient.setdefault(r["patient"], {})[r["pCR"]] = r
        both = [v for v in by_patient.values() if True in v and False in v]
        gen = sum(v[True]["size_generated_mm2"] < v[False]["size_generated_mm2"] for v in both)
        real = sum(v[True]["size_real_mm2"] < v[False]["size_real_mm2"] for v in both)
        out[method] = {"time": time_point, "patients": len(both), "pcr_smaller_generated": gen,
                       "pcr_smaller_real": real,
                       "share_generated": gen / len(both) if both else float("nan")}
    return out


def outside_intensity(rows):
    """Per method and scenario kind: mean intensity outside the grown tumour union of the
    generated, the real (or ground-truth) follow-up and the T0 MIP; generated / real - 1 is
    the target's "within 5 %", real / T0 - 1 says whether real follow-ups are darker."""
    out = []
    for method in sorted({r["method"] for r in rows}):
        for kind in sorted({r["kind"] for r in rows}):
            rs = [r for r in rows if r["method"] == method and r["kind"] == kind]
            if not rs:
                continue
            # nan where the grown tumour covers the whole image
            gen, real, t0 = (float(np.nanmean([r[k] for r in rs])) for k in (
                "outside_mean_generated", "outside_mean_real", "outside_mean_t0"))
            out.append({"method": method, "kind": kind, "n": len(rs), "generated": gen,
                        "real": real, "t0": t0, "generated_vs_real_percent": 100 * (gen / real - 1),
                        "real_vs_t0_percent": 100 * (real / t0 - 1)})
    return out


def markdown_extra(ordering, intensity):
    lines = ["| method | time | patients | pCR tumour smaller (generated) | (real) |",
             "|---|---|---|---|---|"]
    lines += [f"| {m} | {o['time']} | {o['patients']} | {o['pcr_smaller_generated']} "
              f"({100 * o['share_generated']:.1f} %) | {o['pcr_smaller_real']} |"
              for m, o in ordering.items()]
    lines += ["", "| method | scenario | n | outside-tumour mean: generated | real | T0 | "
              "generated vs real % | real vs T0 % |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {e['method']} | {e['kind']} | {e['n']} | {e['generated']:.4f} | "
              f"{e['real']:.4f} | {e['t0']:.4f} | {e['generated_vs_real_percent']:+.1f} | "
              f"{e['real_vs_t0_percent']:+.1f} |" for e in intensity]
    return "\n".join(lines)


def markdown_pooled(pooled):
    lines = [f"| method | {pooled['time']} group | n | generated reduction % | real reduction % "
             "(seg.) | truth % (mask) | gen. - truth (points) | group match % |",
             "|---|---|---|---|---|---|---|---|"]
    for m in pooled["methods"]:
        for g in m["groups"]:
            lines.append(f"| {m['method']} | {g['group']} | {g['n']} | "
                         f"{g['reduction_generated']:.1f} | {g['reduction_real']:.1f} | "
                         f"{g['reduction_truth']:.1f} | "
                         f"{g['reduction_generated'] - g['reduction_truth']:+.1f} | "
                         f"{g['group_match']:.1f} |")
    lines += ["", "| method | images | PSNR | SSIM | match % (per image) |", "|---|---|---|---|---|"]
    lines += [f"| {m['method']} | {m['n_images']} | {m['psnr']:.2f} | {m['ssim']:.3f} | "
              f"{m['match']:.1f} |" for m in pooled["methods"]]
    return "\n".join(lines)


def markdown(summary):
    head = ("| method | scenario | time | group | n | PSNR | SSIM | reduction gen. % | "
            "reduction real % (seg.) | reduction truth % (mask) | match % | group match % |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = [f"| {s['method']} | {s['kind']} | {s['time']} | {s['group']} | {s['n']} | "
             f"{s['psnr']:.2f} | {s['ssim']:.3f} | {s['reduction_generated']:.1f} | "
             f"{s['reduction_real']:.1f} | {s['reduction_truth']:.1f} | {s['match']:.1f} | "
             f"{s['group_match']:.1f} |" for s in summary]
    return head + "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
