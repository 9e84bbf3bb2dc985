#!/usr/bin/env python
"""The what-if loop a user waits for, timed in two source trees side by side (issue 20:
"nothing here may slow the what-if loop").

    git worktree add /tmp/before f7fad29^          # the tree before the first issue-20 commit
    python benchmarks/whatif_before_after.py --before /tmp/before --after . \\
        --out docs/benchmarks/whatif-before-after.json

For each family, in a fresh process per tree (``PYTHONPATH`` puts that tree's ``src``
first; OMP_NUM_THREADS=2): the bundled model and segmenter loaded once, then
``WhatIfSession.run`` on phantom 0 of cohort seed 0 at the model's defaults — breast: the
pCR / non-pCR pair at T2; lung: PD-L1 0 % against 50 %, one sample each — one warm-up run,
then the median of ``--repeats`` runs (a new session each, so no cached result is reused).
The trees run alternately, first one then the other first, so a machine that slows down
slows both.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

# What one process runs: prints one JSON line of seconds. Only the public API that both
# trees share (families, engine), so the same text measures either tree.
PROBE = r"""
import json, sys, time
from napari_nacsim.engine import WhatIfRequest, WhatIfSession, load_model
from napari_nacsim.families import get_family

family_name, repeats = sys.argv[1], int(sys.argv[2])
family = get_family(family_name)
rendering = family.make_phantom(0, 0).render()
if hasattr(rendering, "visits"):
    visits = rendering.visits()
else:  # the tree before issue 20: the family floor turned a rendering into visits
    from napari_nacsim.families.base import rendering_visits
    visits = rendering_visits(rendering)
first = family.schema.timepoint_names[0]
inputs = family.model_inputs({first: visits[first]})[first]
clinical = {k: v for k, v in rendering.clinical.items()
            if k not in ("responder", "survival_months", "death", "pCR")}
if family_name == "breast":
    request = WhatIfRequest(clinical={**clinical, "pCR": True}, target="T2", compare="pCR")
else:
    request = WhatIfRequest(clinical=clinical, target="post", compare="PD_L1",
                            compare_values=(0.0, 50.0), samples=1)
model = load_model(family=family_name, device="cpu")
segmenter = family.load_segmenter(device="cpu")
times = []
for i in range(repeats + 1):
    session = WhatIfSession(model, segmenter)
    t = time.perf_counter()
    session.run(inputs["image"], request, context=family.model_context(inputs))
    if i:
        times.append(time.perf_counter() - t)
print("RESULT " + json.dumps(times))
"""


def run_tree(tree: Path, family: str, repeats: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str((tree / "src").resolve()), "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", PROBE, family, str(repeats)], env=env,
                         cwd=tree, capture_output=True, text=True, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"whatif_before_after: {tree} ({family}) failed: {tail}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", type=Path, required=True)
    p.add_argument("--after", type=Path, default=Path("."))
    p.add_argument("--families", default="breast,lung")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2,
                   help="processes per tree and family, alternating the trees")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    result = {"command": "python " + " ".join(shlex.quote(a) for a in
                                              ["benchmarks/whatif_before_after.py",
                                               *(argv if argv is not None else sys.argv[1:])]),
              "date": datetime.date.today().isoformat(),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, OMP_NUM_THREADS=2",
              "families": {}}
    for family in [f for f in args.families.split(",") if f]:
        times = {"before": [], "after": []}
        trees = [("before", args.before), ("after", args.after)]
        for r in range(args.rounds):  # the order flips every round: neither tree always first
            for name, tree in (trees if r % 2 == 0 else trees[::-1]):
                times[name] += run_tree(tree, family, args.repeats)
        row = {name: {"median_s": round(statistics.median(t), 3),
                      "runs_s": [round(x, 3) for x in t]} for name, t in times.items()}
        row["after_vs_before_percent"] = round(
            100 * (row["after"]["median_s"] / row["before"]["median_s"] - 1), 1)
        result["families"][family] = row
        print(f"{family}: before {row['before']['median_s']:.2f} s, after "
              f"{row['after']['median_s']:.2f} s ({row['after_vs_before_percent']:+.1f} %)",
              flush=True)
    if args.out:
        from napari_nacsim.core.atomic import write_json_atomic

        write_json_atomic(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
