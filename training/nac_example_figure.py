#!/usr/bin/env python
"""Figure of a NAC model on held-out patients: T0, the real T1/T2, and the generated
T1/T2 under pCR and non-pCR, with the nnU-Net tumour contour and size on every image.

    python training/nac_example_figure.py --out docs/breast-model-example.png

Patients come from the model card's test split (never seen in training); sizes are
measured by the bundled breast nnU-Net model, as in ``evaluate_nac.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="model folder (default: bundled)")
    p.add_argument("--out", type=Path, required=True, help="PNG file")
    p.add_argument("--patients", type=int, default=3, help="first N test patients (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=Path("artifacts/breast_cache"))
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from napari_nacsim.core.atomic import atomic_path
    from napari_nacsim.core.scan import Scan, affine_from_spacing
    from napari_nacsim.engine import load_model
    from napari_nacsim.datasets.paired import phantom_cohort
    from napari_nacsim.science.generative.sampling import generate
    from napari_nacsim.science.measure import format_size

    model = load_model(args.model, device="cpu")
    split = model.card["data"]["split"]
    cohort = phantom_cohort(model.family, split["cohort_seed"], split["patients"],
                            model.image_size, cache_dir=args.cache,
                            counterfactual_ids=split["test"])
    test = cohort.subset(split["test"][: args.patients])
    segmenter = model.family.load_segmenter()
    affine = affine_from_spacing(cohort.spacing)
    pixel_mm2 = float(np.prod(cohort.spacing))
    columns = ["T0 (real)", "T1 real", "T1 pCR", "T1 non-pCR", "T2 real", "T2 pCR",
               "T2 non-pCR"]
    fig, axes = plt.subplots(len(test.ids), len(columns),
                             figsize=(2.1 * len(columns), 2.3 * len(test.ids)), squeeze=False)
    for row, pid in enumerate(test.ids):
        clinical = {v.name: test.clinical[row][v.name] for v in test.family.condition_variables}
        scenarios = [{**clinical, "time": t, "pCR": pcr} for t in ("T1", "T2")
                     for pcr in (True, False)]
        t0 = test.images[row, 0]
        generated = generate(model.network, torch.from_numpy(t0)[None, None], scenarios,
                             seed=args.seed, steps=model.default_steps,
                             sampler=model.default_sampler,
                             guidance_scale=model.default_guidance).numpy()[:, 0]
        images = [t0, test.images[row, 1], *generated[:2], test.images[row, 2], *generated[2:]]
        masks = [segmenter.segment(Scan(array=np.ascontiguousarray(im, np.float32),
                                        affine=affine)).array > 0 for im in images]
        for col, (image, mask) in enumerate(zip(images, masks)):
            ax = axes[row, col]
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            if mask.any():
                ax.contour(mask, levels=[0.5], colors="red", linewidths=0.8)
            synthetic = "pCR" in columns[col]
            title = columns[col] + (" *" if synthetic else "")
            ax.set_title(f"{title}\n{format_size(float(mask.sum() * pixel_mm2), 'mm²')}",
                         fontsize=8)
            ax.axis("off")
        axes[row, 0].text(-0.08, 0.5, f"{pid}\n(real: {'pCR' if clinical['pCR'] else 'non-pCR'})",
                          transform=axes[row, 0].transAxes, ha="right", va="center",
                          fontsize=8)
    fig.suptitle(f"* SYNTHETIC (generated) - model {model.model_hash[:12]}, seed {args.seed}, "
                 f"{model.default_steps} {model.default_sampler} steps, guidance "
                 f"{model.default_guidance:g}; red: nnU-Net tumour contour", fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
