"""Cohort runs at scale (issue 21; results in docs/cohort-scale.md). Run on an otherwise idle
machine:

    .venv/bin/python benchmarks/cohort_scale.py --review 16 --dry-run 100000 --lung 4 \\
        --json docs/benchmarks/cohort-scale.json

Three parts (``--parts``, default all three; each can be run alone, and ``--json`` merges the
parts measured into the file rather than overwriting the others):

1. **review** (throughput): a ``--review``-patient breast phantom review (one follow-up
   each, ``--steps`` sampler steps) in this process (``--workers 0``), then on an embedded
   loopback `LocalCluster` of 1 and of 2 workers (wall time including the cluster's start and
   each worker's model loading, and without it: from the first to the last finished case).
   Target: 2 workers >= 1.7x the throughput of 1; the per-case cost through Dask <= 5 % over
   the in-process one. The CSVs of the three runs are compared byte for byte.
2. **dry-run**: a ``--dry-run``-row manifest (every row the same phantom patient's files),
   scheduled through the runner's bounded window with a task that does nothing (no models,
   no outputs): time to schedule (and within it the start: the run's worker plugin, the
   first case), tasks per second overall and after the first case, and the peak memory of
   this process, which holds the client and the LocalCluster's scheduler, and of the
   workers.
3. **lung** (projection): the lung review's per-patient cost measured here (``--lung``
   phantom patients, the model's default steps), projected to 1,000 and 10,000 patients on
   N workers with the parallel efficiency measured in 1 (in this call, or read from the
   ``--json`` file; 1.0 when neither has it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

from napari_nacsim.core.atomic import write_json_atomic  # noqa: E402
from napari_nacsim.engine.cohort_runner import DONE, JobSpec, ReviewJob, run_cases  # noqa: E402
from napari_nacsim.datasets.phantom_cohort import write_phantom_cohort  # noqa: E402


def phantom_manifest(family: str, n: int, folder: Path, keep=("T0", "T1")) -> Path:
    """A phantom cohort whose patients keep only the ``keep`` visits."""
    manifest = write_phantom_cohort(family, n, 0, folder, jobs=1, overwrite=True)
    payload = json.loads(manifest.read_text())
    for patient in payload["patients"]:
        for section in ("scans", "masks"):
            patient[section] = {tp: v for tp, v in patient[section].items() if tp in keep}
    manifest.write_text(json.dumps(payload, indent=1))
    return manifest


def timed_run(job, out: Path, **where) -> dict:
    first = {}

    def progress(state):
        first.setdefault("t", time.perf_counter())

    start = time.perf_counter()
    summary = run_cases(job, out, progress=progress, **where)
    wall = time.perf_counter() - start
    per_case = [r["seconds"] for r in summary.records]
    return {"wall_s": round(wall, 2), "cases": len(per_case),
            "sum_case_s": round(sum(per_case), 2),
            "mean_case_s": round(sum(per_case) / len(per_case), 3),
            "first_to_last_s": round(time.perf_counter() - first.get("t", start), 2),
            "csv": summary.csv.read_bytes()}


def review_throughput(n: int, steps: int, work: Path) -> dict:
    manifest = phantom_manifest("breast", n, work / "breast")
    results = {}
    for name, where in (("in_process", {"workers": 0}), ("dask_1", {"workers": 1}),
                        ("dask_2", {"workers": 2})):
        print(f"review of {n} patients: {name}...", file=sys.stderr, flush=True)
        results[name] = timed_run(ReviewJob(manifest, steps=steps), work / name, **where)
    same = len({r.pop("csv") for r in results.values()}) == 1
    one, two, here = results["dask_1"], results["dask_2"], results["in_process"]
    return {"patients": n, "steps": steps, "runs": results, "csv_identical": same,
            "speedup_2_vs_1_wall": round(one["wall_s"] / two["wall_s"], 2),
            "speedup_2_vs_1_after_start": round(
                one["first_to_last_s"] / max(two["first_to_last_s"], 1e-9), 2),
            "per_case_overhead_percent": round(
                100.0 * (one["mean_case_s"] - here["mean_case_s"]) / here["mean_case_s"], 1),
            "per_case_overhead_wall_percent": round(
                100.0 * (one["wall_s"] - here["wall_s"]) / here["wall_s"], 1)}


@dataclasses.dataclass(frozen=True)
class NoopSpec(JobSpec):
    """Scheduling only: no models, no outputs (the family and model folder are the job's, for
    the run record the runner writes)."""

    family: str = "breast"
    model_dir: str = ""
    kind = "dry-run"


def noop(spec, case, out):
    return {"id": case.id, "status": DONE, "reason": ""}


class RssSampler:
    """Peak resident memory of this process while the ``with`` block runs (psutil, every
    0.2 s in a thread)."""

    def __enter__(self):
        import threading

        import psutil

        self._process, self._stop = psutil.Process(), threading.Event()
        self.before = self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)
        return False


def dry_run(rows: int, workers: int, work: Path, window: Optional[int] = None) -> dict:
    from distributed import Client, LocalCluster

    source = phantom_manifest("breast", 1, work / "one")
    payload = json.loads(source.read_text())
    patient = payload["patients"][0]
    payload["patients"] = [{**patient, "id": f"P{i:06d}"} for i in range(rows)]
    big = source.with_name("big.json")
    big.write_text(json.dumps(payload))
    del payload
    # The client's and the (in-process) scheduler's memory from reading the manifest to the
    # end of this part: the process's lifetime peak (ru_maxrss) also holds what an earlier
    # part loaded (the review's models).
    rss = RssSampler().__enter__()
    start = time.perf_counter()
    job = ReviewJob(big, steps=1)
    job.spec = NoopSpec(family=job.spec.family, model_dir=job.spec.model_dir)
    load_s = time.perf_counter() - start
    first = {}

    def progress(state):
        first.setdefault("t", time.perf_counter())

    print(f"dry run of {rows} rows on {workers} workers...", file=sys.stderr, flush=True)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address=None) as cluster, \
            Client(cluster) as client:
        start = time.perf_counter()
        run_cases(job, work / "dry", client=client, execute=noop, collect=False,
                  progress=progress, window=window)
        end = time.perf_counter()
        worker_rss = client.run(lambda: __import__("psutil").Process().memory_info().rss)
    rss.__exit__(None, None, None)
    schedule_s, first_s = end - start, first.get("t", end) - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"rows": rows, "workers": workers, "window": window or "default",
            "load_manifest_and_plan_s": round(load_s, 2),
            "schedule_s": round(schedule_s, 2),
            "first_case_s": round(first_s, 2),
            "tasks_per_s": round(rows / schedule_s, 1),
            "tasks_per_s_after_first": round((rows - 1) / max(schedule_s - first_s, 1e-9), 1),
            "rss_before_mib": round(rss.before / 2**20),
            "peak_rss_client_and_scheduler_mib": round(rss.peak / 2**20),
            "peak_rss_client_and_scheduler_growth_mib": round((rss.peak - rss.before) / 2**20),
            "process_lifetime_peak_rss_mib": round(peak / 2**20),
            "worker_rss_mib": sorted(round(v / 2**20) for v in worker_rss.values())}


def lung_projection(n: int, work: Path, efficiency: float, source: str) -> dict:
    manifest = phantom_manifest("lung", n, work / "lung", keep=("pre", "post"))
    print(f"lung review of {n} patients in process...", file=sys.stderr, flush=True)
    run = timed_run(ReviewJob(manifest), work / "lung_run", workers=0)
    run.pop("csv")
    per_patient = run["mean_case_s"]
    projection = {}
    for patients in (1000, 10000):
        for workers in (1, 2, 8, 32, 128):
            hours = patients * per_patient / (workers * (efficiency if workers > 1 else 1.0))
            projection[f"{patients}_patients_{workers}_workers_h"] = round(hours / 3600, 2)
    return {"patients_measured": n, "per_patient_s": per_patient, "run": run,
            "parallel_efficiency": round(efficiency, 2), "efficiency_from": source,
            "projection": projection}


PARTS = ("review", "dry-run", "lung")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"which parts to run, comma-separated ({', '.join(PARTS)})")
    parser.add_argument("--review", type=int, default=16, help="patients of the review (0: skip)")
    parser.add_argument("--steps", type=int, default=4, help="sampler steps of the review")
    parser.add_argument("--dry-run", type=int, default=100_000, help="manifest rows (0: skip)")
    parser.add_argument("--dry-workers", type=int, default=2)
    parser.add_argument("--dry-window", type=int, default=None,
                        help="tasks in flight in the dry run (default: the runner's)")
    parser.add_argument("--lung", type=int, default=4, help="lung patients measured (0: skip)")
    parser.add_argument("--json", type=Path, default=None,
                        help="merge the parts measured into this file (the others are kept)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        parser.error(f"--parts: {unknown[0] if unknown else args.parts!r} is not one of "
                     f"{', '.join(PARTS)}")
    previous = _read_previous(args.json)
    command = " ".join(["benchmarks/cohort_scale.py", *sys.argv[1:]])
    measured = time.strftime("%Y-%m-%d %H:%M:%S")
    results: dict = {}

    def record(name: str, part: dict) -> None:
        """Print a part as soon as it is measured and merge it into --json (a later part that
        fails keeps this one)."""
        results[name] = {**part, "measured": measured, "command": command,
                         "cpu_count": os.cpu_count()}
        print(json.dumps({name: results[name]}), flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(args.json, {**previous, **results})

    work = Path(tempfile.mkdtemp(prefix="nacsim-cohort-scale-"))
    try:
        speedup = (previous.get("review") or {}).get("speedup_2_vs_1_after_start")
        source = f"the review in {args.json} ({previous['review'].get('measured')})" \
            if speedup else "none measured: assumed 1.0"
        if "review" in parts and args.review:
            record("review", review_throughput(args.review, args.steps, work))
            speedup, source = results["review"]["speedup_2_vs_1_after_start"], "this run"
        efficiency = speedup / 2 if speedup else 1.0
        if "dry-run" in parts and args.dry_run:
            record("dry_run", dry_run(args.dry_run, args.dry_workers, work, args.dry_window))
        if "lung" in parts and args.lung:
            record("lung", lung_projection(args.lung, work, efficiency, source))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _read_previous(path: Optional[Path]) -> dict:
    """The parts measured before (kept when this call measures others)."""
    if path is None or not path.exists():
        return {}
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        sys.exit(f"cohort_scale: {path}: is not JSON ({err}); move it away or fix it")
    if not isinstance(previous, dict):
        sys.exit(f"cohort_scale: {path}: is not an object of parts")
    return {k: v for k, v in previous.items() if k in ("review", "dry_run", "lung")}


if __name__ == "__main__":
    sys.exit(main())
