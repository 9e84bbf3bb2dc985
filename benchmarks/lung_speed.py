"""Speed and memory of the lung model (ImmunoDiff) on this machine.

    OMP_NUM_THREADS=2 python benchmarks/lung_speed.py [--model DIR] [--long-steps 1000]

- a two-scenario comparison (PD-L1 0 % and 50 %), one sample each, at the model's default
  sampler and steps (the issue's target: at most 3 s on 2 CPU cores), median of 3 runs after
  a warm-up;
- the same comparison with ``--samples`` samples per scenario (default 8: the lung
  default), generation only, and as the whole what-if loop (`WhatIfSession.run`: heads,
  generation, segmentation of every sample);
- the same comparison with the paper-style long sampler (DDPM, ``--long-steps``);
- peak resident memory of load + one default comparison + the several-sample what-if loop,
  in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def case():
    from napari_nacsim.families import get_family

    family = get_family("lung")
    rendering = family.make_phantom(0, 0).render()
    inputs = family.model_inputs({"pre": rendering.visits()["pre"]})["pre"]
    clinical = {k: v for k, v in rendering.clinical.items()
                if k not in ("responder", "survival_months", "death")}
    return family, inputs, clinical


def compare(model, family, inputs, clinical, samples: int = 1, **kw):
    """Seconds to generate both scenarios, ``samples`` samples each (seeds 0..samples-1,
    one batch per sample: what the what-if session runs)."""
    from napari_nacsim.engine import simulate

    scenarios = [{"time": "post", **clinical, "PD_L1": v} for v in (0.0, 50.0)]
    t = time.perf_counter()
    for seed in range(samples):
        simulate(model, inputs["image"], scenarios, seed=seed,
                 context=family.model_context(inputs), **kw)
    return time.perf_counter() - t


def session_run(model, family, inputs, clinical, samples: int):
    """Seconds of the whole what-if loop a user waits for (`WhatIfSession.run`): baseline
    segmentation, the heads' P(response) per scenario, generation of every sample,
    segmentation of every sample; the session's own breakdown too."""
    from napari_nacsim.engine import WhatIfRequest, WhatIfSession

    session = WhatIfSession(model, family.load_segmenter(device="cpu"))
    request = WhatIfRequest(clinical=clinical, target="post", compare="PD_L1",
                            compare_values=(0.0, 50.0), samples=samples)
    t = time.perf_counter()
    result = session.run(inputs["image"], request, context=family.model_context(inputs))
    return time.perf_counter() - t, result.seconds


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=None)
    p.add_argument("--long-steps", type=int, default=1000)
    p.add_argument("--memory-only", action="store_true")
    p.add_argument("--samples", type=int, default=8,
                   help="samples per scenario of the several-sample measurements")
    args = p.parse_args()
    import torch

    from napari_nacsim.engine import load_model

    family, inputs, clinical = case()
    if args.memory_only:
        model = load_model(args.model, family="lung", device="cpu")
        compare(model, family, inputs, clinical)
        session_run(model, family, inputs, clinical, args.samples)
        print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                          / 1024}))
        return 0
    model = load_model(args.model, family="lung", device="cpu")
    compare(model, family, inputs, clinical)  # warm-up
    default = [compare(model, family, inputs, clinical) for _ in range(3)]
    several = compare(model, family, inputs, clinical, samples=args.samples)
    loop, breakdown = session_run(model, family, inputs, clinical, args.samples)
    long = compare(model, family, inputs, clinical, sampler="ddpm", steps=args.long_steps)
    cmd = [sys.executable, __file__, "--memory-only", "--samples", str(args.samples)] + \
        (["--model", args.model] if args.model else [])
    mem = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True)
                     .stdout.strip().splitlines()[-1])
    print(json.dumps({"threads": torch.get_num_threads(), "model_hash": model.model_hash[:12],
                      "default": {"sampler": model.default_sampler,
                                  "steps": model.default_steps,
                                  "seconds_median": round(statistics.median(default), 3),
                                  "seconds": [round(s, 3) for s in default]},
                      f"generation_{args.samples}_samples": {"seconds": round(several, 2)},
                      f"whatif_loop_{args.samples}_samples": {"seconds": round(loop, 2),
                                                             "breakdown": breakdown},
                      "long": {"sampler": "ddpm", "steps": args.long_steps,
                               "seconds": round(long, 2)},
                      **mem}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
