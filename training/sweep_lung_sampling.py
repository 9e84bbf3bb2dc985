"""Choose the lung model's sampling defaults by measurement: steps and start strength.

    OMP_NUM_THREADS=2 python training/sweep_lung_sampling.py --model artifacts/lung_v4/model \
        --patients 10 --configs 4:1.0,8:1.0,4:0.5,8:0.5 --out artifacts/lung_sweep

On patients of a cohort seed used neither to train the model (0, 100), nor to fit its heads
(2), nor for its held-out evaluation (1): default 3, so choosing the defaults here does not
tune them on the evaluation's patients. For each configuration (DDIM steps : start strength,
`sampling.generate`) and patient, the crop is generated under both outcomes (responder yes
and no, the patient's own clinical values, seed 0) and measured as the product measures it
(the bundled segmenter's longest diameter against the baseline's):

- SSIM (3D, lung window) of the crop generated for the patient's actual outcome against
  the true follow-up, beside the copied pre-treatment crop;
- adjacent-slice |difference| (HU), generated against real (seams);
- the RECIST category agrees with the outcome asked for (responder <=> CR/PR), both outcomes;
- seconds per crop.

Writes ``--out``/sweep.json and prints a table.
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
from evaluate_lung import ssim3d, z_step  # noqa: E402  (one definition of each)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="model folder (default: bundled)")
    p.add_argument("--cohort-seed", type=int, default=3)
    p.add_argument("--patients", type=int, default=10)
    p.add_argument("--configs", default="4:1.0,8:1.0,4:0.5,8:0.5",
                   help="comma-separated STEPS:STRENGTH (DDIM)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    import torch

    from napari_nacsim.engine import load_model
    from napari_nacsim.families import get_family
    from napari_nacsim.science.generative.immunodiff.data import truth_aligned_inputs
    from napari_nacsim.science.generative.immunodiff.sampling import generate
    from napari_nacsim.science.measure import measure_tumour, recist_category

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    family = get_family("lung")
    schema = family.schema
    model = load_model(args.model, family="lung", device="cpu")
    segmenter = family.load_segmenter(device="cpu")
    configs = [(int(c.split(":")[0]), float(c.split(":")[1])) for c in args.configs.split(",")]
    rows = {c: [] for c in configs}
    for index in range(args.patients):
        phantom = family.make_phantom(args.cohort_seed, index)
        rendering = phantom.render()
        inputs = truth_aligned_inputs(family, rendering)
        pre, post = inputs[schema.baseline], inputs["post"]
        arrays = [np.asarray(pre[k].array) for k in ("image", "lobes", "vessels")]
        truth = np.asarray(post["image"].array)
        base_d = measure_tumour(segmenter.segment(pre["image"])).diameter
        clinical = {k: v for k, v in rendering.clinical.items()
                    if schema.variable(k).conditions_model}
        actual = bool(rendering.clinical["responder"])
        for steps, strength in configs:
            scenarios = [{"time": "post", **clinical, "responder": r} for r in (True, False)]
            t = time.perf_counter()
            crops = generate(model.network, *arrays, scenarios, seed=0, steps=steps,
                             sampler="ddim", strength=strength)
            seconds = (time.perf_counter() - t) / len(scenarios)
            agree = []
            for asked, crop in zip((True, False), crops):
                d = measure_tumour(segmenter.segment(pre["image"].derive(crop))).diameter
                change = 100.0 * (d - base_d) / base_d if base_d > 0 else float("nan")
                agree.append(asked == (recist_category(change) in ("CR", "PR")))
            mine = crops[0 if actual else 1]
            rows[(steps, strength)].append({
                "patient": phantom.id, "index": index,
                "ssim": ssim3d(mine, truth), "ssim_copy": ssim3d(arrays[0], truth),
                "z_step": z_step(mine), "z_step_real": z_step(truth),
                "agree": agree, "seconds_per_crop": seconds})
        print(f"{index + 1}/{args.patients}", flush=True)
    summary = []
    for (steps, strength), rs in rows.items():
        summary.append({
            "steps": steps, "strength": strength, "patients": len(rs),
            "ssim": float(np.mean([r["ssim"] for r in rs])),
            "ssim_copy": float(np.mean([r["ssim_copy"] for r in rs])),
            "z_step": float(np.mean([r["z_step"] for r in rs])),
            "z_step_real": float(np.mean([r["z_step_real"] for r in rs])),
            "recist_agrees": float(np.mean([a for r in rs for a in r["agree"]])),
            "seconds_per_crop": float(np.median([r["seconds_per_crop"] for r in rs]))})
    result = {"command": " ".join(shlex.quote(a) for a in sys.argv),
              "model_hash": model.model_hash, "cohort_seed": args.cohort_seed,
              "summary": summary, "rows": {f"{s}:{x}": r for (s, x), r in rows.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep.json").write_text(json.dumps(result, indent=1))
    print("| DDIM steps | strength | SSIM (copy) | adjacent-slice HU (real) | RECIST agrees | "
          "s/crop |\n|---|---|---|---|---|---|")
    for s in summary:
        print(f"| {s['steps']} | {s['strength']} | {s['ssim']:.3f} ({s['ssim_copy']:.3f}) | "
              f"{s['z_step']:.1f} ({s['z_step_real']:.1f}) | {s['recist_agrees']:.2f} | "
              f"{s['seconds_per_crop']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
