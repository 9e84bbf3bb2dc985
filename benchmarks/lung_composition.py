"""The lung follow-up composed around the baseline tumour (`immunodiff.compose`): what sizes
its region, and what it does to the image (docs/lung-model.md, "Composition").

    python benchmarks/lung_composition.py margin --cohort-seed 0 --patients 400
    OMP_NUM_THREADS=2 python benchmarks/lung_composition.py quality --cohort-seed 3 \
        --patients 6 --samples 4 --out artifacts/lung_composition.json

``margin``: for the phantom's own tumours (shape and size streams of cohort patients; the
placement in the lung does not matter here) on the crop's voxel grid (4 x 3 x 3 mm, a
random sub-voxel offset each), how far from the baseline tumour mask the follow-up differs
when the tumour grows by the phantom's largest growth (+50 %, with the 2 mm partial-volume
rim of both visits), against growth x reach (the largest distance from the mask's centroid
to its voxels): the excess is what ``allowance_mm`` must hold.

``quality``: the bundled model through the what-if session (bundled segmenter, the model's
default sampler, each sample's drawn outcome), per patient of a cohort seed: SSIM against
the truth-aligned real follow-up and the adjacent-slice difference (the evaluation's
`ssim3d` and `z_step`) of the crops uncomposed, composed (the product), composed with other
feathers, with one fixed margin for every tumour, around the true instead of the segmented
tumour, and the RePaint-like alternative (the region outside replaced by "no change" noised
to each step's level at every step, then the same final composition); RECIST agreement with
the outcome drawn (bundled segmenter).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def margin(args) -> dict:
    from scipy import ndimage

    from napari_nacsim.science.phantoms import lung
    from napari_nacsim.science.phantoms.base import patient_seed
    from napari_nacsim.science.phantoms.lung_outcomes import diameter_change_percent
    from napari_nacsim.science.phantoms.shapes import Grid

    growth = max(diameter_change_percent(False, u) for u in np.linspace(0, 1, 101)) / 100
    spacing = np.array([4.0, 3.0, 3.0])
    grid = lung.CONFIG.grid
    lobes = np.ones(grid.shape, np.uint8)   # the shape is drawn before the placement
    rng = np.random.default_rng(1)
    rows = []
    for i in range(args.patients):
        patient = lung.make_patient(args.cohort_seed, i)
        tumour = lung._place_tumour(patient_seed(args.cohort_seed, i, "tumour-shape"), grid,
                                    lobes, 1, patient.tumour_diameter_mm)
        half = tumour.reach_mm * (1 + growth) + 12.0
        n = np.ceil(2 * half / spacing).astype(int) + 1
        axes = [(np.arange(k) + o) * s - k * s / 2 for k, o, s in zip(n, rng.random(3), spacing)]
        points = np.stack(np.meshgrid(*axes, indexing="ij"), -1) + tumour.blob.center_mm

        def shows(scale):   # the phantom's tumour weight (rim included) > 0
            depth = tumour.depth(points, scale)
            return (1 - depth) * tumour.mean_radius_mm * scale / 2 + 0.5 > 0

        base = tumour.depth(points, 1.0) < 1.0
        changed = shows(1 + growth) | shows(1.0)
        needed = float(ndimage.distance_transform_edt(~base, sampling=spacing)[changed].max())
        q = np.argwhere(base) * spacing
        reach = float(np.linalg.norm(q - q.mean(0), axis=1).max())
        rows.append({"index": i, "diameter_mm": patient.tumour_diameter_mm, "reach_mm": reach,
                     "needed_mm": needed, "excess_mm": needed - growth * reach})
    excess = np.array([r["excess_mm"] for r in rows])
    needed = np.array([r["needed_mm"] for r in rows])
    return {"cohort_seed": args.cohort_seed, "patients": len(rows), "growth": growth,
            "excess_mm": {"max": float(excess.max()), "p99": float(np.percentile(excess, 99)),
                          "median": float(np.median(excess))},
            "needed_mm (a fixed margin)": {"max": float(needed.max()),
                                           "median": float(np.median(needed))},
            "growth_x_reach_mm": {q: float(f([growth * r["reach_mm"] for r in rows]))
                                  for q, f in (("median", np.median), ("max", np.max))},
            "rows": rows,
            "worst": max(rows, key=lambda r: r["excess_mm"])}


def quality(args) -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "training"))
    from evaluate_lung import ssim3d, z_step

    from napari_nacsim.engine import WhatIfRequest, WhatIfSession, load_model
    from napari_nacsim.families import get_family
    from napari_nacsim.science.generative.immunodiff import sampling
    from napari_nacsim.science.generative.immunodiff.compose import (Composition, compose,
                                                                      tumour_region)
    from napari_nacsim.science.generative.immunodiff.config import hu_to_model, model_to_hu
    from napari_nacsim.science.generative.immunodiff.data import truth_aligned_inputs
    from napari_nacsim.science.generative.immunodiff.slices import to_volume, with_neighbours
    from napari_nacsim.science.measure import measure_tumour, recist_category

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    family = get_family("lung")
    model = load_model(args.model, family="lung", device="cpu")
    segmenter = family.load_segmenter(device="cpu")
    net = model.network
    default = Composition.from_config(net.config)
    grid = tuple(net.config["grid_shape"])

    @torch.no_grad()
    def repaint(pre_hu, lobes, vessels, scenario, seed, steps, weight):
        """`sampling.generate`'s DDIM path from noise (change target), the region outside
        replaced at every step by "no change" noised to the next step's level."""
        pre25, anatomy = sampling.condition_inputs(net, pre_hu, lobes, vessels)
        values, codes, present = net.adapter.encode([scenario])
        sums = net.adapter.clinical(values.float(), codes, present)
        control = net.control(anatomy, net.fused(pre25, sums[0][None].expand(grid[0], -1)))
        noise = torch.randn((1, 1) + grid, generator=torch.Generator("cpu").manual_seed(seed))
        scheduler = sampling.make_sampler(net.config, "ddim")
        scheduler.set_timesteps(int(steps))
        ts = scheduler.timesteps
        x = noise * scheduler.init_noise_sigma
        w = torch.as_tensor(weight)[None, None]
        for i, t in enumerate(ts):
            out = net.denoise(with_neighbours(scheduler.scale_model_input(x, t),
                                              net.neighbours), t.reshape(1), control)
            x = scheduler.step(to_volume(out, 1), t, x, return_dict=False)[0]
            known = scheduler.add_noise(torch.zeros_like(x), noise, ts[i + 1:i + 2]) \
                if i + 1 < len(ts) else torch.zeros_like(x)
            x = w * x + (1 - w) * known
        pre = hu_to_model(torch.as_tensor(np.ascontiguousarray(pre_hu, np.float32)),
                          net.config)
        return model_to_hu(x[0, 0] + pre, net.config).numpy()

    def recist(crop, like, base_d):
        mask = segmenter.segment(family.to_segmenter(like.derive(crop.astype(np.float32))))
        d = measure_tumour(mask).diameter
        return recist_category(100.0 * (d - base_d) / base_d) if base_d > 0 else ""

    rows, started = [], time.perf_counter()
    for index in range(args.first, args.first + args.patients):
        rendering = family.make_phantom(args.cohort_seed, index).render()
        inputs = truth_aligned_inputs(family, rendering)
        pre, post = inputs["pre"], inputs["post"]
        truth, pre_hu = np.asarray(post["image"].array), np.asarray(pre["image"].array)
        context = {k: pre[k] for k in family.context_inputs}
        clinical = {k: v for k, v in rendering.clinical.items()
                    if family.schema.variable(k).conditions_model}
        request = WhatIfRequest(clinical=clinical, target="post", compare=None,
                                samples=args.samples, seed=0)
        on = WhatIfSession(model, segmenter).run(pre["image"], request, context=context)
        net.config["composition"]["around_tumour"] = False
        try:
            off = WhatIfSession(model, segmenter).run(pre["image"], request, context=context)
        finally:
            net.config["composition"]["around_tumour"] = True
        base_mask, base_d = on.baseline_mask.array, on.baseline_size.diameter
        f_on, f_off = on.arms[0].followups["post"], off.arms[0].followups["post"]
        drawn = [bool(d[0].value) for d in f_on.outcomes]
        spacing = pre["image"].spacing
        regions = {"composed": tumour_region(base_mask, spacing, default, grid=grid)}
        for feather in (6.0, 24.0):
            regions[f"feather {feather:g} mm"] = tumour_region(
                base_mask, spacing, Composition(default.growth, default.allowance_mm, feather),
                grid=grid)
        regions["fixed margin 25 mm"] = tumour_region(base_mask, spacing,
                                                      Composition(0.0, 25.0, default.feather_mm),
                                                      grid=grid)
        regions["around the true tumour"] = tumour_region(pre["tumour"].array, spacing,
                                                          default, grid=grid)
        plain = [np.asarray(s.array) for s in f_off.samples]
        product = [np.asarray(s.array) for s in f_on.samples]
        tumours = (np.asarray(post["tumour"].array) > 0) | (np.asarray(pre["tumour"].array) > 0)
        row = {"index": index, "responder_actual": bool(rendering.truth["responder"]),
               "drawn": drawn, "baseline_diameter_mm": base_d,
               "ssim_copy": ssim3d(pre_hu, truth), "z_real": z_step(truth),
               "z_copy": z_step(pre_hu),
               "generated_share": {k: float(np.mean(r.weight > 0)) for k, r in regions.items()},
               "margin_mm": {k: r.margin_mm for k, r in regions.items()},
               # the product's crops are the post-hoc composition of the uncomposed ones
               "product_vs_post_hoc_max_hu": max(float(np.abs(
                   a - compose(pre_hu, b, regions["composed"])).max())
                   for a, b in zip(product, plain)),
               # the true tumours (both visits) lie where the weight is 1
               "true_tumours_min_weight": float(regions["composed"].weight[tumours].min()),
               "variants": {}}
        variants = {"uncomposed": plain, "composed": product}
        variants.update({k: [compose(pre_hu, c, r) for c in plain]
                         for k, r in regions.items() if k != "composed"})
        lobes, vessels = (np.asarray(context[k].array) for k in ("lobes", "vessels"))
        variants["RePaint-like"] = [
            compose(pre_hu, repaint(pre_hu, lobes, vessels, s.provenance["scenario"],
                                    s.provenance["seed"], model.default_steps,
                                    regions["composed"].weight), regions["composed"])
            for s in f_off.samples]
        for name, crops in variants.items():
            v = {"ssim": [ssim3d(c, truth) for c in crops], "z": [z_step(c) for c in crops]}
            if name in ("uncomposed", "composed", "RePaint-like", "fixed margin 25 mm"):
                v["recist"] = [recist(c, pre["image"], base_d) for c in crops]
                v["agrees"] = [(c in ("CR", "PR")) == d for c, d in zip(v["recist"], drawn)]
            row["variants"][name] = v
        rows.append(row)
        print(f"{len(rows)}/{args.patients} ({time.perf_counter() - started:.0f} s) SSIM copy "
              f"{row['ssim_copy']:.3f} " + ", ".join(
                  f"{k} {np.mean(v['ssim']):.3f}/{np.mean(v['z']):.1f}"
                  for k, v in row["variants"].items()), flush=True)
    summary = {"ssim_copy": float(np.mean([r["ssim_copy"] for r in rows])),
               "z_real": float(np.mean([r["z_real"] for r in rows])),
               "z_copy": float(np.mean([r["z_copy"] for r in rows])),
               "generated_share_composed": float(np.mean([r["generated_share"]["composed"]
                                                          for r in rows])),
               "margin_mm_composed": [round(r["margin_mm"]["composed"], 1) for r in rows],
               "product_vs_post_hoc_max_hu": max(r["product_vs_post_hoc_max_hu"] for r in rows),
               "true_tumours_min_weight": min(r["true_tumours_min_weight"] for r in rows),
               "variants": {}}
    for name in rows[0]["variants"]:
        v = {"ssim": float(np.mean([np.mean(r["variants"][name]["ssim"]) for r in rows])),
             "z": float(np.mean([np.mean(r["variants"][name]["z"]) for r in rows]))}
        if "agrees" in rows[0]["variants"][name]:
            v["recist_agrees"] = float(np.mean([a for r in rows
                                                for a in r["variants"][name]["agrees"]]))
        summary["variants"][name] = v
    return {"model_hash": model.model_hash, "cohort_seed": args.cohort_seed,
            "patients": len(rows), "samples": args.samples,
            "seconds": round(time.perf_counter() - started, 1), "summary": summary,
            "rows": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    m = sub.add_parser("margin")
    q = sub.add_parser("quality")
    for s in (m, q):
        s.add_argument("--cohort-seed", type=int, default=0)
        s.add_argument("--patients", type=int, default=400)
        s.add_argument("--out", type=Path, default=None)
    q.add_argument("--first", type=int, default=0)
    q.add_argument("--samples", type=int, default=4)
    q.add_argument("--model", type=Path, default=None)
    args = p.parse_args(argv)
    result = margin(args) if args.what == "margin" else quality(args)
    shown = {k: v for k, v in result.items() if k != "rows"}
    text = json.dumps(shown if args.what == "margin" else result["summary"], indent=1,
                      default=float)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
