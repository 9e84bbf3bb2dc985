"""Behaviour and speed of two source trees side by side: the demos' generated images (voxel
bytes), sizes and deltas, and the what-if loop's time, for a refactoring that must change
nothing (issue 20).

    git worktree add /tmp/before <commit>
    python benchmarks/refactor_identity.py --before /tmp/before/src --after src \
        --json docs/benchmarks/refactor-identity.json

Each tree runs in its own processes (``PYTHONPATH`` puts its ``src`` first) with its own
bundled models (identical files when the models did not change between the two commits).
Images are compared as arrays (``np.array_equal`` of the voxel data, dtype included); the
files' headers carry provenance (times, versions) that differ by design. Speed: each demo's
wall time (model load, the comparison, measuring, writing), median of ``--repeats`` runs
after one warm-up run; the what-if loop's own time is benchmarks/nac_latency.py and
benchmarks/lung_speed.py, run in each tree the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

def _run(src: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src.resolve()), "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, "-m", "napari_nacsim.cli.main", *args], cwd=cwd,
                          env=env, capture_output=True, text=True)


def _demo(src: Path, family: str, out: Path, fmt_steps: list[str]) -> float:
    t = time.perf_counter()
    done = _run(src, ["demo", "--family", family, "--seed", "0", "--viewer", "no",
                      "--out", str(out), *fmt_steps], Path(tempfile.gettempdir()))
    if done.returncode != 0:
        raise SystemExit(f"demo {family} in {src}: {done.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - t


def _images(folder: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(folder)): np.asanyarray(nib.load(p).dataobj)
            for p in sorted(folder.rglob("*.nii*"))}


def _numbers(folder: Path) -> dict[str, object]:
    """The sizes and deltas the demo reports: every JSON file's numeric leaves, minus
    provenance (times, versions, paths)."""
    skip = {"created", "seconds", "time", "elapsed", "version", "path", "paths", "command",
            "out", "python", "torch", "machine", "platform", "provenance"}

    def leaves(x, key=""):
        if isinstance(x, dict):
            for k, v in x.items():
                if not any(s in k.lower() for s in skip):
                    yield from leaves(v, f"{key}.{k}")
        elif isinstance(x, list):
            for i, v in enumerate(x):
                yield from leaves(v, f"{key}[{i}]")
        elif isinstance(x, (int, float)) and not isinstance(x, bool):
            yield key, x
    found = {}
    for p in sorted(folder.rglob("*.json")):
        found.update({f"{p.relative_to(folder)}{k}": v
                      for k, v in leaves(json.loads(p.read_text()))})
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", type=Path, required=True, help="the old tree's src folder")
    p.add_argument("--after", type=Path, required=True, help="the new tree's src folder")
    p.add_argument("--families", nargs="+", default=["breast", "lung"])
    p.add_argument("--repeats", type=int, default=3, help="timed demo runs per tree")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    report = {"command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
              "machine": f"{platform.platform()}, {os.cpu_count()} CPUs", "families": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            outs, seconds = {}, {}
            for tag, src in (("before", args.before), ("after", args.after)):
                outs[tag] = Path(tmp) / f"{tag}_{family}"
                _demo(src, family, outs[tag], [])  # warm-up (file cache) and the outputs
                seconds[tag] = sorted(_demo(src, family, Path(tmp) / f"t_{tag}_{family}_{r}", [])
                                      for r in range(args.repeats))[args.repeats // 2]
            a, b = _images(outs["before"]), _images(outs["after"])
            same_images = (a.keys() == b.keys() and
                           all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k])
                               for k in a))
            na, nb = _numbers(outs["before"]), _numbers(outs["after"])
            differing = sorted(k for k in na.keys() & nb.keys() if na[k] != nb[k])
            report["families"][family] = {
                "images": len(a), "images_identical": bool(same_images),
                "image_files_only_in_one": sorted(a.keys() ^ b.keys()),
                "numbers_compared": len(na.keys() & nb.keys()),
                "numbers_differing": differing[:20],
                "demo_seconds_median": seconds,
            }
            print(family, json.dumps(report["families"][family]), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    ok = all(f["images_identical"] and not f["numbers_differing"]
             for f in report["families"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
