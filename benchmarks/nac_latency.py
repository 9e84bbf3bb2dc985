"""Latency and peak memory of the bundled breast NAC model on this machine.

    python benchmarks/nac_latency.py --out docs/benchmarks/nac_latency.json

One patient's pCR + non-pCR pair (T2, one batch) at the model's native resolution, for each
sampler setting; median of ``--repeats`` runs after one warm-up. Peak memory is the process's
maximum resident set size after loading + generating (``resource.getrusage``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

SETTINGS = [("dpmpp", 20), ("dpmpp", 10), ("unipc", 10), ("unipc", 20), ("ddim", 200)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance (default: the model's; > 1 doubles the batch)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    from napari_nacsim.engine import load_model
    from napari_nacsim.science.generative.sampling import generate

    model = load_model(args.model, device="cpu")
    load_seconds = time.perf_counter() - t
    guidance = model.default_guidance if args.guidance is None else args.guidance
    size = model.image_size
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.random((1, 1, size, size), dtype=np.float32))
    clinical = {"HR": True, "HER2": False}
    pair = [{"time": "T2", "pCR": True, **clinical}, {"time": "T2", "pCR": False, **clinical}]
    results = []
    for sampler, steps in SETTINGS:
        generate(model.network, image, pair, seed=0, steps=min(steps, 3), sampler=sampler,
                 guidance_scale=guidance)
        times = []
        for _ in range(args.repeats if steps <= 50 else 1):
            t = time.perf_counter()
            generate(model.network, image, pair, seed=0, steps=steps, sampler=sampler,
                     guidance_scale=guidance)
            times.append(time.perf_counter() - t)
        results.append({"sampler": sampler, "steps": steps,
                        "pair_seconds_median": round(statistics.median(times), 3),
                        "runs": [round(x, 3) for x in times]})
        print(f"{sampler:6s} {steps:4d} steps: {statistics.median(times):.3f} s per pair",
              flush=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = {"command": "python benchmarks/nac_latency.py " + " ".join(argv or sys.argv[1:]),
              "model_hash": model.model_hash, "image_size": size, "guidance": guidance,
              "load_seconds": round(load_seconds, 2), "peak_rss_mb": round(peak_mb, 1),
              "rss_before_import_mb": round(rss0 / 1024, 1),
              "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "load_average_1min": os.getloadavg()[0], "machine": platform.platform(),
              "processor": platform.processor(), "results": results}
    print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
