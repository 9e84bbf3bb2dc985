"""Evaluate an ImmunoDiff model on held-out lung phantoms (another cohort seed).

    python training/evaluate_lung.py --model src/napari_nacsim/models/lung_immunodiff \
        --patients 60 --samples 4 --out artifacts/lung_eval

Per patient (truth-aligned pre/post crops, `immunodiff.data`), the model generates the
post-treatment crop under four scenarios, ``samples`` times each (seeds 0..S-1): the
factual clinical values, the counterfactual (the other PD-L1 stratum, whose phantom
rendering with the same latent draws is its ground truth), PD-L1 0 % and PD-L1 80 % (all
else fixed). Reported (``results.json`` + ``results.md``):

- image quality against the phantom's truth (factual and counterfactual): SSIM (3D, lung
  window mapped to [0, 1], data range 1) and MMD, against two baselines trained/derived on
  the same data: the pre-treatment crop copied unchanged, and a deterministic 3D U-Net
  (pre -> post, L1; `--unet-minutes` of training on the paired training set).
  MMD: the squared maximum mean discrepancy between the set of generated crops and the set
  of true crops (one crop per patient), each crop a vector (lung-windowed, average-pooled
  to 8 x 24 x 24), Gaussian kernel with the median pairwise distance of the real set as
  bandwidth; 0 = same distribution.
- treatment effect: per patient and scenario, the share of samples whose tumour meets RECIST
  response (longest axial diameter -30 % or more vs the pre-treatment crop, same measure on
  both) against the phantom's response probability: Spearman over (patient, scenario), and
  per PD-L1 stratum (<1, 1-49, >=50 %) the mean share vs the mean probability.
- counterfactual direction: among patients whose phantom probability rises by >= 0.15 from
  PD-L1 0 to 80 %, the fraction whose share of responding samples rises.
- ablation (paper Table 3): the same trained model with the anatomy control zeroed (cbi-
  Adapter only), with the adapter's condition removed (anatomy only), and both (full).

Tumour measurement: ``--measure segmenter`` (the bundled nnU-Net, ~1.6 s a crop on one
core) or ``threshold`` (the connected region of > -400 HU around the baseline tumour,
inside the baseline tumour grown by 12 mm: milliseconds; its agreement with the phantom's
true post-treatment diameter is reported).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

import numpy as np  # noqa: E402

LUNG_WINDOW = (-1350.0, 150.0)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="model folder (default: bundled)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", type=Path, default=Path("artifacts/lung_data"))
    p.add_argument("--cohort-seed", type=int, default=1)
    p.add_argument("--patients", type=int, default=60)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--sampler", default=None)
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (default: the model's)")
    p.add_argument("--strength", type=float, default=None,
                   help="where sampling starts (default: the model's init_strength)")
    p.add_argument("--measure", choices=("segmenter", "threshold"), default="segmenter")
    p.add_argument("--unet-minutes", type=float, default=8.0)
    p.add_argument("--train-records", type=Path, default=Path("artifacts/lung_data/paired_0"))
    p.add_argument("--no-ablation", action="store_true")
    p.add_argument("--no-composition", action="store_true",
                   help="score the crops as generated; default: composed around the baseline "
                        "tumour as the product shows them (the model config's composition; "
                        "the baseline mask is the one --measure finds on the pre crop)")
    p.add_argument("--build-only", action="store_true", help="draw the held-out records only")
    p.add_argument("--unet-only", action="store_true",
                   help="train (or load) the 3D U-Net baseline only")
    return p


def windowed(hu):
    lo, hi = LUNG_WINDOW
    return np.clip((np.asarray(hu, np.float32) - lo) / (hi - lo), 0, 1)


def ssim3d(generated, real) -> float:
    """SSIM of two crops in the lung window mapped to [0, 1] (float32, data range 1):
    `science.measure.image_agreement`, the cohort review's and the NAC evaluation's."""
    from napari_nacsim.science.measure import image_agreement

    return image_agreement(windowed(generated), windowed(real))["ssim"]


def _pooled(crop) -> np.ndarray:
    w = windowed(crop)
    z, y, x = w.shape
    return w.reshape(8, z // 8, 24, y // 24, 24, x // 24).mean(axis=(1, 3, 5)).ravel()


def mmd2(generated, real) -> float:
    """Squared MMD, Gaussian kernel, bandwidth = median pairwise distance of ``real``."""
    x = np.stack([_pooled(c) for c in generated])
    y = np.stack([_pooled(c) for c in real])

    def sq(a, b):
        return ((a[:, None] - b[None]) ** 2).sum(-1)

    dyy = sq(y, y)
    sigma2 = np.median(dyy[np.triu_indices(len(y), 1)])
    k = lambda d: np.exp(-d / (2 * sigma2))  # noqa: E731
    n, m = len(x), len(y)
    kxx, kyy, kxy = k(sq(x, x)), k(dyy), k(sq(x, y))
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) +
                 (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())


def threshold_tumour(crop, base_tumour, spacing) -> np.ndarray:
    """The region > -400 HU connected to the baseline tumour, inside the baseline tumour
    grown by 12 mm (vessels and chest wall outside that margin are not counted)."""
    from scipy import ndimage

    grow = [max(1, int(round(12.0 / s))) for s in spacing]
    structure = np.ones([2 * g + 1 for g in grow], bool)
    region = ndimage.binary_dilation(base_tumour > 0, structure=structure)
    solid = (np.asarray(crop) > -400) & region
    labels, n = ndimage.label(solid)
    if n == 0:
        return solid
    seeds = np.unique(labels[(base_tumour > 0) & solid])
    seeds = seeds[seeds > 0]
    if len(seeds) == 0:
        return np.zeros_like(solid)
    return np.isin(labels, seeds)


def z_step(crop) -> float:
    """Mean |difference| between adjacent axial slices (HU): seams of a slice-wise model
    raise it, over-smoothing along z lowers it."""
    c = np.asarray(crop, np.float32)
    return float(np.mean(np.abs(np.diff(c, axis=0))))


def _responds(diameter: float, baseline: float) -> bool:
    """RECIST response: longest diameter down by 30 % or more."""
    return baseline > 0 and (diameter - baseline) / baseline <= -0.30


def build_records(args, family) -> list[dict]:
    from napari_nacsim.science.generative.immunodiff.data import (paired_record, read_record,
                                                                   write_record)

    folder = args.data / f"eval_{args.cohort_seed}"
    records = []
    for i in range(args.patients):
        path = folder / f"{i:05d}.npz"
        if not path.exists():
            rec = paired_record(family, args.cohort_seed, i)
            clinical = rec["meta"]["clinical"]
            cf = family.counterfactual({k: v for k, v in clinical.items()
                                        if k not in ("responder", "survival_months", "death")})
            cf_rec = paired_record(family, args.cohort_seed, i,
                                   scenario={k: cf[k] for k in ("PD_L1",)})
            phantom = family.make_phantom(args.cohort_seed, i)
            rec["arrays"]["cf_post_image"] = cf_rec["arrays"]["post_image"]
            rec["arrays"]["cf_post_tumour"] = cf_rec["arrays"]["post_tumour"]
            rec["meta"]["counterfactual"] = {"PD_L1": cf["PD_L1"],
                                             "response_probability":
                                                 cf_rec["meta"]["response_probability"]}
            rec["meta"]["probability_pd_l1"] = {
                str(v): float(phantom.outcome({"PD_L1": v}).response_probability)
                for v in (0.0, 80.0)}
            write_record(folder, i, rec)
            print(f"held-out record {i + 1}/{args.patients}", flush=True)
        records.append(read_record(path))
    return records


def train_unet_baseline(args, out: Path, *, train: bool = False):
    """A deterministic 3D U-Net (MONAI BasicUNet) pre -> post in model units, L1 loss.
    Loaded when saved, unless ``train`` (then training continues from the saved weights
    for ``--unet-minutes``; the steps add up in unet_baseline.json)."""
    import torch
    from monai.networks.nets import BasicUNet

    from napari_nacsim.science.generative.immunodiff.data import load_records

    path = out / "unet_baseline.safetensors"
    net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=1,
                    features=(8, 8, 16, 16, 32, 8))
    before = {"steps": 0, "minutes": 0.0}
    if path.exists():
        from safetensors.torch import load_file

        net.load_state_dict(load_file(str(path)))
        if not train:
            return net.eval()
        before = json.loads((out / "unet_baseline.json").read_text())
    from napari_nacsim.science.generative.data import split_ids

    records = load_records(args.train_records)
    card = args.model / "model_card.json" if args.model else None
    if card is not None and card.exists() and \
            json.loads(card.read_text()).get("training", {}).get("split"):
        split = json.loads(card.read_text())["training"]["split"]
    else:  # the split train_lung.py makes of the lung_tiny paired set (same function)
        held = split_ids(range(200), 0.1, 0, at_least_one=False)
        split = {"train": held[0], "validation": held[1]}
    train = [r for r in records if r["meta"]["index"] in set(split.get("train", []))]
    pre = torch.from_numpy(np.stack([r["arrays"]["pre_image"] for r in train])).float()
    post = torch.from_numpy(np.stack([r["arrays"]["post_image"] for r in train])).float()
    pre, post = (pre[:, None] + 300) / 700, (post[:, None] + 300) / 700
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    g = torch.Generator().manual_seed(int(before["steps"]))
    started, step = time.perf_counter(), 0
    while time.perf_counter() - started < 60 * args.unet_minutes:
        idx = torch.randint(0, len(pre), (2,), generator=g)
        loss = torch.nn.functional.l1_loss(net(pre[idx]), post[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
    from safetensors.torch import save_file

    save_file(net.state_dict(), str(path))
    (out / "unet_baseline.json").write_text(json.dumps(
        {"steps": before["steps"] + step, "minutes": before["minutes"] + args.unet_minutes,
         "train_patients": len(train),
         "train_indices": split["train"],
         "last_loss": float(loss)}))
    return net.eval()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import torch
    from scipy.stats import spearmanr

    from napari_nacsim.families import get_family
    from napari_nacsim.science.generative.immunodiff.compose import Composition, tumour_region
    from napari_nacsim.science.generative.immunodiff.sampling import generate
    from napari_nacsim.science.phantoms.lung import longest_axial_diameter_mm

    family = get_family("lung")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.unet_only:
        train_unet_baseline(args, args.out, train=True)
        return 0
    records = build_records(args, family)
    if args.build_only:
        return 0
    args.model = args.model or family.bundled_generator_path()
    from napari_nacsim.engine import load_model

    model = load_model(args.model, device="cpu")
    net = model.network
    steps = args.steps or model.default_steps
    sampler = args.sampler or model.default_sampler
    guidance = args.guidance if args.guidance is not None else model.default_guidance
    segmenter = family.load_segmenter(device="cpu") if args.measure == "segmenter" else None
    composition = None if args.no_composition else Composition.from_config(net.config)
    unet = train_unet_baseline(args, args.out)
    spacing = (4.0, 3.0, 3.0)

    def tumour(crop, base_tumour, like):
        if segmenter is None:
            return threshold_tumour(crop, base_tumour, spacing)
        return segmenter.segment(like.derive(np.asarray(crop, np.float32))).array > 0

    variants = {"full": dict(use_adapter=True, use_anatomy=True)}
    if not args.no_ablation:
        variants.update({"adapter_only": dict(use_adapter=True, use_anatomy=False),
                         "anatomy_only": dict(use_adapter=False, use_anatomy=True)})
    from napari_nacsim.core.scan import Scan

    rows, gen_sets, started = [], {v: {"factual": [], "cf": []} for v in variants}, \
        time.perf_counter()
    real_sets = {"factual": [], "cf": []}
    copy_ssim, unet_ssim, unet_set, measure_check = [], [], [], []
    for n, rec in enumerate(records):
        a, meta = rec["arrays"], rec["meta"]
        clinical = {k: v for k, v in meta["clinical"].items()
                    if k not in ("responder", "survival_months", "death")}
        pre = a["pre_image"].astype(np.float32)
        like = Scan(array=pre, affine=np.diag([-3.0, -3.0, 4.0, 1.0]))
        base_mask = a["pre_tumour"] > 0 if segmenter is None else \
            tumour(pre, a["pre_tumour"], like)
        base_ld = longest_axial_diameter_mm(base_mask, spacing)
        # as the product composes: around the baseline tumour it found (None: as generated)
        region = None if composition is None else tumour_region(
            base_mask, spacing, composition, grid=pre.shape,
            mask_source=f"{args.measure} on the pre-treatment crop")
        scen = [dict(clinical), {**clinical, "PD_L1": meta["counterfactual"]["PD_L1"]},
                {**clinical, "PD_L1": 0.0}, {**clinical, "PD_L1": 80.0}]
        probs = [meta["response_probability"], meta["counterfactual"]["response_probability"],
                 meta["probability_pd_l1"]["0.0"], meta["probability_pd_l1"]["80.0"]]
        real_sets["factual"].append(a["post_image"])
        real_sets["cf"].append(a["cf_post_image"])
        copy_ssim.append(ssim3d(pre, a["post_image"]))
        with torch.no_grad():
            u = unet(torch.from_numpy((pre[None, None] + 300) / 700))[0, 0].numpy()
        u = np.clip(u * 700 - 300, -1024, 3071)
        unet_ssim.append(ssim3d(u, a["post_image"]))
        unet_set.append(u)
        true_ld = longest_axial_diameter_mm(a["post_tumour"] > 0, spacing)
        measured = longest_axial_diameter_mm(tumour(a["post_image"], a["pre_tumour"], like) > 0,
                                             spacing)
        measure_check.append((true_ld, measured))
        row = {"patient": meta["patient"], "pd_l1": clinical["PD_L1"], "probabilities": probs,
               "real_z_step": z_step(a["post_image"]),
               "baseline_ld_mm": base_ld, "copy_ssim": copy_ssim[-1], "unet_ssim": unet_ssim[-1]}
        for vname, flags in variants.items():
            responded = np.zeros((len(scen), args.samples))
            for s in range(args.samples):
                if vname != "full" and s > 0:
                    break
                out = generate(net, pre, a["pre_lobes"], a["pre_vessels"], scen, seed=s,
                               steps=steps, sampler=sampler, strength=args.strength,
                               guidance_scale=guidance if flags["use_adapter"] else 1.0,
                               region=region, **flags)
                if s == 0:
                    gen_sets[vname]["factual"].append(out[0])
                    gen_sets[vname]["cf"].append(out[1])
                    row[f"{vname}_ssim"] = ssim3d(out[0], a["post_image"])
                    row[f"{vname}_z_step"] = z_step(out[0])
                    row[f"{vname}_cf_ssim"] = ssim3d(out[1], a["cf_post_image"])
                if vname == "full":
                    for j in range(len(scen)):
                        ld = longest_axial_diameter_mm(tumour(out[j], a["pre_tumour"], like),
                                                       spacing)
                        responded[j, s] = _responds(ld, base_ld)
            if vname == "full":
                row["share"] = responded.mean(axis=1).tolist()
        rows.append(row)
        print(f"{n + 1}/{len(records)} {meta['patient']} share {row['share']} "
              f"p {np.round(probs, 2).tolist()} ({time.perf_counter() - started:.0f} s)",
              flush=True)

    share = np.array([r["share"] for r in rows])
    prob = np.array([r["probabilities"] for r in rows])
    rho = spearmanr(share.ravel(), prob.ravel()).statistic
    strata = {"<1 %": [], "1-49 %": [], ">=50 %": []}
    for r, sh, pr in zip(rows, share, prob):
        for j, pd in enumerate([r["pd_l1"], None, 0.0, 80.0]):
            if pd is None:  # the counterfactual: the other stratum of the factual one
                pd = 0.0 if r["pd_l1"] >= 50 else 50.0
            key = "<1 %" if pd < 1 else ("1-49 %" if pd < 50 else ">=50 %")
            strata[key].append((sh[j], pr[j]))
    strata_out = {k: {"n": len(v), "mean_share": float(np.mean([s for s, _ in v])),
                      "mean_probability": float(np.mean([p for _, p in v])),
                      "difference_points": float(100 * (np.mean([s for s, _ in v]) -
                                                        np.mean([p for _, p in v])))}
                  for k, v in strata.items() if v}
    rising = [(sh[3] > sh[2]) for sh, pr in zip(share, prob) if pr[3] - pr[2] >= 0.15]
    results = {
        "command": "python " + " ".join(shlex.quote(x) for x in
                                        ["training/evaluate_lung.py", *(argv or sys.argv[1:])]),
        "model": str(args.model), "model_hash": model.model_hash, "patients": len(rows),
        "cohort_seed": args.cohort_seed, "samples": args.samples, "steps": steps,
        "sampler": sampler, "guidance": guidance, "measure": args.measure,
        "composition": None if composition is None else dataclasses.asdict(composition),
        "strength": args.strength if args.strength is not None else
        float(net.config.get("init_strength", 1.0)),
        "image_quality": {
            "ssim_factual": {v: float(np.mean([r[f"{v}_ssim"] for r in rows]))
                             for v in variants},
            "ssim_counterfactual": {v: float(np.mean([r[f"{v}_cf_ssim"] for r in rows]))
                                    for v in variants},
            "ssim_copy_pre": float(np.mean(copy_ssim)),
            "ssim_unet3d": float(np.mean(unet_ssim)),
            "mmd_factual": {**{v: mmd2(gen_sets[v]["factual"], real_sets["factual"])
                               for v in variants},
                            "copy_pre": mmd2([r["arrays"]["pre_image"] for r in records],
                                             real_sets["factual"]),
                            "unet3d": mmd2(unet_set, real_sets["factual"])},
            "mmd_counterfactual": {v: mmd2(gen_sets[v]["cf"], real_sets["cf"])
                                   for v in variants}},
        "slice_consistency": {
            "mean_abs_adjacent_slice_difference_hu": {
                "real": float(np.mean([r["real_z_step"] for r in rows])),
                **{v: float(np.mean([r[f"{v}_z_step"] for r in rows])) for v in variants}},
            "target": "generated within 10 % of real (no seams between 2.5D slices)"},
        "treatment_effect": {"spearman_share_vs_probability": float(rho),
                             "strata": strata_out,
                             "target": "Spearman >= 0.5; each stratum within 7 points"},
        "counterfactual_direction": {
            "patients_with_rise_ge_0.15": len(rising),
            "share_rises_fraction": float(np.mean(rising)) if rising else None,
            "target": ">= 0.8"},
        "measure_check": {
            "mean_abs_diameter_error_mm_on_true_post": float(np.mean(
                [abs(t - m) for t, m in measure_check])),
            "true_post_recist_agreement": float(np.mean(
                [_responds(t, r["baseline_ld_mm"]) == _responds(m, r["baseline_ld_mm"])
                 for (t, m), r in zip(measure_check, rows)]))},
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    print(json.dumps({k: v for k, v in results.items() if k != "rows"}, indent=1,
                     default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
