"""Cohort runs on Dask distributed (`engine.cohort_runner`): a 2-worker loopback cluster gives
the single-process answer byte for byte, a worker killed mid-run loses nothing, an interrupted
run resumes and redoes only the unfinished cases, a bad case is recorded and the rest complete.

One 2-worker `LocalCluster` (processes, one thread each, loopback) serves the module: each
worker loads the bundled models once, and the cohorts are tiny (3 patients, one follow-up each,
2 sampler steps)."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import time
from pathlib import Path

import pytest

from cohort_helpers import tiny_cohort
from napari_nacsim.core.errors import InputError
from napari_nacsim.engine.cohort_review import cases_to_csv, review_cohort
from napari_nacsim.engine.cohort_runner import (CASES, DONE, FAILED, RECORD, BatchJob, Case,
                                                DoneRows, JobSpec, ReviewJob, RunProgress,
                                                execute_case, one_torch_thread, run_cases,
                                                safe_name)
from napari_nacsim.engine.jobs import Cancelled, CancelToken

STEPS = 2
PATIENTS = ("BR0001", "BR0002", "BR0003")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return tiny_cohort(tmp_path_factory.mktemp("runner") / "cohort", len(PATIENTS))


@pytest.fixture(scope="module")
def reference(manifest, tmp_path_factory):
    """The single-process run: the runner here, one case after another."""
    out = tmp_path_factory.mktemp("reference")
    summary = run_cases(ReviewJob(manifest, steps=STEPS), out, workers=0)
    return out, summary


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, scheduler_port=0) as cluster, \
            Client(cluster) as connected:
        yield connected


def _images(out: Path) -> dict[str, bytes]:
    """Every finished case's NIfTI files (not those of a staging folder a killed worker left
    behind: nothing reads those)."""
    files = {str(p.relative_to(out)): p for p in sorted((out / CASES).rglob("*.nii.gz"))}
    return {name: p.read_bytes() for name, p in files.items()
            if not any(part.startswith(".") for part in Path(name).parts)}


def _csv_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_single_process_run_is_the_review(manifest, reference, tmp_path):
    """The runner's per-case records give the review's CSV (the inspector's engine), and
    every generated image is on disk, labelled synthetic."""
    out, summary = reference
    assert summary.computed == len(PATIENTS) and not summary.failed
    assert list(summary.ran()) == list(PATIENTS)
    legacy = tmp_path / "legacy.csv"
    with one_torch_thread():  # as every case of a run
        cases_to_csv(list(review_cohort(manifest, steps=STEPS)), legacy)
    assert summary.csv.read_bytes() == legacy.read_bytes()
    images = _images(out)
    assert {name.split("/")[1] for name in images} == set(PATIENTS)
    assert f"{CASES}/BR0001/T1_generated.nii.gz" in images
    sidecar = json.loads((out / CASES / "BR0001" / "T1_generated.json").read_text())
    assert sidecar["synthetic"] is True and sidecar["provenance"]["steps"] == STEPS


def test_two_workers_give_the_single_process_answer_byte_for_byte(manifest, reference,
                                                                  client, tmp_path):
    ref_out, ref = reference
    summary = run_cases(ReviewJob(manifest, steps=STEPS), tmp_path, client=client)
    assert list(summary.ran()) == list(PATIENTS) and not summary.failed
    assert summary.csv.read_bytes() == ref.csv.read_bytes()
    assert _images(tmp_path) == _images(ref_out)
    hosts = {r["host"] for r in summary.records}
    assert all(str(os.getpid()) != h.rsplit(":", 1)[1] for h in hosts)  # ran on the workers


def test_a_worker_killed_mid_run_loses_nothing(manifest, reference, client, tmp_path):
    killed = []

    def kill_a_busy_worker(state):
        if killed:
            return
        busy = {w: keys for w, keys in client.processing().items() if keys}
        if busy:
            worker = sorted(busy)[0]
            pid = client.run(os.getpid, workers=[worker])[worker]
            os.kill(pid, signal.SIGKILL)
            killed.append((worker, list(busy[worker])))

    summary = run_cases(ReviewJob(manifest, steps=STEPS), tmp_path, client=client,
                        progress=kill_a_busy_worker)
    assert killed, "no case was in flight to kill a worker under"
    assert [r["status"] for r in summary.records] == [DONE] * len(PATIENTS)
    assert summary.csv.read_bytes() == reference[1].csv.read_bytes()
    assert _images(tmp_path) == _images(reference[0])
    _wait_for_workers(client, 2)


def _wait_for_workers(client, n: int, timeout: float = 60.0) -> None:
    """The nanny restarts a killed worker; later tests want both."""
    deadline = time.monotonic() + timeout
    while len(client.nthreads()) < n and time.monotonic() < deadline:
        time.sleep(0.2)


def test_an_interrupted_run_resumes_and_redoes_only_the_unfinished(manifest, reference,
                                                                   client, tmp_path):
    job = ReviewJob(manifest, steps=STEPS)
    token = CancelToken()
    with pytest.raises(Cancelled):  # interrupted after the first case
        run_cases(job, tmp_path, workers=0, progress=lambda state: token.cancel(),
                  cancel=token)
    finished = [p.parent.name for p in (tmp_path / CASES).glob(f"*/{RECORD}")]
    assert finished == ["BR0001"]
    # what a crash leaves: a half-written case folder, and a record of another request
    (tmp_path / CASES / ".BR0002.partial-x").mkdir()
    (tmp_path / CASES / ".BR0002.partial-x" / RECORD).write_text("{}")
    stale = json.loads((tmp_path / CASES / "BR0001" / RECORD).read_text())
    (tmp_path / CASES / "BR0003").mkdir()
    (tmp_path / CASES / "BR0003" / RECORD).write_text(json.dumps(
        {**stale, "id": "BR0003", "request_hash": "another request"}))

    with pytest.raises(InputError, match="--resume"):  # never over a run by accident
        run_cases(job, tmp_path, workers=0)
    summary = run_cases(job, tmp_path, client=client, resume=True)
    assert list(summary.ran()) == ["BR0002", "BR0003"] and summary.reused == 1
    assert summary.csv.read_bytes() == reference[1].csv.read_bytes()
    assert _images(tmp_path) == _images(reference[0])
    again = run_cases(job, tmp_path, client=client, resume=True)  # nothing left to do
    assert again.computed == 0 and not list(again.ran())
    assert again.csv.read_bytes() == reference[1].csv.read_bytes()


def test_a_bad_case_is_recorded_and_the_rest_complete(manifest, reference, client, tmp_path):
    payload = json.loads(manifest.read_text())
    bad = manifest.parent / "BR0002" / "T1_broken.nii.gz"
    bad.write_bytes(b"not a NIfTI file")
    payload["patients"][1]["scans"]["T1"]["pre"] = str(bad.relative_to(manifest.parent))
    broken = manifest.with_name("broken.json")
    broken.write_text(json.dumps(payload))

    summary = run_cases(ReviewJob(broken, steps=STEPS), tmp_path / "run", client=client)
    assert [r["status"] for r in summary.records] == [DONE, FAILED, DONE]
    ((case, reason),) = summary.failed
    assert case == "BR0002" and "T1_broken.nii.gz" in reason and "\n" not in reason
    good = [line for line in _csv_lines(reference[1].csv) if not line.startswith("BR0002,")]
    assert _csv_lines(summary.csv) == good
    with open(tmp_path / "run" / "failed.csv", newline="") as fh:
        assert list(csv.reader(fh)) == [["case", "reason"], ["BR0002", reason]]


@dataclasses.dataclass(frozen=True)
class _Outcomes(JobSpec):
    """A spec for the submission loop alone: which cases fail (recorded by the case) and
    which raise (outside the case); reaches the workers only through the run's plugin."""

    fail: tuple = ()
    crash: tuple = ()


def _outcome(spec, case, out):
    if case.payload in spec.crash:
        raise RuntimeError(f"case {case.id} crashed")
    return {"id": case.id, "status": FAILED if case.payload in spec.fail else DONE,
            "reason": "bad input" if case.payload in spec.fail else ""}


def test_the_window_bounds_the_cases_in_flight_and_reports_each_once(client, tmp_path):
    """A 100,000-row manifest never sits in the scheduler: at most ``window`` cases are drawn
    ahead of those reported; every case is reported once with its outcome (a failed case,
    a task that raised: recorded by the client)."""
    from napari_nacsim.engine.cohort_dask import run_on_dask

    n, window, drawn, reported, ahead = 60, 6, [], [], []

    def pending():
        for i in range(n):
            ahead.append(len(drawn) - len(reported))   # before drawing one more
            drawn.append(i)
            yield Case(f"c{i:02d}", i, "hash", i)

    run_on_dask(client, _Outcomes(fail=(3, 41), crash=(7,)), pending(), str(tmp_path),
                RunProgress(total=n), lambda case, status: reported.append((case, status)),
                window=window, execute=_outcome)
    assert max(ahead) == window - 1  # the window is filled, never overfilled
    assert sorted(reported) == [(f"c{i:02d}", FAILED if i in (3, 7, 41) else DONE)
                                for i in range(n)]
    crashed = json.loads((tmp_path / CASES / "c07" / RECORD).read_text())
    assert crashed["status"] == FAILED and crashed["reason"] == "RuntimeError: case c07 crashed"
    assert not (tmp_path / CASES / "c03").exists()  # a failed case is the case's to record


@dataclasses.dataclass(frozen=True)
class _OneRow(JobSpec):
    """A review case without a model: one row per patient, its number the patient's (the
    family and model folder are the job's, for the run's record)."""

    family: str = "breast"
    model_dir: str = ""

    def run(self, case, folder, *, cancel=None):
        number = int(case.payload.id[1:])
        return {"status": DONE, "unit": "mm²",
                "rows": [{"patient": case.payload.id, "time": "T1", "ssim": number / 100}]}


def _wide_manifest(folder: Path, n: int) -> Path:
    """``n`` patients sharing one set of (empty) files: the run reads none of them."""
    scans = {tp: {ch: f"files/{tp}_{ch}.nii.gz" for ch in ("pre", "post")}
             for tp in ("T0", "T1")}
    for entries in scans.values():
        for rel in entries.values():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).touch()
    manifest = folder / "wide.json"
    manifest.write_text(json.dumps({
        "format": "nacsim-cohort", "version": 1, "family": "breast",
        "patients": [{"id": f"P{i:03d}", "clinical": {"pCR": i % 2 == 0, "HR": False,
                                                      "HER2": True}, "scans": scans}
                     for i in range(n)]}))
    return manifest


@pytest.fixture
def live(monkeypatch):
    """Counts of the patients parsed from a manifest and of the case records read back
    that are still alive (weak references: what the run holds, not what it has seen)."""
    import weakref

    from napari_nacsim.core import cohort as cohort_module
    from napari_nacsim.engine import cohort_runner

    class Record(dict):  # a dict that can be referenced weakly
        pass

    patients, records, counts = [], [], {"records": []}
    parse, read = cohort_module._parse_patient, cohort_runner.read_record

    def alive(refs: list) -> int:
        return sum(ref() is not None for ref in refs)

    def parse_patient(*args, **kwargs):
        patient = parse(*args, **kwargs)
        patients.append(weakref.ref(patient))
        return patient

    def read_record(out, case):
        record = read(out, case)
        if record is not None:
            record = Record(record)
            records.append(weakref.ref(record))
            counts["records"].append(alive(records))
        return record

    monkeypatch.setattr(cohort_module, "_parse_patient", parse_patient)
    monkeypatch.setattr(cohort_runner, "read_record", read_record)
    counts["patients"] = lambda: alive(patients)
    return counts


def _one_row_job(manifest: Path) -> ReviewJob:
    job = ReviewJob(manifest, steps=1)
    job.spec = _OneRow(model_dir=job.spec.model_dir)
    return job


def test_a_run_holds_the_case_in_flight_not_the_manifest_nor_the_records(tmp_path, live):
    """In this process: while a case runs, the one patient of that case is alive (not the
    manifest's 40), and the CSV is written from the records on disk, a few alive at a time
    (not a list of every case's): what a 100,000-patient run holds does not grow with it."""
    n = 40
    job = _one_row_job(_wide_manifest(tmp_path / "cohort", n))
    alive = []

    def execute(spec, case, out):
        alive.append(live["patients"]())
        return execute_case(spec, case, out)

    summary = run_cases(job, tmp_path / "run", workers=0, execute=execute)
    assert len(alive) == n and max(alive) == 1
    assert live["records"] and max(live["records"]) <= 3
    lines = _csv_lines(summary.csv)
    assert len(lines) == n + 1 and lines[4].startswith("P003,T1,") and ",0.03," in lines[4]

    # the table is the records on disk: one changed there (same request) is what it shows
    record_path = tmp_path / "run" / CASES / "P003" / RECORD
    record = json.loads(record_path.read_text())
    record["rows"][0]["ssim"] = 0.625
    record_path.write_text(json.dumps(record))
    again = run_cases(job, tmp_path / "run", workers=0, execute=execute, resume=True)
    assert again.computed == 0 and again.reused == n and len(alive) == n
    assert ",0.625," in _csv_lines(again.csv)[4]
    assert [r["ssim"] for r in DoneRows(again.records)][3] == 0.625  # read again, not kept


def test_on_dask_the_client_holds_the_window_and_the_csv_is_the_same(client, tmp_path,
                                                                       live):
    """On 2 workers with 4 cases in flight: the client holds the window's patients, not the
    manifest's 40, and the CSV is the in-process run's, byte for byte, whatever the order
    in which the cases finished."""
    n, window = 40, 4
    manifest = _wide_manifest(tmp_path / "cohort", n)
    alive = []
    here = run_cases(_one_row_job(manifest), tmp_path / "here", workers=0)
    there = run_cases(_one_row_job(manifest), tmp_path / "there", client=client,
                      window=window, progress=lambda state: alive.append(live["patients"]()))
    assert len(alive) == n and max(alive) <= window
    assert there.csv.read_bytes() == here.csv.read_bytes()


def test_batch_command_on_a_phantom_cohort_through_a_scheduler(client, tmp_path, capsys):
    from napari_nacsim.cli.main import main

    out = tmp_path / "batch"
    argv = ["batch", "--phantoms", "breast", "--patients", "2", "--scenario", "pCR=yes",
            "--steps", str(STEPS), "--no-figure", "--out", str(out), "--quiet",
            "--scheduler", client.scheduler.address]
    assert main(argv) == 0
    assert "wrote 2 SYNTHETIC what-if runs" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "batch.csv").open()))
    assert [(r["patient"], r["time"]) for r in rows] == [
        ("BR0001", "T1"), ("BR0001", "T2"), ("BR0002", "T1"), ("BR0002", "T2")]
    assert all(r["scenario"] == "pCR=yes" and r["steps"] == str(STEPS) for r in rows)
    folder = out / CASES / "BR0001" / safe_name("pCR=yes")
    report = json.loads((folder / "report.json").read_text())
    assert report["synthetic"] is True and report["patient"] == "BR0001"
    assert report["request"]["clinical"]["pCR"] is True
    first = (out / "batch.csv").read_bytes()
    assert main([*argv, "--resume"]) == 0  # nothing to redo: the same table
    assert "(2 from before)" in capsys.readouterr().out
    assert (out / "batch.csv").read_bytes() == first


def test_bad_run_options_are_one_line_errors(manifest, tmp_path, capfd):
    from napari_nacsim.cli.main import main

    base = ["review", str(manifest), "--csv", str(tmp_path / "r.csv")]
    for extra, words in ((["--queue", "short"], "--queue: is a job option"),
                         (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "choose one"),
                         (["--retry-failed"], "goes with --resume"),
                         (["--workers", "-1"], "must be 0 or more")):
        assert main([*base, *extra]) == 2
        err = capfd.readouterr().err.strip()
        assert err.startswith("nacsim: error: ") and words in err and "\n" not in err
    with pytest.raises(InputError, match="scenario variable"):
        BatchJob(manifest, ["colour=blue"])
