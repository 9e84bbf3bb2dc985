#!/usr/bin/env python
"""Latency of tumour segmentation with the bundled models, model already loaded.

One breast subtraction MIP (128 x 128) and one lung CT crop (16 x 96 x 96) of a synthetic
patient, each segmented ``--repeats`` times after ``--warmup`` runs, through the public API
(`TumourSegmenter.segment`: nnU-Net preprocessing, sliding-window prediction without
mirroring, resampling back, labels `Scan`). Torch uses ``--threads`` threads (default 2, the
size of the reference machine; nnU-Net's own cap, ``nnUNet_def_n_proc``, is set to the
same). The machine's load is recorded: other processes on a shared machine slow the numbers
down, multi-threaded ones the most.

    python benchmarks/segmentation_latency.py --out docs/segmentation-latency.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

TARGETS_S = {"breast": 0.5, "lung": 2.0}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="segmentation_latency.py", description=__doc__)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seed", type=int, default=7000, help="phantom seed of the test images")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    from napari_nacsim.core.schema import family_schema
    from napari_nacsim.science.segmentation import nnunet_env

    # nnU-Net caps its inference threads at nnUNet_def_n_proc (read when it is imported).
    nnunet_env.configure(override={"nnUNet_def_n_proc": str(args.threads)})
    import torch
    from napari_nacsim.datasets.segmentation_cases import phantom_cases
    from napari_nacsim.families import get_family

    torch.set_num_threads(args.threads)
    results = {}
    for family in ("breast", "lung"):
        baseline = family_schema(family).baseline  # no registration needed
        case = phantom_cases(family, 1, args.seed, timepoints=[baseline], jobs=1)[0]
        t0 = time.perf_counter()
        segmenter = get_family(family).load_segmenter(device="cpu")
        load_s = time.perf_counter() - t0
        for _ in range(args.warmup):
            segmenter.segment(case.image)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            segmenter.segment(case.image)
            times.append(time.perf_counter() - t0)
        times.sort()
        results[family] = {
            "image": f"{case.case_id} {'x'.join(map(str, case.image.shape))} voxels",
            "load_s": round(load_s, 3),
            "median_s": round(statistics.median(times), 4),
            "p90_s": round(times[int(0.9 * (len(times) - 1))], 4),
            "min_s": round(times[0], 4),
            "target_s": TARGETS_S[family],
            "meets_target": statistics.median(times) <= TARGETS_S[family],
        }
    payload = {
        "command": "python benchmarks/segmentation_latency.py " + shlex.join(argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu_cores": nnunet_env.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "device": "cpu", "load_average_1_5_15": list(os.getloadavg()),
                    "torch": torch.__version__},
        "repeats": args.repeats, "warmup": args.warmup, "results": results,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"| model | image | median | p90 | min | target |  (load avg "
          f"{payload['machine']['load_average_1_5_15'][0]:.1f})")
    print("|---|---|---|---|---|---|")
    for family, r in results.items():
        print(f"| {family} | {r['image']} | {r['median_s']:.3f} s | {r['p90_s']:.3f} s | "
              f"{r['min_s']:.3f} s | <= {r['target_s']} s "
              f"{'ok' if r['meets_target'] else 'MISSED'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
